"""The heat equation with an unknown diffusivity, identified from scattered observations of its solution."""

from __future__ import annotations

import torch

from kanpde.observations import observations, read_observations
from kanpde.problem import Condition, check_weight
from kanpde.problems.heat import PI, Heat
from kanpde.sampling import unit_samples
from kanpde.unknowns import Unknown


class HeatInverse(Heat):
    r"""Identify the diffusivity alpha of u_t = alpha u_xx from observations of u.

    .. math::
        u_t = \alpha u_{xx}, \quad x \in [-1, 1],\ t \in [0, 1], \qquad
        u(x, 0) = \sin(\pi x), \quad u(\pm 1, t) = 0,

    with the data made by the exact solution u = exp(-alpha pi^2 t) sin(pi x) for the true alpha (0.1):
    ``n_observations`` uniform random points in the domain (seeded by ``data_seed``), optionally with Gaussian
    noise of ``noise`` times the data's standard deviation; or the file ``data`` (``.npz``/``.csv`` with columns
    ``x``, ``t``, ``u``). The initial and boundary conditions hold through the hard constraint, as in
    :class:`~kanpde.problems.heat.Heat`; alpha starts at ``alpha_initial`` and is trained through its logarithm.

    Args:
        alpha: the true diffusivity (the data's, and the exact solution's for the test grid).
        alpha_initial: the initial guess, > 0.
        n_observations, noise, data_seed, data, data_weight: the observations, as for
            :class:`~kanpde.problems.burgers_inverse.BurgersInverse`.
        hard, initial_weight, boundary_weight, residual_weight: as for :class:`~kanpde.problems.heat.Heat`.
    """

    description = "inverse heat: identify alpha in u_t = alpha u_xx from 500 observations"

    def __init__(self, alpha: float = 0.1, alpha_initial: float = 1.0, n_observations: int = 500, noise: float = 0.0,
                 data_seed: int = 0, data: str | None = None, data_weight: float = 1.0, hard: bool = True,
                 initial_weight: float = 100.0, boundary_weight: float = 100.0, residual_weight: float = 1.0):
        super().__init__(alpha=alpha, hard=hard, initial_weight=initial_weight, boundary_weight=boundary_weight,
                         residual_weight=residual_weight)
        if isinstance(n_observations, bool) or int(n_observations) != n_observations or n_observations < 1:
            raise ValueError(f"n_observations must be an integer >= 1, got {n_observations!r}")
        self.true_alpha = float(alpha)
        del self.alpha  # the number Heat stored: alpha becomes the unknown
        self.alpha = Unknown(float(alpha_initial), positive=True, true=self.true_alpha)
        self.data_weight = check_weight(data_weight, "data_weight")
        if data is not None:
            points, values, _ = read_observations(data, self.variables, self.outputs)
        else:
            box = self.domain
            unit = torch.from_numpy(unit_samples(int(n_observations), box.dim, "uniform", int(data_seed)))
            points = torch.tensor(box.lower) + unit * (torch.tensor(box.upper) - torch.tensor(box.lower))
            values = self.exact(points)
        self.data = observations(points, values, self.outputs, self.domain, self.outputs, self.data_weight, noise,
                                 data_seed)

    def exact(self, x):
        return (torch.exp(-self.true_alpha * PI**2 * x[:, 1]) * torch.sin(PI * x[:, 0])).unsqueeze(-1)

    def conditions(self) -> dict[str, Condition]:
        return {**super().conditions(), "data": self.data}

