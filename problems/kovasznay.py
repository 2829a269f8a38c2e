"""Kovasznay flow: steady incompressible Navier-Stokes in two dimensions, with an exact solution."""

from __future__ import annotations

import math

import torch

from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet

PI = math.pi


class Kovasznay(Problem):
    r"""Kovasznay's laminar flow behind a two-dimensional grid (L. I. G. Kovasznay, Proc. Camb. Phil. Soc.
    44, 58-62, 1948): the steady incompressible Navier-Stokes equations at Reynolds number Re,

    .. math::
        u u_x + v u_y + p_x - \frac{1}{Re}(u_{xx} + u_{yy}) = 0,

        u v_x + v v_y + p_y - \frac{1}{Re}(v_{xx} + v_{yy}) = 0,

        u_x + v_y = 0, \qquad (x, y) \in [-0.5, 1] \times [-0.5, 1.5],

    with the exact solution, for lambda = Re/2 - sqrt(Re^2/4 + 4 pi^2) (-1.8101 at Re = 20),

    .. math::
        u = 1 - e^{\lambda x}\cos(2\pi y), \quad v = \frac{\lambda}{2\pi} e^{\lambda x}\sin(2\pi y), \quad
        p = \frac{1}{2}\left(1 - e^{2\lambda x}\right).

    The domain, Re = 20 and the conditions follow DeepXDE's example
    (``examples/pinn_forward/Kovasznay_flow.py``): u and v equal the exact solution on the whole boundary,
    and p equals it on the outflow face x = 1. Only p's gradient enters the equations, so with the velocity
    given on the whole boundary p is determined up to an additive constant; the outflow condition fixes that
    constant (a single point would do too, but a face condition fits kanpde's face-sampled conditions and
    averages the level over many points). The momentum and continuity residuals are the loss terms
    ``momentum_x``, ``momentum_y`` and ``continuity``; the conditions are ``u``, ``v`` and ``p``.

    Args:
        reynolds: Re > 0 (20 by default, DeepXDE's).
        velocity_weight: weight of the u and v boundary losses.
        pressure_weight: weight of the outflow pressure loss.
        residual_weight: weight of each residual equation's mean square.
    """

    variables = ("x", "y")
    outputs = ("u", "v", "p")
    description = "Kovasznay flow: steady Navier-Stokes at Re = 20 on [-0.5, 1] x [-0.5, 1.5], outputs u, v, p"

    def __init__(self, reynolds: float = 20.0, velocity_weight: float = 1.0, pressure_weight: float = 1.0,
                 residual_weight: float = 1.0):
        if isinstance(reynolds, bool) or not isinstance(reynolds, (int, float)) or not math.isfinite(reynolds) \
                or reynolds <= 0:
            raise ValueError(f"the Reynolds number must be a finite number > 0, got {reynolds!r}; "
                             "DeepXDE's example uses problem.reynolds=20")
        self.reynolds = float(reynolds)
        self.decay = self.reynolds / 2 - math.sqrt(self.reynolds**2 / 4 + 4 * PI**2)  # lambda < 0
        self.velocity_weight = check_weight(velocity_weight, "velocity_weight")
        self.pressure_weight = check_weight(pressure_weight, "pressure_weight")
        self.residual_weight = check_weight(residual_weight, "residual_weight")
        self.domain = Box(self.variables, (-0.5, -0.5), (1.0, 1.5))

    def residual(self, x, d):
        u, v, viscosity = d["u"], d["v"], 1.0 / self.reynolds
        return {
            "momentum_x": u * d["u_x"] + v * d["u_y"] + d["p_x"] - viscosity * (d["u_xx"] + d["u_yy"]),
            "momentum_y": u * d["v_x"] + v * d["v_y"] + d["p_y"] - viscosity * (d["v_xx"] + d["v_yy"]),
            "continuity": d["u_x"] + d["v_y"],
        }

    def conditions(self) -> dict[str, Condition]:
        return {
            "u": dirichlet(lambda x: self.exact(x)[:, 0], on="boundary", output="u", weight=self.velocity_weight),
            "v": dirichlet(lambda x: self.exact(x)[:, 1], on="boundary", output="v", weight=self.velocity_weight),
            "p": dirichlet(lambda x: self.exact(x)[:, 2], on="x=1", output="p", weight=self.pressure_weight),
        }

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """(u, v, p) at points (N, 2): (N, 3)."""
        grow = torch.exp(self.decay * x[:, 0])
        angle = 2 * PI * x[:, 1]
        u = 1 - grow * torch.cos(angle)
        v = self.decay / (2 * PI) * grow * torch.sin(angle)
        p = 0.5 * (1 - grow**2)
        return torch.stack([u, v, p], dim=1)
