"""The Allen-Cahn equation (the PINN benchmark of Raissi et al. 2019 and Wang, Sankaran and Perdikaris 2022)."""

from __future__ import annotations

import math

import torch

from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet, periodic
from kanpde.problems.allen_cahn_reference import DIFFUSION, REACTION, reference_grid


def initial_value(x: torch.Tensor) -> torch.Tensor:
    """u(x, 0) = x^2 cos(pi x) at points (N, 2) ordered (x, t): (N,)."""
    return x[:, 0] ** 2 * torch.cos(math.pi * x[:, 0])


class AllenCahn(Problem):
    r"""Allen-Cahn reaction-diffusion, periodic in x (Raissi et al., J. Comput. Phys. 378, 2019, their
    discrete-time example; Wang, Sankaran and Perdikaris 2022).

    .. math::
        u_t - D u_{xx} + a u^3 - a u = 0, \quad x \in [-1, 1],\ t \in [0, 1], \qquad D = 10^{-4},\ a = 5,

        u(x, 0) = x^2 \cos(\pi x), \qquad u(-1, t) = u(1, t), \quad u_x(-1, t) = u_x(1, t).

    The reaction drives u to the stable states +-1 and leaves sharp interfaces of width ~ sqrt(D / a) ~ 5e-3,
    nearly still once formed; u = 0 is an unstable state, which the solution grazes at x = 0 and x = +-0.5.
    Vanilla PINNs settle into a wrong, metastable solution (rel_l2 near 1; Wang et al. 2022); the fixes are
    training options (growing time windows ``Stage.time_window`` and the residual's time decay
    ``Stage.time_decay``, :mod:`kanpde.windows`), not part of the problem; configs/schedule/allen_cahn.yaml uses
    the decay exp(-5 t), measured in results/allen_cahn/README.md.
    The reference is a Fourier spectral / ETDRK4 solution (:mod:`kanpde.problems.allen_cahn_reference`) on the
    usual 512 x 201 layout.

    Args:
        diffusion, reaction: D and a (the benchmark's 1e-4 and 5 by default).
        initial_weight: weight of the initial condition's mean square (named ``initial``).
        periodic_weight: weight of the periodicity terms (``periodic_value``, ``periodic_d1``...).
        periodic_derivatives: how many x-derivatives the periodic condition matches besides u (0, 1 or 2).
        residual_weight: weight of the PDE residual's mean square.
        reference_points: (n_x, n_t) of the reference grid; reference_modes and reference_step: the spectral
            solver's Fourier modes (a multiple of n_x) and ETDRK4 step.
    """

    variables = ("x", "t")
    outputs = ("u",)
    description = "Allen-Cahn u_t = 1e-4 u_xx + 5 u - 5 u^3, u0 = x^2 cos(pi x), periodic; spectral ETDRK4 reference"

    def __init__(self, diffusion: float = DIFFUSION, reaction: float = REACTION, initial_weight: float = 100.0,
                 periodic_weight: float = 1.0, periodic_derivatives: int = 1, residual_weight: float = 1.0,
                 reference_points: tuple[int, int] = (512, 201), reference_modes: int = 1024,
                 reference_step: float = 1e-3):
        for name, value in (("diffusion", diffusion), ("reaction", reaction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}; the benchmark uses "
                                 f"diffusion={DIFFUSION:g}, reaction={REACTION:g}")
        points = tuple(reference_points)
        if len(points) != 2 or any(isinstance(n, bool) or int(n) != n or n < 2 for n in points):
            raise ValueError(f"reference_points must be two integers >= 2 (n_x, n_t), got {reference_points!r}")
        if isinstance(reference_modes, bool) or int(reference_modes) != reference_modes \
                or reference_modes % int(points[0]):
            raise ValueError(f"reference_modes must be an integer multiple of n_x = {points[0]}, got {reference_modes!r}")
        self.diffusion, self.reaction = float(diffusion), float(reaction)
        self.initial_weight = check_weight(initial_weight, "initial_weight")
        self.periodic_weight = check_weight(periodic_weight, "periodic_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.domain = Box.from_bounds(x=(-1.0, 1.0), t=(0.0, 1.0))
        self._periodic = periodic(self.domain, "x", periodic_derivatives, weight=self.periodic_weight)
        self.reference_points = (int(points[0]), int(points[1]))
        self.reference_modes, self.reference_step = int(reference_modes), float(reference_step)

    def residual(self, x, d):
        u = d["u"]
        return d["u_t"] - self.diffusion * d["u_xx"] + self.reaction * (u**3 - u)

    def conditions(self) -> dict[str, Condition]:
        return {"initial": dirichlet(initial_value, on="t=0", weight=self.initial_weight),
                "periodic": self._periodic}

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectral ETDRK4 values: points (n_x n_t, 2) as (x, t) and values (n_x n_t, 1), float64 copies of a
        cached computation (~1 s)."""
        n_x, n_t = self.reference_points
        points, values = reference_grid(n_x, n_t, self.reference_modes, self.reference_step, self.diffusion,
                                        self.reaction)
        return torch.tensor(points), torch.tensor(values)
