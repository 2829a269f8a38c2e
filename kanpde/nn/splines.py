"""B-spline bases and their first two derivatives.

Notation: a spline of order ``k`` (degree k) on a grid of ``grid_size`` intervals over ``[lo, hi]`` uses
``grid_size + 2k + 1`` knots (``k`` extra knots on each side) and ``grid_size + k`` basis functions.
A point outside ``[knots[0], knots[-1]]`` has every basis value zero, as in pykan.

Two evaluations are provided:

* :func:`uniform_basis` for uniformly spaced knots (the default, and the fast path). It finds the knot
  interval of each point and evaluates the ``k + 1`` non-zero cardinal B-spline pieces as polynomials of
  the local coordinate ``u in [0, 1)``: ``B = [1, u, ..., u^k] @ P`` with a constant ``(k+1, k+1)``
  matrix ``P``. Derivatives differentiate the power vector, so all three are three small matmuls.
* :func:`general_basis` for arbitrary non-decreasing knots (adapted grids), by the Cox-de Boor recursion
  and the derivative formula of de Boor, *A Practical Guide to Splines* (2001), ch. X, eq. (12).

Both return dense tensors of shape ``(N, in, n_basis)``; a network multiplies them with its coefficients
in one matmul, which is faster on CPU and GPU than gathering the ``k + 1`` active coefficients.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb

import torch


def make_knots(lo: torch.Tensor, hi: torch.Tensor, grid_size: int, order: int) -> torch.Tensor:
    """Uniform knots ``(in, grid_size + 2*order + 1)`` covering ``[lo_i, hi_i]`` per input ``i``."""
    spacing = (hi - lo) / grid_size  # (in,)
    steps = torch.arange(-order, grid_size + order + 1, dtype=lo.dtype, device=lo.device)
    return lo[:, None] + steps[None, :] * spacing[:, None]


@lru_cache(maxsize=None)
def _cardinal_pieces(order: int) -> tuple[tuple[Fraction, ...], ...]:
    """Exact polynomial pieces of the cardinal B-spline of degree ``order`` on knots 0..order+1.

    Returns ``order + 1`` tuples of power-series coefficients in ``s`` (piece ``j`` lives on [j, j+1)),
    from the recursion N_k(s) = s/k N_{k-1}(s) + (k+1-s)/k N_{k-1}(s-1).
    """
    pieces = [(Fraction(1),)]  # N_0 = 1 on [0, 1)

    def shift(poly, by):  # p(s) -> p(s - by), coefficients in s
        out = [Fraction(0)] * len(poly)
        for power, c in enumerate(poly):
            for j in range(power + 1):
                out[j] += c * comb(power, j) * (-by) ** (power - j)
        return out

    def mul_linear(poly, a, b):  # (a + b s) * p(s)
        out = [Fraction(0)] * (len(poly) + 1)
        for power, c in enumerate(poly):
            out[power] += a * c
            out[power + 1] += b * c
        return out

    for k in range(1, order + 1):
        new = []
        for j in range(k + 1):
            left = pieces[j] if j < k else (Fraction(0),)
            right = shift(pieces[j - 1], 1) if j >= 1 else (Fraction(0),)
            term = [Fraction(0)] * (k + 1)
            for p, c in enumerate(mul_linear(left, Fraction(0), Fraction(1, k))):
                term[p] += c
            for p, c in enumerate(mul_linear(right, Fraction(k + 1, k), Fraction(-1, k))):
                term[p] += c
            new.append(tuple(term))
        pieces = new
    return tuple(pieces)


@lru_cache(maxsize=None)
def _local_matrix(order: int) -> tuple[tuple[float, ...], ...]:
    """Matrix ``P`` (k+1, k+1): the r-th active basis at local coordinate u is sum_p u^p P[p][r].

    For a point in knot interval j the active bases are B_{j-k+r}, r = 0..k, and
    B_{j-k+r}(x) = N_k(u + k - r): piece ``k - r`` of the cardinal spline, re-expanded in u.
    """
    pieces = _cardinal_pieces(order)
    cols = []
    for r in range(order + 1):
        piece = pieces[order - r]  # polynomial in s on [k-r, k-r+1); s = u + (k - r)
        offset = order - r
        col = [Fraction(0)] * (order + 1)
        for power, c in enumerate(piece):
            for j in range(power + 1):
                col[j] += c * comb(power, j) * Fraction(offset) ** (power - j)
        cols.append(col)
    return tuple(tuple(float(cols[r][p]) for r in range(order + 1)) for p in range(order + 1))


@lru_cache(maxsize=None)
def _local_derivative_matrices(order: int, n_derivatives: int) -> tuple:
    """``(n_derivatives + 1, k+1, k+1)``: the local matrix P of :func:`_local_matrix` differentiated m times
    in u (m = 0..n_derivatives), so that [1, u, ..., u^k] @ result[m] is the m-th u-derivative."""
    local = _local_matrix(order)
    result, current = [], [list(row) for row in local]
    for _ in range(n_derivatives + 1):
        result.append(tuple(tuple(row) for row in current))
        # d/du sum_p u^p c_p = sum_p u^p (p + 1) c_{p+1}
        current = [[(p + 1) * current[p + 1][r] if p + 1 <= order else 0.0 for r in range(order + 1)]
                   for p in range(order + 1)]
    return tuple(result)


def uniform_local(x: torch.Tensor, knots: torch.Tensor, order: int, n_derivatives: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k + 1`` non-zero basis values (and derivatives) per point and input, on uniform knots.

    Args:
        x: points ``(N, in)``.
        knots: uniform knots ``(in, n_knots)``; only the first knot and the spacing are read.
        order: spline order k.
        n_derivatives: 0, 1 or 2; how many derivatives with respect to x to return as well.

    Returns:
        ``local`` ``(n_derivatives + 1, N, in, k + 1)`` and ``interval`` ``(N, in)`` (long): the active
        bases at a point of knot interval j are B_{j-k+r}, r = 0..k, and ``local[d, ..., r]`` is the d-th
        derivative of B_{j-k+r}. Outside the knots ``local`` is zero and ``interval`` is clamped.
    """
    n_intervals = knots.shape[1] - 1
    start, spacing = knots[:, 0], (knots[:, -1] - knots[:, 0]) / n_intervals  # (in,)
    s = (x - start) / spacing  # (N, in), position in units of knot spacing
    interval = torch.floor(s.detach())
    inside = ((interval >= 0) & (interval < n_intervals)).unsqueeze(-1)
    interval = interval.clamp(0, n_intervals - 1)
    u = (s - interval).unsqueeze(-1)  # (N, in, 1), in [0, 1) inside the grid

    # d^m/du^m of [1, u, ..., u^k] @ P is [1, u, ..., u^k] @ (D^m P), D the power-basis derivative matrix.
    matrices = torch.tensor(_local_derivative_matrices(order, n_derivatives), dtype=x.dtype, device=x.device)
    powers = [torch.ones_like(u)]
    for _ in range(order):  # repeated products, not u ** p: pow's derivative at u = 0 is not safe to nest
        powers.append(powers[-1] * u)
    u_pow = torch.cat(powers, dim=-1)  # (N, in, k+1)
    scale = spacing.unsqueeze(-1) ** -torch.arange(n_derivatives + 1, device=x.device)  # (in, K): du/dx = 1/h
    # One (N in, k+1) x (k+1, K (k+1)) product: a broadcast batched matmul of tiny matrices is ~10x slower on CPU.
    n_orders, width = matrices.shape[0], order + 1
    stacked = matrices.permute(1, 0, 2).reshape(width, n_orders * width)  # (k+1, K (k+1))
    values = (u_pow.reshape(-1, width) @ stacked).reshape(*u_pow.shape[:2], n_orders, width).permute(2, 0, 1, 3)
    values = values * scale.T[:, None, :, None]  # (K, N, in, k+1)
    return torch.where(inside, values, torch.zeros((), dtype=x.dtype, device=x.device)), interval.long()


def uniform_basis(x: torch.Tensor, knots: torch.Tensor, order: int, n_derivatives: int = 0) -> list[torch.Tensor]:
    """Dense basis values (and derivatives) on uniform knots, from :func:`uniform_local`.

    Returns:
        ``[B, B', B'']`` (as many as asked), each ``(N, in, n_knots - order - 1)``.
    """
    n_intervals = knots.shape[1] - 1
    n_basis = n_intervals - order
    local, interval = uniform_local(x, knots, order, n_derivatives)
    index = interval.unsqueeze(-1) + torch.arange(order + 1, device=x.device)  # (N, in, k+1)
    # Active basis r of interval j is basis j - k + r; position j + r in a buffer padded by k.
    padded = torch.zeros(*local.shape[:3], n_intervals + order, dtype=x.dtype, device=x.device)
    padded = padded.scatter(-1, index.expand_as(local), local)
    return list(padded[..., order : order + n_basis].unbind(0))


def general_basis(x: torch.Tensor, knots: torch.Tensor, order: int, n_derivatives: int = 0) -> list[torch.Tensor]:
    """Basis values (and derivatives) on arbitrary non-decreasing knots, by Cox-de Boor.

    Args, returns: as :func:`uniform_basis`. Intervals are half-open, so a point equal to the last
    knot gets zero, like points outside the knots.
    """
    t = knots.unsqueeze(0)  # (1, in, n_knots)
    xx = x.unsqueeze(-1)  # (N, in, 1)
    degree0 = ((xx >= t[..., :-1]) & (xx < t[..., 1:])).to(x.dtype)  # (N, in, n_knots - 1)
    bases = [degree0]  # bases[d]: degree-d basis, (N, in, n_knots - 1 - d)

    def ratio(num, den):
        safe = torch.where(den == 0, torch.ones_like(den), den)
        return torch.where(den == 0, torch.zeros_like(num), num / safe)

    for d in range(1, order + 1):
        prev = bases[-1]
        left = ratio(xx - t[..., : -d - 1], t[..., d:-1] - t[..., : -d - 1]) * prev[..., :-1]
        right = ratio(t[..., d + 1 :] - xx, t[..., d + 1 :] - t[..., 1:-d]) * prev[..., 1:]
        bases.append(left + right)

    def derivative(coeffs_degree, values):
        """d/dx of degree-p bases expressed with degree-(p-1) ``values``: de Boor's formula."""
        p = coeffs_degree
        a = ratio(torch.full_like(t[..., : -p - 1], float(p)), t[..., p:-1] - t[..., : -p - 1])
        b = ratio(torch.full_like(t[..., : -p - 1], float(p)), t[..., p + 1 :] - t[..., 1:-p])
        return a * values[..., :-1] - b * values[..., 1:]

    result = [bases[order]]
    if n_derivatives >= 1:
        result.append(derivative(order, bases[order - 1]) if order >= 1 else torch.zeros_like(bases[0]))
    if n_derivatives >= 2:
        if order >= 2:
            first_lower = derivative(order - 1, bases[order - 2])  # derivative of degree-(k-1) bases
            result.append(derivative(order, first_lower))
        else:
            result.append(torch.zeros_like(result[0]))
    return result


def is_uniform(knots: torch.Tensor, rtol: float = 1e-9) -> bool:
    """Whether every row of ``knots`` (in, n_knots) is uniformly spaced."""
    gaps = knots[:, 1:] - knots[:, :-1]
    # Allow the round-off of knots stored in the working dtype (float32 knots of a uniform grid are not
    # exactly uniform).
    tolerance = rtol * gaps[:, :1].abs() + 8 * torch.finfo(knots.dtype).eps * knots.abs().amax(dim=1, keepdim=True)
    return bool(torch.all((gaps - gaps[:, :1]).abs() <= tolerance))
