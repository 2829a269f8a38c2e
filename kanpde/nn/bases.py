"""Edge-function bases other than B-splines: Chebyshev polynomials, a Fourier series and Gaussian RBFs.

A KAN edge is phi(h) = w_base silu(h) + w_spline sum_m c_m b_m(h). B-splines (the default,
:mod:`kanpde.nn.splines`) keep their own local fast path in :class:`~kanpde.nn.kan.KANLayer`; the bases
here are *global*: every basis function is non-zero (Gaussians: numerically non-zero) at every point, so
each point touches all M coefficients of an edge, and a layer evaluates them densely.

Each basis lives on the reference interval z in [-1, 1]. A layer maps its input range [lo, hi] there by
:func:`normalise`: the affine range map z = (2 h - lo - hi) / (hi - lo) (exact on [lo, hi], extrapolates
outside), or a tanh squash z = tanh(that), which keeps every activation inside (-1, 1) at the price of
crowding resolution near the middle. Derivatives with respect to h follow by the chain rule:
b_h = b_z z_h and b_hh = b_zz z_h^2 + b_z z_hh.

``grid_size`` G sets the richness of every basis, so the same schedules (grids 5 -> 10 -> 20) extend any
of them: Chebyshev degree G (M = G + 1), G Fourier frequencies (M = 2 G), G intervals between Gaussian
centres (M = G + 7).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

NORMALISATIONS = ("affine", "tanh")


class AbstractBasis(ABC):
    """A family of M functions b_m(z) on z in [-1, 1], with closed-form first and second derivatives."""

    name: str
    min_grid_size: int = 1
    why_min: str = ""

    @abstractmethod
    def size(self, grid_size: int) -> int:
        """Number of basis functions M at ``grid_size``."""

    @abstractmethod
    def evaluate(self, z: torch.Tensor, grid_size: int, n_derivatives: int) -> list[torch.Tensor]:
        """``[b, b_z, b_zz]`` (the first ``n_derivatives + 1``) at ``z`` (N, in), each ``(N, in, M)``."""

    def check_grid_size(self, grid_size: int) -> None:
        if grid_size < self.min_grid_size:
            raise ValueError(f"basis {self.name!r} needs grid_size >= {self.min_grid_size}{self.why_min}, "
                             f"got {grid_size}")


class Chebyshev(AbstractBasis):
    """T_0 .. T_G by the three-term recurrence T_{n+1} = 2 z T_n - T_{n-1}, differentiated term by term
    (T'_{n+1} = 2 T_n + 2 z T'_n - T'_{n-1}, T''_{n+1} = 4 T'_n + 2 z T''_n - T''_{n-1}): exact, and stable
    at z = +-1 where the trigonometric form's derivatives are 0/0."""

    name = "chebyshev"
    min_grid_size = 2
    why_min = (" (grid_size is the polynomial degree; below 2 every edge is linear and its second derivative "
               "vanishes, so a second-order PDE's u_xx could only come from the silu branch)")

    def size(self, grid_size: int) -> int:
        return grid_size + 1

    def evaluate(self, z, grid_size, n_derivatives):
        one, zero = torch.ones_like(z), torch.zeros_like(z)
        values, firsts, seconds = [one, z], [zero, one], [zero, zero]
        for _ in range(grid_size - 1):
            values.append(2 * z * values[-1] - values[-2])
            firsts.append(2 * values[-2] + 2 * z * firsts[-1] - firsts[-2])
            seconds.append(4 * firsts[-2] + 2 * z * seconds[-1] - seconds[-2])
        out = [values, firsts, seconds][: n_derivatives + 1]
        return [torch.stack(terms, dim=-1) for terms in out]


class Fourier(AbstractBasis):
    """cos(k theta) and sin(k theta), k = 1..G, with theta = pi (z + 1) / 2 in [0, pi]: the range is half a
    period, so the series represents functions that are not periodic on it without a jump at the ends (a
    constant comes from the other edges' sums and the silu branch)."""

    name = "fourier"

    def size(self, grid_size: int) -> int:
        return 2 * grid_size

    def evaluate(self, z, grid_size, n_derivatives):
        k = torch.arange(1, grid_size + 1, dtype=z.dtype, device=z.device) * (math.pi / 2)  # d theta_k / dz
        angle = (z.unsqueeze(-1) + 1) * k  # (N, in, G)
        cos, sin = torch.cos(angle), torch.sin(angle)
        out = [torch.cat([cos, sin], dim=-1)]
        if n_derivatives >= 1:
            out.append(torch.cat([-k * sin, k * cos], dim=-1))
        if n_derivatives >= 2:
            out.append(-(k**2).repeat(2) * out[0])
        return out


class GaussianRBF(AbstractBasis):
    """exp(-((z - c_m) / w)^2) at centres c_m spaced s = 2 / G on [-1, 1] and PAD spacings beyond each end
    (G + 1 + 2 PAD centres), width w = WIDTH s: b' = -2 (z - c) / w^2 b, b'' = (4 (z - c)^2 / w^4 - 2 / w^2) b.

    FastKAN's choice (G + 1 centres on the range, w = s) cannot represent a flat function near the ends,
    where half the neighbours are missing, nor anything below the ripple of its partition of unity:
    least squares onto it of a coarser Gaussian sum or of sin(3 z) on [-1, 1] stalls at ~2e-2 relative
    error whatever G. Measured (G = 10, 20, 40): PAD = 1, w = s: ~1e-3; PAD = 3, w = 1.5 s: 1e-7 to 4e-7 with
    a Gram condition number ~7e4, harmless in float64 for the damped LM solve.
    """

    name = "rbf"
    PAD, WIDTH = 3, 1.5

    def size(self, grid_size: int) -> int:
        return grid_size + 1 + 2 * self.PAD

    def evaluate(self, z, grid_size, n_derivatives):
        spacing = 2.0 / grid_size
        reach = 1 + self.PAD * spacing
        centres = torch.linspace(-reach, reach, self.size(grid_size), dtype=z.dtype, device=z.device)
        width = self.WIDTH * spacing
        offset = (z.unsqueeze(-1) - centres) / width  # (N, in, M)
        value = torch.exp(-offset**2)
        out = [value]
        if n_derivatives >= 1:
            out.append(-2 * offset / width * value)
        if n_derivatives >= 2:
            out.append((4 * offset**2 - 2) / width**2 * value)
        return out


GLOBAL_BASES: dict[str, AbstractBasis] = {basis.name: basis for basis in (Chebyshev(), Fourier(), GaussianRBF())}
BASES = ("bspline", *GLOBAL_BASES)


def check_basis(name, normalize) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown basis or normalisation."""
    if name not in BASES:
        raise ValueError(f"unknown basis {name!r}; choose one of {', '.join(BASES)} (model.basis=...)")
    if normalize not in NORMALISATIONS:
        raise ValueError(f"unknown input normalisation {normalize!r}; choose one of {', '.join(NORMALISATIONS)} "
                         "(model.normalize=...)")


def normalise(h: torch.Tensor, bounds: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z, dz/dh, d2z/dh2 at ``h`` (N, in) for an input range ``bounds`` (in, 2); each ``(N, in)``."""
    lo, hi = bounds[:, 0], bounds[:, 1]
    slope = 2 / (hi - lo)  # (in,)
    affine = (h - lo) * slope - 1
    if mode == "affine":
        return affine, slope.expand_as(h), torch.zeros_like(h)
    z = torch.tanh(affine)
    first = slope * (1 - z**2)
    return z, first, -2 * z * first * slope


def global_basis(h: torch.Tensor, bounds: torch.Tensor, name: str, normalize: str, grid_size: int,
                 n_derivatives: int = 0) -> list[torch.Tensor]:
    """Basis ``name`` and its derivatives with respect to ``h`` (N, in): a list of ``(N, in, M)``."""
    z, z_h, z_hh = normalise(h, bounds, normalize)
    terms = GLOBAL_BASES[name].evaluate(z, grid_size, n_derivatives)
    out = [terms[0]]
    if n_derivatives >= 1:
        out.append(terms[1] * z_h.unsqueeze(-1))
    if n_derivatives >= 2:
        out.append(terms[2] * (z_h**2).unsqueeze(-1) + terms[1] * z_hh.unsqueeze(-1))
    return out
