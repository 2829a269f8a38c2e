"""Viscous Burgers' equation (Raissi et al.'s PINN benchmark) with its Cole-Hopf reference solution."""

from __future__ import annotations

import math

import torch

from kanpde.constraints import HardConstraint
from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet
from kanpde.problems.burgers_reference import reference_grid

PI = math.pi


class ShockStretch:
    r"""The coordinate map s = asinh(x / eps) / asinh(1 / eps) of [-1, 1] onto itself.

    Near x = 0 a unit of s spans eps * asinh(1 / eps) of x (0.09 for eps = 0.02), so uniform knots and
    collocation points in s are about 11 times denser at the shock than uniform ones in x, and about
    5 times sparser at x = +-1, where the solution is smooth. Derivatives follow the chain rule:
    u_x = s_x u_s and u_xx = s_x^2 u_ss + s_xx u_s, with, for z = sinh(A s) = x / eps and A = asinh(1 / eps),

        s_x = 1 / (eps A cosh(A s)),    s_xx = -z / (eps^2 A cosh(A s)^3).
    """

    def __init__(self, eps: float):
        self.eps = float(eps)
        self.scale = math.asinh(1.0 / self.eps)  # A

    def to_s(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x / self.eps) / self.scale

    def to_x(self, s: torch.Tensor) -> torch.Tensor:
        return self.eps * torch.sinh(self.scale * s)

    def derivatives(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ds/dx, d^2 s/dx^2) at the points ``s``, each shaped like ``s``."""
        z, cosh = torch.sinh(self.scale * s), torch.cosh(self.scale * s)
        return 1.0 / (self.eps * self.scale * cosh), -z / (self.eps**2 * self.scale * cosh**3)


class Burgers(Problem):
    r"""Viscous Burgers' equation (Raissi, Perdikaris and Karniadakis, J. Comput. Phys. 378, 2019, sec. 3.1).

    .. math::
        u_t + u u_x = \nu u_{xx}, \quad x \in [-1, 1],\ t \in [0, 1], \qquad \nu = 0.01 / \pi,

        u(x, 0) = -\sin(\pi x), \qquad u(-1, t) = u(1, t) = 0.

    A shock of width about 1e-2 (max |u_x| = 152) forms at x = 0 by t = 0.5. The reference comes from the Cole-Hopf
    transformation with Gauss-Hermite quadrature (:mod:`kanpde.problems.burgers_reference`) on Raissi's
    256 x 100 grid layout (here t in [0, 1]).

    With ``stretch`` = eps > 0 the problem is posed in the coordinate s = asinh(x / eps) / asinh(1 / eps)
    (:class:`ShockStretch`): the variables are ``("s", "t")``, the residual carries the chain-rule
    factors and the weight sqrt(dx/ds) (so its mean square still measures the residual over x), and
    collocation points, knots and test points are in (s, t), with x = eps sinh(s asinh(1 / eps));
    ``prediction.npz`` and the plots are mapped back to (x, t) (:meth:`physical_points`). Uniform points and knots in s crowd at the shock, which a KAN's
    uniform grid cannot otherwise resolve (measured: see configs/problem/burgers.yaml).

    Args:
        nu: viscosity, > 0 (0.01/pi by default).
        hard: impose the initial and boundary conditions exactly, u = -sin(pi x) + t (1 - s^2) N(s, t)
            (s = x without a stretch); otherwise (the default, which measured better with the stretch)
            they are mean-square losses named ``initial`` and ``boundary``.
        stretch: eps of the coordinate stretch at x = 0 (0.01 measured best); 0 solves in x itself.
        initial_weight, boundary_weight: weights of those losses when ``hard`` is false.
        residual_weight: weight of the PDE residual's mean square.
        reference_points: (n_x, n_t) of the reference grid.
        quadrature_nodes: Gauss-Hermite nodes; null picks enough for ``nu`` (see ``default_nodes``).
    """

    outputs = ("u",)
    description = "viscous Burgers u_t + u u_x = nu u_xx, nu = 0.01/pi, u0 = -sin(pi x); Cole-Hopf reference"

    def __init__(self, nu: float = 0.01 / PI, hard: bool = False, stretch: float = 0.01, initial_weight: float = 10.0,
                 boundary_weight: float = 10.0, residual_weight: float = 1.0,
                 reference_points: tuple[int, int] = (256, 100), quadrature_nodes: int | None = None):
        if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not math.isfinite(nu) or nu <= 0:
            raise ValueError(f"the viscosity nu must be a finite number > 0, got {nu!r}; "
                             "the benchmark uses problem.nu=0.003183098861837907 (0.01/pi)")
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be true or false, got {hard!r}")
        if isinstance(stretch, bool) or not isinstance(stretch, (int, float)) or not math.isfinite(stretch) \
                or stretch < 0:
            raise ValueError(f"stretch must be a finite number >= 0 (0: no stretch, e.g. 0.02), got {stretch!r}")
        points = tuple(reference_points)
        if len(points) != 2 or any(int(n) != n or n < 2 for n in points):
            raise ValueError(f"reference_points must be two integers >= 2 (n_x, n_t), got {reference_points!r}")
        if quadrature_nodes is not None and (int(quadrature_nodes) != quadrature_nodes or quadrature_nodes < 2):
            raise ValueError(f"quadrature_nodes must be an integer >= 2 or null, got {quadrature_nodes!r}")
        self.nu, self.hard = float(nu), hard
        self.stretch = ShockStretch(stretch) if stretch > 0 else None
        self.variables = ("s", "t") if self.stretch else ("x", "t")
        self.initial_weight = check_weight(initial_weight, "initial_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.reference_points = (int(points[0]), int(points[1]))
        self.quadrature_nodes = None if quadrature_nodes is None else int(quadrature_nodes)
        self.domain = Box(self.variables, (-1.0, 0.0), (1.0, 1.0))
        self.hard_constraint = HardConstraint(self.initial_value, self.distance) if hard else None

    def physical_points(self, points: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
        """Points (N, 2) in the problem's variables as (x, t) points (N, 2), with the names ("x", "t"):
        for plots and saved predictions, which read better in x than in the stretched s."""
        return torch.stack([self.physical_x(points), points[:, 1]], dim=1), ("x", "t")

    def physical_x(self, points: torch.Tensor) -> torch.Tensor:
        """x at points (N, 2) in the problem's variables: (N,)."""
        return self.stretch.to_x(points[:, 0]) if self.stretch else points[:, 0]

    def initial_value(self, points: torch.Tensor) -> torch.Tensor:
        """u(x, 0) = -sin(pi x): (N,)."""
        return -torch.sin(PI * self.physical_x(points))

    @staticmethod
    def distance(points: torch.Tensor) -> torch.Tensor:
        """t (1 - s^2): zero on t = 0 and at both ends, positive inside; (N,)."""
        return points[:, 1] * (1 - points[:, 0] ** 2)

    def residual(self, x, d):
        if self.stretch is None:
            return d["u_t"] + d["u"] * d["u_x"] - self.nu * d["u_xx"]
        s_x, s_xx = self.stretch.derivatives(x[:, 0])
        u_x = s_x * d["u_s"]
        u_xx = s_x**2 * d["u_ss"] + s_xx * d["u_s"]
        return (d["u_t"] + d["u"] * u_x - self.nu * u_xx) * self._jacobian_weight(x)

    def _jacobian_weight(self, points: torch.Tensor) -> torch.Tensor:
        """sqrt(dx/ds) (N,): a mean square over points uniform in s then estimates the mean square over x.

        Without it the loss weights the shock region s_x times more (11x for eps = 0.02, 19x for 0.01),
        which measured 2-5x worse errors at the same budget (configs/problem/burgers.yaml).
        """
        s_x, _ = self.stretch.derivatives(points[:, 0])
        return s_x.rsqrt()

    def conditions(self) -> dict[str, Condition]:
        if self.hard:
            return {}
        first = self.variables[0]
        initial = dirichlet(self.initial_value, on="t=0", weight=self.initial_weight)
        if self.stretch is not None:
            unweighted = initial.residual
            initial.residual = lambda x, d: unweighted(x, d) * self._jacobian_weight(x)
        return {
            "initial": initial,
            "boundary": dirichlet(0.0, on=[f"{first}=-1", f"{first}=1"], weight=self.boundary_weight),
        }

    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cole-Hopf values on the reference grid, in the problem's variables: points (n_x n_t, 2) and
        values (n_x n_t, 1), float64 copies of a cached computation."""
        n_x, n_t = self.reference_points
        points, values = reference_grid(self.nu, n_x, n_t, 1.0, self.quadrature_nodes)
        points = torch.tensor(points)
        if self.stretch is not None:
            points[:, 0] = self.stretch.to_s(points[:, 0])
        return points, torch.tensor(values)
