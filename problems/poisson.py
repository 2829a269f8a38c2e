"""Poisson problems on the square [-1, 1]^2."""

from __future__ import annotations

import math

import torch

from kanpde.problem import Box, Problem, check_weight, dirichlet

PI = math.pi


class KANPaperPoisson(Problem):
    r"""The KAN paper's Poisson problem (Liu et al. 2024, section 3.4).

    .. math::
        u_{xx} + u_{yy} = f \text{ on } [-1,1]^2, \qquad u = 0 \text{ on the boundary},

        f = -\pi^2 (1 + 4y^2) \sin(\pi x) \sin(\pi y^2) + 2\pi \sin(\pi x) \cos(\pi y^2),

    exact solution u = sin(pi x) sin(pi y^2). The paper weights the loss as
    0.01 * interior MSE + boundary MSE (10,000 interior and 800 boundary points).
    """

    variables = ("x", "y")
    outputs = ("u",)
    description = "KAN paper's Poisson: u_xx + u_yy = f on [-1,1]^2, u = sin(pi x) sin(pi y^2)"

    def __init__(self, residual_weight: float = 0.01, boundary_weight: float = 1.0):
        self.domain = Box(self.variables, (-1.0, -1.0), (1.0, 1.0))
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")

    def source(self, x: torch.Tensor) -> torch.Tensor:
        px, py = x[:, 0], x[:, 1]
        return (-PI**2 * (1 + 4 * py**2) * torch.sin(PI * px) * torch.sin(PI * py**2)
                + 2 * PI * torch.sin(PI * px) * torch.cos(PI * py**2))

    def residual(self, x, d):
        return d["u_xx"] + d["u_yy"] - self.source(x)

    def conditions(self):
        return {"boundary": dirichlet(0.0, on="boundary", weight=self.boundary_weight)}

    def exact(self, x):
        return (torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1] ** 2)).unsqueeze(-1)


class SinSinPoisson(KANPaperPoisson):
    r"""pykan's tutorial Poisson problem (pykan, "Example 6: Solving Partial Differential Equation").

    .. math::
        u_{xx} + u_{yy} = -2\pi^2 \sin(\pi x)\sin(\pi y) \text{ on } [-1,1]^2, \qquad u = 0 \text{ on the boundary},

    exact solution u = sin(pi x) sin(pi y); pykan weights 0.01 * interior + boundary as well. Domain,
    weights, residual and boundary condition are the paper problem's; only f and u differ.
    """

    description = "pykan's Poisson: laplacian(u) = -2 pi^2 sin(pi x) sin(pi y) on [-1,1]^2"

    def source(self, x: torch.Tensor) -> torch.Tensor:
        return -2 * PI**2 * torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])

    def exact(self, x):
        return (torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])).unsqueeze(-1)
