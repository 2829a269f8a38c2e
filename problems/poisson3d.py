"""A Poisson problem on the cube [-1, 1]^3: the three-dimensional case of pykan's sin*sin problem."""

from __future__ import annotations

import math

import torch

from kanpde.problem import Box, Problem, check_weight, dirichlet

PI = math.pi


class Poisson3D(Problem):
    r"""Poisson's equation on the cube, with a manufactured solution.

    .. math::
        u_{xx} + u_{yy} + u_{zz} = -3\pi^2 \sin(\pi x)\sin(\pi y)\sin(\pi z) \text{ on } [-1,1]^3, \qquad
        u = 0 \text{ on the boundary},

    exact solution u = sin(pi x) sin(pi y) sin(pi z); the loss is weighted 0.01 * interior + boundary, as
    for the two-dimensional problems. Its test grid is sized by dimension (``eval.n_points``), not per side.
    """

    variables = ("x", "y", "z")
    outputs = ("u",)
    description = "Poisson in 3-D: laplacian(u) = -3 pi^2 sin(pi x) sin(pi y) sin(pi z) on [-1,1]^3"

    def __init__(self, residual_weight: float = 0.01, boundary_weight: float = 1.0):
        self.domain = Box(self.variables, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.boundary_weight = check_weight(boundary_weight, "boundary_weight")

    def residual(self, x, d):
        return d.laplacian() + 3 * PI**2 * self._product(x)

    def conditions(self):
        return {"boundary": dirichlet(0.0, on="boundary", weight=self.boundary_weight)}

    def exact(self, x):
        return self._product(x).unsqueeze(-1)

    @staticmethod
    def _product(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1]) * torch.sin(PI * x[:, 2])
