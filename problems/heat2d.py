"""The heat equation in two space dimensions and time: a problem in three variables (x, y, t)."""

from __future__ import annotations

import math

import torch

from kanpde.constraints import HardConstraint
from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet

PI = math.pi


def initial_value(x: torch.Tensor) -> torch.Tensor:
    """u(x, y, 0) = sin(pi x) sin(pi y) at points (N, 3) ordered (x, y, t): (N,)."""
    return torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])


def distance(x: torch.Tensor) -> torch.Tensor:
    """t (1 - x^2)(1 - y^2): zero on t = 0 and on the four sides, positive inside; (N,)."""
    return x[:, 2] * (1 - x[:, 0] ** 2) * (1 - x[:, 1] ** 2)


class Heat2D(Problem):
    r"""The heat equation on the square, the two-dimensional case of the plain heat problem.

    .. math::
        u_t = \alpha (u_{xx} + u_{yy}), \quad (x, y) \in [-1, 1]^2,\ t \in [0, 1], \qquad
        u(x, y, 0) = \sin(\pi x)\sin(\pi y), \quad u = 0 \text{ on } x = \pm 1,\ y = \pm 1,

    exact solution u = exp(-2 alpha pi^2 t) sin(pi x) sin(pi y) (separation of variables: the initial value is
    an eigenfunction of the Laplacian with eigenvalue -2 pi^2). Its test grid, like every 3-variable problem's,
    is sized by the total-point budget ``eval.n_points`` (21^3 = 9,261 points by default).

    Args:
        alpha: diffusivity, > 0.
        hard: impose the initial and boundary conditions exactly, u = sin(pi x) sin(pi y) + t (1 - x^2)(1 - y^2) N;
            otherwise they are mean-square losses named ``initial`` and ``boundary``.
        initial_weight, boundary_weight: weights of those losses when ``hard`` is false.
        residual_weight: weight of the PDE residual's mean square.
    """

    variables = ("x", "y", "t")
    outputs = ("u",)
    description = "heat in 2-D + time: u_t = alpha (u_xx + u_yy), u = exp(-2 alpha pi^2 t) sin(pi x) sin(pi y)"

    def __init__(self, alpha: float = 0.1, hard: bool = True, initial_weight: float = 100.0,
                 boundary_weight: float = 100.0, residual_weight: float = 1.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"the diffusivity alpha must be a finite number > 0, got {alpha!r}; "
                             "set e.g. problem.alpha=0.1")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be true or false, got {hard!r}")
        self.alpha, self.hard = float(alpha), hard
        self.initial_weight = check_weight(initial_weight, "initial_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.domain = Box.from_bounds(x=(-1.0, 1.0), y=(-1.0, 1.0), t=(0.0, 1.0))
        self.hard_constraint = HardConstraint(initial_value, distance) if hard else None

    def residual(self, x, d):
        return d["u_t"] - self.alpha * (d["u_xx"] + d["u_yy"])

    def conditions(self) -> dict[str, Condition]:
        if self.hard:  # satisfied exactly by the ansatz
            return {}
        return {
            "initial": dirichlet(initial_value, on="t=0", weight=self.initial_weight),
            "boundary": dirichlet(0.0, on=["x=-1", "x=1", "y=-1", "y=1"], weight=self.boundary_weight),
        }

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """u at points (N, 3): (N, 1)."""
        return (torch.exp(-2 * self.alpha * PI**2 * x[:, 2]) * initial_value(x)).unsqueeze(-1)
