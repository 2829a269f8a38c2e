"""B-spline bases of :mod:`kanpde.nn.splines` against scipy.interpolate.BSpline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from kanpde.nn.splines import general_basis, is_uniform, make_knots, uniform_basis, uniform_local

# Per-input grid ranges of very different widths and offsets: the bases must not assume [-1, 1].
RANGES = [(-1.0, 1.0), (0.0, 0.3), (-5.0, 20.0)]
ORDERS = [1, 2, 3, 4, 5]
GRID_SIZES = [1, 4, 11]
TOL = 1e-12  # float64 tolerance for values; derivative d is scaled by 1 / spacing^d


def uniform_knots(grid_size: int, order: int, ranges=RANGES, dtype=torch.float64) -> torch.Tensor:
    r = torch.tensor(ranges, dtype=dtype)
    return make_knots(r[:, 0], r[:, 1], grid_size, order)


def random_knots(grid_size: int, order: int, seed: int = 0, ranges=RANGES, repeat: bool = False) -> torch.Tensor:
    """Non-uniform non-decreasing knots (in, G + 2k + 1): random interior grid and random extensions.

    With ``repeat`` one interior grid point is doubled (a zero-width interval), which the Cox-de Boor
    recursion must handle through its 0/0 := 0 convention.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in ranges:
        gaps = rng.uniform(0.2, 1.0, grid_size)
        interior = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(gaps) / gaps.sum()])
        interior[-1] = hi
        if repeat:
            assert grid_size >= 3
            interior = np.sort(np.concatenate([interior[:2], [interior[1]], interior[2:-1]]))  # still G + 1 points
            interior[-1] = hi
        mean_gap = (hi - lo) / grid_size
        left = lo - np.cumsum(rng.uniform(0.3, 1.5, order) * mean_gap)[::-1]
        right = hi + np.cumsum(rng.uniform(0.3, 1.5, order) * mean_gap)
        rows.append(np.concatenate([left, interior, right]))
    return torch.tensor(np.array(rows), dtype=torch.float64)


def min_gap(knots_row: torch.Tensor) -> float:
    gaps = knots_row[1:] - knots_row[:-1]
    return float(gaps[gaps > 0].min())


def finest_gap(knots: torch.Tensor) -> float:
    return min(min_gap(row.double()) for row in knots)


def points_in(knots: torch.Tensor, order: int, n: int, seed: int, full: bool = False) -> torch.Tensor:
    """Random points (n, in) inside each input's base interval [t_k, t_n] (or its full knot range)."""
    generator = torch.Generator().manual_seed(seed)
    lo = knots[:, 0] if full else knots[:, order]
    hi = knots[:, -1] if full else knots[:, -order - 1]
    u = torch.rand(n, knots.shape[0], generator=generator, dtype=knots.dtype)
    return lo + u * (hi - lo)


def scipy_basis(t: np.ndarray, order: int, x: np.ndarray, nu: int) -> np.ndarray:
    """(N, n_basis) matrix of the nu-th derivative of every basis function, from one-hot coefficients.

    With ``extrapolate=False`` scipy defines the spline on the base interval [t[k], t[n]] only.
    """
    n_basis = len(t) - order - 1
    out = np.empty((len(x), n_basis))
    for j in range(n_basis):
        c = np.zeros(n_basis)
        c[j] = 1.0
        out[:, j] = BSpline(t, c, order, extrapolate=False)(x, nu=nu)
    assert np.all(np.isfinite(out)), "points must lie in scipy's base interval"
    return out


def scipy_basis_elements(t: np.ndarray, order: int, x: np.ndarray, nu: int) -> np.ndarray:
    """As :func:`scipy_basis` but valid on the whole knot range: each basis function on its own support."""
    n_basis = len(t) - order - 1
    out = np.empty((len(x), n_basis))
    for j in range(n_basis):
        element = BSpline.basis_element(t[j : j + order + 2], extrapolate=False)
        out[:, j] = np.nan_to_num(element(x, nu=nu), nan=0.0)
    return out


def assert_matches_scipy(bases, knots, order, x, full=False, tol=TOL):
    reference = scipy_basis_elements if full else scipy_basis
    for nu, b in enumerate(bases):
        for i in range(knots.shape[0]):
            t = knots[i].cpu().double().numpy()
            expected = torch.from_numpy(reference(t, order, x[:, i].cpu().double().numpy(), nu))
            atol = tol / min_gap(knots[i].double()) ** nu
            torch.testing.assert_close(b[:, i, :].double(), expected, atol=atol, rtol=0,
                                       msg=lambda m: f"derivative {nu}, input {i}: {m}")


# ---------------------------------------------------------------------------------------------------------
# Agreement with scipy


@pytest.mark.parametrize("grid_size", GRID_SIZES)
@pytest.mark.parametrize("order", ORDERS)
def test_uniform_basis_matches_scipy(order, grid_size):
    knots = uniform_knots(grid_size, order)
    x = points_in(knots, order, 300, seed=order * 100 + grid_size)
    bases = uniform_basis(x, knots, order, n_derivatives=2)
    assert len(bases) == 3
    for b in bases:
        assert b.shape == (300, len(RANGES), grid_size + order) and b.dtype == torch.float64
    assert_matches_scipy(bases, knots, order, x)


@pytest.mark.parametrize("grid_size", GRID_SIZES)
@pytest.mark.parametrize("order", ORDERS)
def test_general_basis_matches_scipy(order, grid_size):
    knots = random_knots(grid_size, order, seed=order * 100 + grid_size)
    assert not is_uniform(knots)
    x = points_in(knots, order, 300, seed=order)
    bases = general_basis(x, knots, order, n_derivatives=2)
    assert len(bases) == 3
    for b in bases:
        assert b.shape == (300, len(RANGES), grid_size + order)
    assert_matches_scipy(bases, knots, order, x)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_general_basis_repeated_knot_matches_scipy(order):
    knots = random_knots(6, order, seed=7, repeat=True)
    assert torch.any(knots[:, 1:] == knots[:, :-1])
    x = points_in(knots, order, 300, seed=3)
    assert_matches_scipy(general_basis(x, knots, order, n_derivatives=2), knots, order, x)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("evaluate", [uniform_basis, general_basis], ids=["uniform", "general"])
def test_basis_matches_scipy_on_full_knot_range(evaluate, order):
    """Also in the k extra intervals each side of the grid, where only some bases are non-zero."""
    knots = uniform_knots(5, order)
    x = points_in(knots, order, 400, seed=11, full=True)
    assert_matches_scipy(evaluate(x, knots, order, n_derivatives=2), knots, order, x, full=True)


@pytest.mark.parametrize("order", ORDERS)
def test_general_basis_on_full_knot_range_nonuniform(order):
    knots = random_knots(5, order, seed=5)
    x = points_in(knots, order, 400, seed=12, full=True)
    assert_matches_scipy(general_basis(x, knots, order, n_derivatives=2), knots, order, x, full=True)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("evaluate", [uniform_basis, general_basis], ids=["uniform", "general"])
def test_values_at_knots_match_scipy(evaluate, order):
    """Values are continuous for order >= 1, so exact knot points (and both grid ends) must agree too."""
    grid_size = 4
    knots = uniform_knots(grid_size, order)
    x = knots[:, order : order + grid_size + 1].T.contiguous()  # every grid point, lo and hi included
    (values,) = evaluate(x, knots, order)
    assert_matches_scipy([values], knots, order, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", [1, 3, 5])
@pytest.mark.parametrize("evaluate", [uniform_basis, general_basis], ids=["uniform", "general"])
def test_basis_dtypes(evaluate, order, dtype):
    knots = uniform_knots(6, order, dtype=dtype)
    x = points_in(knots, order, 200, seed=2)
    bases = evaluate(x, knots, order, n_derivatives=2)
    for b in bases:
        assert b.dtype == dtype
    assert_matches_scipy(bases, knots, order, x, tol=TOL if dtype == torch.float64 else 2e-5)


def test_uniform_and_general_agree_on_uniform_knots():
    for order in ORDERS:
        for grid_size in GRID_SIZES:
            knots = uniform_knots(grid_size, order)
            x = points_in(knots, order, 300, seed=order + grid_size, full=True)
            fast = uniform_basis(x, knots, order, 2)
            slow = general_basis(x, knots, order, 2)
            for d in range(3):
                scale = 1 / finest_gap(knots) ** d
                torch.testing.assert_close(fast[d], slow[d], atol=TOL * scale, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# Structural properties


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind, evaluate", [("uniform", uniform_basis), ("uniform", general_basis),
                                            ("random", general_basis)], ids=["uniform", "general", "general-random"])
def test_partition_of_unity_inside_base_interval(kind, evaluate, order):
    knots = uniform_knots(7, order) if kind == "uniform" else random_knots(7, order, seed=order)
    x = points_in(knots, order, 500, seed=4)
    x = torch.cat([x, knots[:, order : order + 8].T])  # grid points themselves, both ends included
    b, b1, b2 = evaluate(x, knots, order, 2)
    torch.testing.assert_close(b.sum(-1), torch.ones_like(b[..., 0]), atol=1e-13, rtol=0)
    assert torch.all(b >= -1e-15)
    inner = x[:-8]  # derivatives of the sum vanish (away from knots for low orders)
    scale = 1 / finest_gap(knots) ** 2
    torch.testing.assert_close(b1[: len(inner)].sum(-1), torch.zeros_like(b1[: len(inner), :, 0]),
                               atol=1e-12 * scale, rtol=0)
    torch.testing.assert_close(b2[: len(inner)].sum(-1), torch.zeros_like(b2[: len(inner), :, 0]),
                               atol=1e-12 * scale, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("evaluate", [uniform_basis, general_basis], ids=["uniform", "general"])
def test_zero_outside_knot_range(evaluate, order):
    knots = uniform_knots(5, order)
    first, last = knots[:, 0], knots[:, -1]
    width = last - first
    x = torch.stack([
        first - 1e-9 * width, first - 0.5 * width, first - 1e6,
        last + 1e-9 * width, last + 0.5 * width, last + 1e6,
    ])
    for b in evaluate(x, knots, order, 2):
        torch.testing.assert_close(b, torch.zeros_like(b), atol=0, rtol=0)
    # The last knot itself: half-open intervals give zero there (up to round-off of the uniform path,
    # whose last basis tends continuously to zero).
    (b,) = evaluate(last[None], knots, order)
    torch.testing.assert_close(b, torch.zeros_like(b), atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n_derivatives", [0, 1, 2])
def test_uniform_local_consistent_with_dense(order, n_derivatives):
    grid_size = 6
    knots = uniform_knots(grid_size, order)
    n_basis, n_intervals = grid_size + order, grid_size + 2 * order
    inside = points_in(knots, order, 300, seed=9, full=True)
    outside = torch.stack([knots[:, 0] - 1.0, knots[:, -1] + 1.0])
    x = torch.cat([inside, outside])
    local, interval = uniform_local(x, knots, order, n_derivatives)
    dense = uniform_basis(x, knots, order, n_derivatives)
    assert local.shape == (n_derivatives + 1, len(x), knots.shape[0], order + 1)
    assert interval.dtype == torch.long and interval.shape == x.shape
    assert int(interval.min()) >= 0 and int(interval.max()) <= n_intervals - 1
    # The interval index is the knot interval containing the point.
    expected_interval = torch.searchsorted(knots.contiguous(), inside.T.contiguous(), right=True).T - 1
    assert torch.equal(interval[: len(inside)], expected_interval)
    # Outside the knots, everything vanishes.
    torch.testing.assert_close(local[:, len(inside):], torch.zeros_like(local[:, len(inside):]), atol=0, rtol=0)
    # Rebuild the dense basis from the local one: active basis r of interval j is B_{j-k+r}.
    rebuilt = torch.zeros(n_derivatives + 1, len(x), knots.shape[0], n_basis)
    for r in range(order + 1):
        index = interval - order + r
        valid = (index >= 0) & (index < n_basis)
        for d in range(n_derivatives + 1):
            contribution = torch.zeros_like(rebuilt[d])
            contribution.scatter_(-1, index.clamp(0, n_basis - 1).unsqueeze(-1),
                                  torch.where(valid, local[d, ..., r], 0.0).unsqueeze(-1))
            rebuilt[d] += contribution
    for d in range(n_derivatives + 1):
        torch.testing.assert_close(rebuilt[d], dense[d], atol=0, rtol=0)


@pytest.mark.parametrize("order", ORDERS)
def test_uniform_local_derivatives_are_autograd_derivatives(order):
    knots = uniform_knots(5, order)
    x = points_in(knots, order, 200, seed=21, full=True).requires_grad_(True)
    local, _ = uniform_local(x, knots, order, 2)
    for d in range(2):
        for r in range(order + 1):
            (grad,) = torch.autograd.grad(local[d, ..., r].sum(), x, retain_graph=True)
            scale = 1 / finest_gap(knots) ** (d + 1)
            torch.testing.assert_close(grad, local[d + 1, ..., r].detach(), atol=1e-12 * scale, rtol=0)


def test_make_knots():
    for order in ORDERS:
        for grid_size in GRID_SIZES:
            knots = uniform_knots(grid_size, order)
            assert knots.shape == (len(RANGES), grid_size + 2 * order + 1)
            lo, hi = torch.tensor(RANGES).T
            torch.testing.assert_close(knots[:, order], lo, atol=1e-14, rtol=0)
            torch.testing.assert_close(knots[:, order + grid_size], hi, atol=1e-13, rtol=1e-15)
            gaps = knots[:, 1:] - knots[:, :-1]
            torch.testing.assert_close(gaps, ((hi - lo) / grid_size)[:, None].expand_as(gaps), atol=1e-13, rtol=1e-12)


def test_is_uniform():
    knots = uniform_knots(7, 3)
    assert is_uniform(knots)
    assert is_uniform(uniform_knots(1, 1))
    assert not is_uniform(random_knots(7, 3))
    perturbed = knots.clone()
    perturbed[2, 5] += 1e-6 * (knots[2, 1] - knots[2, 0])  # only one input, one knot
    assert not is_uniform(perturbed)
    assert is_uniform(perturbed, rtol=1e-5)
    tiny = knots.clone()
    tiny[0, 4] += 1e-13 * (knots[0, 1] - knots[0, 0])  # round-off level: still uniform
    assert is_uniform(tiny)
    assert is_uniform(make_knots(torch.tensor([100.0]), torch.tensor([100.001]), 20, 3))
