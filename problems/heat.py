"""Heat (diffusion) problems on x in [-1, 1], t in [0, 1], with u(x, 0) = sin(pi x) and u(+-1, t) = 0."""

from __future__ import annotations

import math

import torch

from kanpde.constraints import HardConstraint
from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet

PI = math.pi


def initial_value(x: torch.Tensor) -> torch.Tensor:
    """u(x, 0) = sin(pi x) at points (N, 2) ordered (x, t): (N,)."""
    return torch.sin(PI * x[:, 0])


def distance(x: torch.Tensor) -> torch.Tensor:
    """t (1 - x^2): zero on t = 0 and x = +-1, positive inside; (N,)."""
    return x[:, 1] * (1 - x[:, 0] ** 2)


class _SineHeat(Problem):
    """Shared declaration: the domain, the sine initial condition and zero Dirichlet boundaries.

    ``hard=True`` imposes both exactly through u = sin(pi x) + t (1 - x^2) N(x, t); otherwise they are
    weighted mean-square losses named ``initial`` and ``boundary``.
    """

    variables = ("x", "t")
    outputs = ("u",)

    def __init__(self, hard: bool, initial_weight: float, boundary_weight: float, residual_weight: float):
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be true or false, got {hard!r}")
        self.domain = Box.from_bounds(x=(-1.0, 1.0), t=(0.0, 1.0))
        self.hard = hard
        self.initial_weight = check_weight(initial_weight, "initial_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.hard_constraint = HardConstraint(initial_value, distance) if hard else None

    def conditions(self) -> dict[str, Condition]:
        if self.hard:  # satisfied exactly by the ansatz
            return {}
        return {
            "initial": dirichlet(initial_value, on="t=0", weight=self.initial_weight),
            "boundary": dirichlet(0.0, on=["x=-1", "x=1"], weight=self.boundary_weight),
        }


class ForcedHeat(_SineHeat):
    r"""Forced diffusion, DeepXDE's ``diffusion_1d`` example and jaxKAN's heat benchmark.

    .. math::
        u_t = u_{xx} - e^{-t} \left(\sin(\pi x) - \pi^2 \sin(\pi x)\right),
        \quad x \in [-1, 1],\ t \in [0, 1],

        u(x, 0) = \sin(\pi x), \qquad u(-1, t) = u(1, t) = 0,

    exact solution u = e^{-t} sin(pi x).

    Args:
        hard: impose the initial and boundary conditions exactly (u = sin(pi x) + t (1 - x^2) N).
        initial_weight, boundary_weight: weights of the condition losses when ``hard`` is false (100
            measured best of 1, 10 and 100).
        residual_weight: weight of the PDE residual's mean square.
    """

    description = "forced heat: u_t = u_xx - e^-t (1 - pi^2) sin(pi x), u = e^-t sin(pi x) (DeepXDE, jaxKAN)"

    def __init__(self, hard: bool = True, initial_weight: float = 100.0, boundary_weight: float = 100.0,
                 residual_weight: float = 1.0):
        super().__init__(hard, initial_weight, boundary_weight, residual_weight)

    def residual(self, x, d):
        forcing = torch.exp(-x[:, 1]) * (1 - PI**2) * torch.sin(PI * x[:, 0])
        return d["u_t"] - d["u_xx"] + forcing

    def exact(self, x):
        return (torch.exp(-x[:, 1]) * torch.sin(PI * x[:, 0])).unsqueeze(-1)


class Heat(_SineHeat):
    r"""The plain heat equation with diffusivity alpha.

    .. math::
        u_t = \alpha u_{xx}, \quad x \in [-1, 1],\ t \in [0, 1], \qquad
        u(x, 0) = \sin(\pi x), \quad u(-1, t) = u(1, t) = 0,

    exact solution u = exp(-alpha pi^2 t) sin(pi x) (separation of variables).

    Args:
        alpha: diffusivity, > 0 (alpha <= 0 is ill-posed backwards diffusion or no diffusion).
        hard, initial_weight, boundary_weight, residual_weight: as for :class:`ForcedHeat`.
    """

    description = "heat equation u_t = alpha u_xx, u = exp(-alpha pi^2 t) sin(pi x)"

    def __init__(self, alpha: float = 0.1, hard: bool = True, initial_weight: float = 100.0,
                 boundary_weight: float = 100.0, residual_weight: float = 1.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"the diffusivity alpha must be a finite number > 0, got {alpha!r}; "
                             "set e.g. problem.alpha=0.1")
        self.alpha = float(alpha)
        super().__init__(hard, initial_weight, boundary_weight, residual_weight)

    def residual(self, x, d):
        return d["u_t"] - self.alpha * d["u_xx"]

    def exact(self, x):
        return (torch.exp(-self.alpha * PI**2 * x[:, 1]) * torch.sin(PI * x[:, 0])).unsqueeze(-1)
