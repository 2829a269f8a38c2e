"""Viscous Burgers' equation (Raissi et al.'s PINN benchmark) with its Cole-Hopf reference solution."""

from __future__ import annotations

import math

import torch

from kanpde.constraints import HardConstraint
from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet
from kanpde.problems.burgers_reference import reference_grid

PI = math.pi


def initial_value(x: torch.Tensor) -> torch.Tensor:
    """u(x, 0) = -sin(pi x) at points (N, 2) ordered (x, t): (N,)."""
    return -torch.sin(PI * x[:, 0])


def distance(x: torch.Tensor) -> torch.Tensor:
    """t (1 - x^2): zero on t = 0 and x = +-1, positive inside; (N,)."""
    return x[:, 1] * (1 - x[:, 0] ** 2)


class Burgers(Problem):
    r"""Viscous Burgers' equation (Raissi, Perdikaris and Karniadakis, J. Comput. Phys. 378, 2019, sec. 3.1).

    .. math::
        u_t + u u_x = \nu u_{xx}, \quad x \in [-1, 1],\ t \in [0, 1], \qquad \nu = 0.01 / \pi,

        u(x, 0) = -\sin(\pi x), \qquad u(-1, t) = u(1, t) = 0.

    A shock of width about 3e-3 forms at x = 0 near t = 0.5. The reference comes from the Cole-Hopf
    transformation with Gauss-Hermite quadrature (:mod:`kanpde.problems.burgers_reference`) on Raissi's
    256 x 100 grid layout (here t in [0, 1]).

    Args:
        nu: viscosity, > 0 (0.01/pi by default).
        hard: impose the initial and boundary conditions exactly, u = -sin(pi x) + t (1 - x^2) N(x, t);
            otherwise they are mean-square losses named ``initial`` and ``boundary``.
        initial_weight, boundary_weight: weights of those losses when ``hard`` is false.
        residual_weight: weight of the PDE residual's mean square.
        reference_points: (n_x, n_t) of the reference grid.
        quadrature_nodes: Gauss-Hermite nodes; null picks enough for ``nu`` (see ``default_nodes``).
    """

    variables = ("x", "t")
    outputs = ("u",)
    description = "viscous Burgers u_t + u u_x = nu u_xx, nu = 0.01/pi, u0 = -sin(pi x); Cole-Hopf reference"

    def __init__(self, nu: float = 0.01 / PI, hard: bool = True, initial_weight: float = 10.0,
                 boundary_weight: float = 10.0, residual_weight: float = 1.0,
                 reference_points: tuple[int, int] = (256, 100), quadrature_nodes: int | None = None):
        if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not math.isfinite(nu) or nu <= 0:
            raise ValueError(f"the viscosity nu must be a finite number > 0, got {nu!r}; "
                             "the benchmark uses problem.nu=0.003183098861837907 (0.01/pi)")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be true or false, got {hard!r}")
        points = tuple(reference_points)
        if len(points) != 2 or any(int(n) != n or n < 2 for n in points):
            raise ValueError(f"reference_points must be two integers >= 2 (n_x, n_t), got {reference_points!r}")
        if quadrature_nodes is not None and (int(quadrature_nodes) != quadrature_nodes or quadrature_nodes < 2):
            raise ValueError(f"quadrature_nodes must be an integer >= 2 or null, got {quadrature_nodes!r}")
        self.nu, self.hard = float(nu), hard
        self.initial_weight = check_weight(initial_weight, "initial_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.reference_points = (int(points[0]), int(points[1]))
        self.quadrature_nodes = None if quadrature_nodes is None else int(quadrature_nodes)
        self.domain = Box.from_bounds(x=(-1.0, 1.0), t=(0.0, 1.0))
        self.hard_constraint = HardConstraint(initial_value, distance) if hard else None

    def residual(self, x, d):
        return d["u_t"] + d["u"] * d["u_x"] - self.nu * d["u_xx"]

    def conditions(self) -> dict[str, Condition]:
        if self.hard:
            return {}
        return {
            "initial": dirichlet(initial_value, on="t=0", weight=self.initial_weight),
            "boundary": dirichlet(0.0, on=["x=-1", "x=1"], weight=self.boundary_weight),
        }

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cole-Hopf values on the reference grid: points (n_x n_t, 2), values (n_x n_t, 1), float64."""
        n_x, n_t = self.reference_points
        points, values = reference_grid(self.nu, n_x, n_t, 1.0, self.quadrature_nodes)
        return torch.tensor(points), torch.tensor(values)
