"""Burgers' equation with both coefficients unknown, identified from scattered data (Raissi et al.'s inverse problem)."""

from __future__ import annotations

import math

import numpy as np
import torch

from kanpde.observations import check_inside, observations, read_observations
from kanpde.problem import Box, Condition, check_weight
from kanpde.problems.burgers import Burgers
from kanpde.problems.burgers_reference import reference_grid
from kanpde.unknowns import Unknown

PI = math.pi


class BurgersInverse(Burgers):
    r"""Identify lambda_1 and lambda_2 in Burgers' equation from observations of its solution.

    .. math::
        u_t + \lambda_1 u u_x - \lambda_2 u_{xx} = 0, \quad x \in [-1, 1],\ t \in [0, 1],

    with the data made by the Cole-Hopf solution for lambda_1 = 1, lambda_2 = nu = 0.01/pi (Raissi, Perdikaris and
    Karniadakis, J. Comput. Phys. 378, 2019, sec. 4.1.1): ``n_observations`` points drawn at random (seeded by
    ``data_seed``) from the 256 x 100 reference grid, optionally with Gaussian noise of ``noise`` times the data's
    standard deviation. As there, the loss knows the data and the PDE only: no initial or boundary condition
    (their weights default to 0; set them > 0 to add the known conditions). lambda_2 is trained through its
    logarithm (it stays > 0), lambda_1 as it is. ``data`` names a ``.npz`` or ``.csv`` file with columns
    ``x``, ``t``, ``u`` to identify from instead of the synthetic observations.

    Args:
        lambda1_initial, lambda2_initial: initial guesses (Raissi et al. start lambda_1 at 0).
        n_observations: observations drawn from the reference grid.
        noise: noise level, a fraction of the data's standard deviation (0.01: 1%).
        data_seed: seed of the draw and of the noise.
        data: a data file to read instead, or None.
        data_weight: weight of the data misfit's mean square.
        nu, stretch, residual_weight, initial_weight, boundary_weight, reference_points, quadrature_nodes: as for
            :class:`~kanpde.problems.burgers.Burgers` (nu is the true lambda_2, used for the data and the reference).
    """

    description = "inverse Burgers: identify l1, l2 in u_t + l1 u u_x = l2 u_xx from 2,000 observations (Raissi)"

    def __init__(self, lambda1_initial: float = 0.0, lambda2_initial: float = 0.01, n_observations: int = 2000,
                 noise: float = 0.0, data_seed: int = 0, data: str | None = None, data_weight: float = 1.0,
                 nu: float = 0.01 / PI, stretch: float = 0.01, residual_weight: float = 1.0,
                 initial_weight: float = 0.0, boundary_weight: float = 0.0,
                 reference_points: tuple[int, int] = (256, 100), quadrature_nodes: int | None = None):
        super().__init__(nu=nu, hard=False, stretch=stretch, initial_weight=initial_weight,
                         boundary_weight=boundary_weight, residual_weight=residual_weight,
                         reference_points=reference_points, quadrature_nodes=quadrature_nodes)
        if isinstance(n_observations, bool) or int(n_observations) != n_observations or n_observations < 1:
            raise ValueError(f"n_observations must be an integer >= 1, got {n_observations!r}")
        self.data_weight = check_weight(data_weight, "data_weight")
        self.l1 = Unknown(float(lambda1_initial), true=1.0)
        self.l2 = Unknown(float(lambda2_initial), positive=True, true=self.nu)
        if data is not None:
            xt, values, _ = read_observations(data, ("x", "t"), self.outputs)
        else:
            n_x, n_t = self.reference_points
            grid, exact = reference_grid(self.nu, n_x, n_t, 1.0, self.quadrature_nodes)
            if n_observations > len(grid):
                raise ValueError(f"n_observations={n_observations} exceeds the {len(grid)} reference grid points")
            chosen = np.random.default_rng(int(data_seed)).choice(len(grid), size=int(n_observations), replace=False)
            xt, values = torch.tensor(grid[chosen]), torch.tensor(exact[chosen])
        check_inside(xt, Box(("x", "t"), (-1.0, 0.0), (1.0, 1.0)))  # in x, before the map to s
        points = xt.clone()
        if self.stretch is not None:
            points[:, 0] = self.stretch.to_s(points[:, 0])
        self.data = observations(points, values, self.outputs, self.domain, self.outputs, self.data_weight, noise,
                                 data_seed)

    def residual(self, x, d):
        if self.stretch is None:
            return d["u_t"] + self.l1 * d["u"] * d["u_x"] - self.l2 * d["u_xx"]
        s_x, s_xx = self.stretch.derivatives(x[:, 0])
        u_x = s_x * d["u_s"]
        u_xx = s_x**2 * d["u_ss"] + s_xx * d["u_s"]
        return (d["u_t"] + self.l1 * d["u"] * u_x - self.l2 * u_xx) * self._jacobian_weight(x)

    def conditions(self) -> dict[str, Condition]:
        known = {name: c for name, c in super().conditions().items() if c.weight > 0}
        return {**known, "data": self.data}
