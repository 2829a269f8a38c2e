"""The 2D Helmholtz equation on [-1, 1]^2, jaxKAN's benchmark; also the worked example of a user problem.

This file is written exactly as a user would write ``problems/my_pde.py``: a :class:`~kanpde.Problem`
subclass that declares its domain, residual, conditions and exact solution, with its parameters checked
in ``__init__``. Its config is ``configs/problem/helmholtz.yaml``.
"""

from __future__ import annotations

import math

import torch

from kanpde import Box, Problem, dirichlet
from kanpde.constraints import HardConstraint

PI = math.pi


class Helmholtz(Problem):
    r"""Helmholtz equation with a manufactured solution (jaxKAN's PIKAN benchmark, 1.0e-3 relative L2).

    .. math::
        u_{xx} + u_{yy} + k^2 u = q \text{ on } [-1,1]^2, \qquad u = 0 \text{ on the boundary},

        q = \left(k^2 - (a_1^2 + a_2^2)\pi^2\right) \sin(a_1 \pi x) \sin(a_2 \pi y),

    exact solution u = sin(a1 pi x) sin(a2 pi y); the benchmark uses a1 = 1, a2 = 4, k = 1.

    Args:
        a1, a2: wave numbers of the solution in x and y (in units of pi); non-zero integers, so that
            u vanishes on the boundary.
        k: wave number of the equation, finite and >= 0. k^2 must not be a Dirichlet eigenvalue of -Laplacian
            on the square, (pi/2)^2 (m^2 + n^2) with m, n >= 1: there the solution is not unique.
        hard: impose u = 0 on the boundary exactly through the ansatz u = (1 - x^2)(1 - y^2) N(x, y)
            (no boundary loss) instead of the weighted loss ``boundary``. Off here, on in
            ``configs/problem/helmholtz.yaml``: with quintic splines it measured 2-8x better than the loss
            (whose boundary error stalled near 1e-3); with cubic ones it had measured 2-10x worse.
        residual_weight: weight of the interior mean-square residual. The source is large
            (|q| up to (a1^2 + a2^2) pi^2 - k^2, about 167), so the residual is scaled down against the
            boundary term, like the KAN paper's 0.01 : 1 for Poisson; 1e-4 measured best of 1e-5 ... 1e-3.
        boundary_weight: weight of the boundary mean square (unused when ``hard``).
    """

    variables = ("x", "y")
    outputs = ("u",)
    description = "Helmholtz: u_xx + u_yy + k^2 u = q on [-1,1]^2, u = sin(a1 pi x) sin(a2 pi y) (jaxKAN)"

    def __init__(self, a1: int = 1, a2: int = 4, k: float = 1.0, hard: bool = False, residual_weight: float = 1.0e-4,
                 boundary_weight: float = 1.0):
        for name, value in (("a1", a1), ("a2", a2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value == 0:
                raise ValueError(f"{name} must be a non-zero integer so that u = sin(a1 pi x) sin(a2 pi y) "
                                 f"vanishes on the boundary of [-1, 1]^2, got {value!r}; e.g. problem.{name}=2")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
            raise ValueError(f"k must be a finite number >= 0, got {k!r}; e.g. problem.k=1")
        if _is_dirichlet_eigenvalue(float(k) ** 2):
            raise ValueError(f"k^2 = {float(k) ** 2:g} is a Dirichlet eigenvalue of -Laplacian on [-1, 1]^2 "
                             "((pi/2)^2 (m^2 + n^2) for integers m, n >= 1): the solution is not unique there; "
                             "choose another k")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be true or false, got {hard!r}")
        for name, value in (("residual_weight", residual_weight), ("boundary_weight", boundary_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.a1, self.a2, self.k = int(a1), int(a2), float(k)
        self.residual_weight, self.boundary_weight = float(residual_weight), float(boundary_weight)
        self.domain = Box(self.variables, lower=(-1.0, -1.0), upper=(1.0, 1.0))
        self.hard = hard
        self.hard_constraint = HardConstraint(_zero, _distance) if hard else None

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """u = sin(a1 pi x) sin(a2 pi y) at points ``x`` (N, 2): (N, 1)."""
        return (torch.sin(self.a1 * PI * x[:, 0]) * torch.sin(self.a2 * PI * x[:, 1])).unsqueeze(-1)

    def source(self, x: torch.Tensor) -> torch.Tensor:
        """q = (k^2 - (a1^2 + a2^2) pi^2) u_exact at points ``x`` (N, 2): (N,)."""
        return (self.k**2 - (self.a1**2 + self.a2**2) * PI**2) * self.exact(x)[:, 0]

    def residual(self, x, d):
        return d["u_xx"] + d["u_yy"] + self.k**2 * d["u"] - self.source(x)

    def conditions(self):
        if self.hard:  # satisfied exactly by the ansatz
            return {}
        return {"boundary": dirichlet(0.0, on="boundary", weight=self.boundary_weight)}


def _zero(x: torch.Tensor) -> torch.Tensor:
    """The boundary values, 0, at points ``x`` (N, 2): (N,)."""
    return torch.zeros_like(x[:, 0])


def _distance(x: torch.Tensor) -> torch.Tensor:
    """(1 - x^2)(1 - y^2): zero on the boundary of [-1, 1]^2, positive inside; (N,)."""
    return (1 - x[:, 0] ** 2) * (1 - x[:, 1] ** 2)


def _is_dirichlet_eigenvalue(k_squared: float) -> bool:
    """Whether k^2 = (pi/2)^2 (m^2 + n^2) for integers m, n >= 1 (to 1e-9 relative)."""
    target = k_squared / (PI / 2) ** 2  # m^2 + n^2
    nearest = round(target)
    if nearest < 2 or abs(target - nearest) > 1e-9 * max(1.0, target):
        return False
    return any(math.isqrt(nearest - m * m) ** 2 == nearest - m * m and nearest - m * m >= 1
               for m in range(1, math.isqrt(nearest) + 1))
