"""The KAN of :mod:`kanpde.nn.kan`: forward derivatives, grid extension and update, validation, seeding, dtypes."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from scipy.stats import linregress

from kanpde.nn import KAN, KANLayer, count_parameters
from kanpde.nn.kan import _least_squares, _padded_range

RANGES = [(-1.0, 1.0), (0.0, 2.0), (-3.0, -1.0)]  # first-layer grid range per input
WIDTHS = [[1, 1], [2, 3, 1], [3, 4, 4, 2]]
TOL = 1e-10


def points(n_in: int, n: int = 64, seed: int = 0, spread: float = 0.15) -> torch.Tensor:
    """Random points in the first-layer ranges, widened by ``spread`` of the width each side.

    The widening reaches past the grid (into the k extra knot intervals, and for fine grids beyond the
    last knot, where the spline branch vanishes).
    """
    generator = torch.Generator().manual_seed(seed)
    r = torch.tensor(RANGES[:n_in])
    lo, width = r[:, 0], r[:, 1] - r[:, 0]
    return lo - spread * width + torch.rand(n, n_in, generator=generator) * (1 + 2 * spread) * width


def make_kan(widths, grid_size=7, order=3, seed=1, noise_scale=1.0) -> KAN:
    return KAN(widths, grid_size=grid_size, order=order, grid_range=RANGES[: widths[0]],
               noise_scale=noise_scale, seed=seed)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def jet_loss(value, first, second):
    laplacian = second.sum(dim=1)
    return (laplacian**2).mean() + (value**2).mean() + 0.5 * (first**2).mean()


def assert_jet_matches_autograd(model, x, autograd_jet, tol=TOL):
    jet = model.forward_jet(x)
    value, first, second = autograd_jet(model, x)
    n, d, n_out = x.shape[0], x.shape[1], model.widths[-1]
    assert jet.value.shape == (n, n_out)
    assert jet.first.shape == jet.second.shape == (n, d, n_out)
    assert jet.value.dtype == x.dtype
    torch.testing.assert_close(jet.value, value, atol=tol, rtol=tol)
    torch.testing.assert_close(jet.first, first, atol=tol, rtol=tol)
    torch.testing.assert_close(jet.second, second, atol=tol, rtol=tol)
    torch.testing.assert_close(jet.laplacian(), second.sum(dim=1), atol=tol, rtol=tol)
    # The functions are not trivially small, or the comparison above would be vacuous.
    assert value.abs().max() > 1e-2 and first.abs().max() > 1e-2 and second.abs().max() > 1e-2
    # Parameter gradients of a PINN-like loss built from the jet.
    names, parameters = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(jet_loss(jet.value, jet.first, jet.second), parameters)
    reference = torch.autograd.grad(jet_loss(value, first, second), parameters)
    for name, g, r in zip(names, grads, reference):
        torch.testing.assert_close(g, r, atol=tol, rtol=tol, msg=lambda m: f"gradient of {name}: {m}")
    assert max(r.abs().max() for r in reference) > 1e-3


# ---------------------------------------------------------------------------------------------------------
# Forward derivatives


@pytest.mark.parametrize("grid_size", [3, 7, 20])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("widths", WIDTHS, ids=str)
def test_forward_jet_matches_autograd(widths, order, grid_size, autograd_jet):
    model = make_kan(widths, grid_size, order)
    assert all(layer.uniform for layer in model.layers)
    assert_jet_matches_autograd(model, points(widths[0]), autograd_jet)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_forward_jet_matches_autograd_far_outside_grid(order, autograd_jet):
    """Points well beyond every knot: only the silu branch remains, derivatives must still agree."""
    model = make_kan([2, 3, 1], 5, order)
    x = points(2, 64, seed=3, spread=1.5)
    jet = model.forward_jet(x)
    value, first, second = autograd_jet(model, x)
    for a, b in zip((jet.value, jet.first, jet.second), (value, first, second)):
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("order", [2, 3, 5])
@pytest.mark.parametrize("widths", WIDTHS, ids=str)
def test_forward_jet_matches_autograd_adaptive_grid(widths, order, autograd_jet):
    model = make_kan(widths, 5, order)
    samples = points(widths[0], 300, seed=5, spread=0.0)
    adapted = model.extend_grid(9, samples, adaptive=0.5)
    assert not any(layer.uniform for layer in adapted.layers)
    assert all(layer.grid_size == 9 and layer.knots.shape[1] == 9 + 2 * order + 1 for layer in adapted.layers)
    assert_jet_matches_autograd(adapted, points(widths[0], seed=6), autograd_jet)


def test_forward_jet_uniform_and_general_paths_agree():
    """The gather-based uniform path and the dense Cox-de Boor path give the same jet on uniform knots."""
    model = make_kan([3, 4, 4, 2], 7, 3)
    x = points(3, 100, seed=8)
    fast = model.forward_jet(x)
    for layer in model.layers:
        layer.uniform = False
    slow = model.forward_jet(x)
    for a, b in zip((fast.value, fast.first, fast.second), (slow.value, slow.first, slow.second)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Grid extension


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("widths, tol", [([2, 5, 1], 1e-6), ([2, 5, 3, 1], 1e-4)], ids=["one-hidden", "two-hidden"])
def test_extend_grid_to_multiples_keeps_outputs(widths, tol, order, seed):
    """5 -> 10 -> 20 on the same samples, after update_grid. Measured (seeds 0-3, relative max error on the
    samples): <= 6e-8 with one hidden layer (the nested refit is exact up to the ridge of the least
    squares), <= 3e-6 with two (update_grid puts the last grid on the activations of the *old* network,
    see test_update_grid_hidden_grids_span_the_updated_activations, so the extension is not nested)."""
    model = make_kan(widths, 5, order, seed=seed)
    samples = points(2, 400, seed=10, spread=0.0)
    model.update_grid(samples)
    reference = model(samples)
    knots_before = [layer.knots.clone() for layer in model.layers]
    previous = model
    for new_size in (10, 20):
        extended = previous.extend_grid(new_size, samples)
        assert isinstance(extended, KAN) and extended.widths == widths and extended.order == order
        assert extended.grid_size == new_size and all(layer.grid_size == new_size for layer in extended.layers)
        assert all(layer.uniform for layer in extended.layers)
        # The first layer keeps its domain range.
        k = order
        torch.testing.assert_close(extended.layers[0].knots[:, [k, k + new_size]], model.layers[0].knots[:, [k, k + 5]],
                                   atol=1e-14, rtol=0)
        assert relative_error(extended(samples), reference) < tol
        previous = extended
    # The original model is untouched, and the new one does not share parameters with it.
    for layer, knots in zip(model.layers, knots_before):
        assert torch.equal(layer.knots, knots)
    torch.testing.assert_close(model(samples), reference, atol=0, rtol=0)
    with torch.no_grad():
        previous.layers[0].scale_base.add_(1.0)
    torch.testing.assert_close(model(samples), reference, atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("widths", [[2, 5, 1], [2, 5, 3, 1]], ids=str)
def test_extend_grid_non_multiple(widths, order, seed):
    """5 -> 7: the old spline space is not nested in the new one, so the fit is approximate.
    Measured 0.15 % to 4.8 % relative (max over the samples) for seeds 0-3; asserted < 10 %."""
    model = make_kan(widths, 5, order, seed=seed)
    samples = points(2, 400, seed=10, spread=0.0)
    model.update_grid(samples)
    error = relative_error(model.extend_grid(7, samples)(samples), model(samples))
    assert error < 0.1


@pytest.mark.parametrize("adaptive", [0.5, 1.0])
def test_extend_grid_adaptive_knots(adaptive):
    model = make_kan([2, 5, 1], 5, 3, seed=0)
    samples = points(2, 400, seed=10, spread=0.0)
    model.update_grid(samples)
    extended = model.extend_grid(20, samples, adaptive=adaptive)
    k, g = 3, 20
    for layer, h in zip(extended.layers, model.layer_inputs(samples)):
        knots = layer.knots
        assert not layer.uniform
        assert torch.all(knots[:, 1:] > knots[:, :-1])
        # Interior knots blend the uniform grid with the sample quantiles; the ends stay put.
        uniform = torch.linspace(0, 1, g + 1) * (knots[:, k + g] - knots[:, k])[:, None] + knots[:, k : k + 1]
        quantiles = torch.quantile(h, torch.linspace(0, 1, g + 1), dim=0).T
        expected = (1 - adaptive) * uniform + adaptive * quantiles
        torch.testing.assert_close(knots[:, k + 1 : k + g], expected[:, 1:-1], atol=1e-12, rtol=0)
    # Measured 6e-5 to 3e-4 relative on the samples (seeds 0-2): the function barely changes.
    assert relative_error(extended(samples), model(samples)) < 2e-3


def test_adaptive_knots_never_coincide_where_samples_repeat():
    """A third of the samples sit exactly on x = 1 (boundary points): quantile knots used to pile up there,
    with zero-width intervals outside, and every first-layer spline vanished at x = 1."""
    from kanpde.nn.kan import MIN_INTERVAL

    generator = torch.Generator().manual_seed(0)
    inside = torch.rand(600, 2, generator=generator, dtype=torch.float64) * 2 - 1
    on_edge = torch.cat([torch.ones(300, 1, dtype=torch.float64), inside[:300, 1:]], dim=1)
    samples = torch.cat([inside, on_edge])
    model = KAN([2, 3, 1], grid_size=5, grid_range=[(-1, 1), (-1, 1)], seed=0).double()
    model.update_grid(samples)  # hidden grids cover the activations, so only the knots can spoil the fit
    for adaptive in (0.5, 1.0):
        extended = model.extend_grid(20, samples, adaptive=adaptive)
        knots = extended.layers[0].knots
        gaps = knots[:, 1:] - knots[:, :-1]
        # at least MIN_INTERVAL of the uniform spacing, less the rescaling back onto the range
        spacing = (knots[:, -4] - knots[:, 3]) / 20
        assert torch.all(gaps >= 0.5 * MIN_INTERVAL * spacing[:, None]), gaps.min()
        coarse = model.layers[0].knots  # the first layer keeps its input range
        torch.testing.assert_close(knots[:, 3], coarse[:, 3])
        torch.testing.assert_close(knots[:, -4], coarse[:, -4])
        # the splines see x = 1: the fitted model still matches the coarse one on the edge points
        assert relative_error(extended(on_edge), model(on_edge)) < 1e-2


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_spline_least_squares_convergence_rate(order):
    """Fitting sin(3x) on [-1, 1] with a [1, 1] KAN spline: max error ~ G^-(k+1)."""
    f = lambda x: torch.sin(3 * x)  # noqa: E731
    x_fit = torch.linspace(-1, 1, 2001)[:, None]
    x_test = torch.rand(3000, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sizes, errors = [4, 8, 16, 32], []
    for grid_size in sizes:
        layer = KAN([1, 1], grid_size=grid_size, order=order).layers[0]
        (basis,) = layer.basis(x_fit)  # (N, 1, M)
        coef = _least_squares(basis.transpose(0, 1), f(x_fit)[None])  # (1, M, 1)
        with torch.no_grad():  # the same spline through the network: no base branch, unit spline weight
            layer.coef.copy_(coef.transpose(1, 2))
            layer.scale_base.zero_()
            layer.scale_spline.fill_(1.0)
            errors.append(float((layer(x_test) - f(x_test)).abs().max()))
    fit = linregress([math.log(s) for s in sizes], [math.log(e) for e in errors])
    # Measured slopes: -2.0, -3.2, -4.2, -5.2, -6.4 for k = 1..5.
    assert fit.slope < -(order + 1) + 0.7, (fit.slope, errors)
    assert errors[-1] < 1e-2 / 8 ** (order - 1)


# ---------------------------------------------------------------------------------------------------------
# Grid update


def _out_of_range_model(grid_size=10, seed=0) -> tuple[KAN, torch.Tensor]:
    model = KAN([2, 4, 1], grid_size=grid_size, order=3, noise_scale=1.0, seed=seed)
    samples = torch.rand(1000, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        model.layers[0].scale_base.mul_(5)  # hidden activations now spread over about [-3, 3]
    return model, samples


def test_update_grid_moves_activations_inside():
    model, samples = _out_of_range_model()
    fractions = model.fraction_outside_grid(samples)
    assert fractions[0] == 0.0 and fractions[1] > 0.05
    first_knots = model.layers[0].knots.clone()
    with pytest.warns(UserWarning, match=r"KAN layer 1: .*outside its grid.*update_grid"):
        model.warn_if_outside(samples)
    model.update_grid(samples)
    assert model.fraction_outside_grid(samples) == [0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.warn_if_outside(samples)
    assert torch.equal(model.layers[0].knots, first_knots)  # the domain grid stays unless first_layer=True
    h = model.layer_inputs(samples)[1]
    lo, hi = _padded_range(h, 0.1)
    k, g = 3, model.grid_size
    torch.testing.assert_close(model.layers[1].knots[:, k], lo, atol=1e-12, rtol=0)
    torch.testing.assert_close(model.layers[1].knots[:, k + g], hi, atol=1e-12, rtol=0)
    assert model.layers[1].uniform


def test_update_grid_hidden_grids_span_the_updated_activations():
    """After update_grid every hidden grid spans (with the margin) the activations that the *updated*
    network feeds it, as pykan's layer-by-layer update_grid_from_samples does. (Otherwise a second
    update_grid moves the knots again, and extend_grid to a multiple is not exact behind two hidden layers.)"""
    model = make_kan([2, 5, 3, 1], 5, 3, seed=0)
    samples = points(2, 400, seed=10, spread=0.0)
    model.update_grid(samples)
    for index, (layer, h) in enumerate(zip(model.layers, model.layer_inputs(samples))):
        if index == 0:
            continue
        lo, hi = _padded_range(h, 0.1)
        torch.testing.assert_close(layer.knots[:, 3], lo, atol=1e-12, rtol=0, msg=lambda m: f"layer {index}: {m}")
        torch.testing.assert_close(layer.knots[:, 3 + model.grid_size], hi, atol=1e-12, rtol=0,
                                   msg=lambda m: f"layer {index}: {m}")


def test_update_grid_first_layer_and_adaptive():
    model, samples = _out_of_range_model()
    model.update_grid(samples * 0.5, first_layer=True, adaptive=0.5)
    assert not model.layers[0].uniform and not model.layers[1].uniform
    lo, hi = _padded_range(samples * 0.5, 0.1)
    torch.testing.assert_close(model.layers[0].knots[:, 3], lo, atol=1e-12, rtol=0)
    torch.testing.assert_close(model.layers[0].knots[:, 3 + model.grid_size], hi, atol=1e-12, rtol=0)


def test_update_grid_refit_is_least_squares():
    """The new coefficients are the least-squares fit of each old edge spline on the samples: the residual
    is orthogonal to the new basis (normal equations), up to the tiny ridge."""
    model, samples = _out_of_range_model()
    layer = model.layers[1]
    h = model.layer_inputs(samples)[1]
    old_values = layer.spline_values(h).detach()
    model.update_grid(samples)
    (basis,) = layer.basis(h)  # (N, in, M)
    residual = layer.spline_values(h).detach() - old_values  # (N, in, out)
    normal = torch.einsum("nim,nio->imo", basis, residual)
    scale = torch.einsum("nim,nio->imo", basis.abs(), old_values.abs()).amax()
    assert float(normal.abs().max()) < 1e-8 * float(scale)
    assert float(residual.abs().max()) > 1e-6  # the fit is not exact here, so the check has content


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_grid_keeps_output_where_old_spline_covered(seed):
    """With smooth hidden edges, moving the hidden grid to [-3, 3]-ish changes the output little for the
    points whose hidden activations lay inside the old grid. Measured: <= 0.7 % of the hidden spline
    branch's magnitude (G = 20); keeping the old coefficients instead would change it by O(100 %)."""
    model, samples = _out_of_range_model(grid_size=20, seed=seed)
    layer = model.layers[1]
    generator = torch.Generator().manual_seed(100 + seed)
    # Smooth edges phi_io(h) = a exp(-2 h^2) cos(b h) on the old knot range, by least squares.
    grid = torch.linspace(float(layer.knots[0, 0]), float(layer.knots[0, -1]), 2000)[:, None].expand(-1, layer.n_in)
    a = torch.rand(layer.n_in, layer.n_out, generator=generator) * 2 - 1
    b = torch.rand(layer.n_in, layer.n_out, generator=generator) * 2
    target = a * torch.exp(-2 * grid[:, :, None] ** 2) * torch.cos(b * grid[:, :, None])  # (N, in, out)
    (basis,) = layer.basis(grid)
    with torch.no_grad():
        layer.coef.copy_(_least_squares(basis.transpose(0, 1), target.transpose(0, 1)).transpose(1, 2))

    h = model.layer_inputs(samples)[1]
    k, g = 3, layer.grid_size
    covered = ((h >= layer.knots[:, k]) & (h <= layer.knots[:, k + g])).all(dim=1)
    assert 100 < int(covered.sum()) < len(samples) - 100
    spline_branch = (layer.spline_values(h) * layer.scale_spline).sum(dim=1).detach()
    magnitude = float(spline_branch[covered].abs().max())
    before = model(samples).detach()
    with torch.no_grad():
        naive = copy.deepcopy(model)  # move the knots but keep the coefficients
        updated = copy.deepcopy(model)
        updated.update_grid(samples)
        naive.layers[1].knots.copy_(updated.layers[1].knots)
        change = float((updated(samples) - before)[covered].abs().max())
        naive_change = float((naive(samples) - before)[covered].abs().max())
    assert change < 0.02 * magnitude
    assert naive_change > 10 * change


def test_fraction_outside_grid_counts_entries():
    model = KAN([2, 3, 1], grid_size=5, grid_range=[(0.0, 1.0), (-1.0, 1.0)])
    x = torch.tensor([[0.5, 0.0], [1.5, 0.0], [-0.1, 2.0], [1.0, -1.0]])  # 1 is the grid end: inside
    assert model.fraction_outside_grid(x)[0] == pytest.approx(3 / 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.warn_if_outside(x)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any(m.startswith("KAN layer 0: 37.5% of activations lie outside its grid") for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.warn_if_outside(x, tolerance=0.5)


# ---------------------------------------------------------------------------------------------------------
# Validation


def _kwargs_id(value):
    if isinstance(value, dict):
        return ",".join(f"{k}={v!r}" for k, v in value.items())
    return "-"


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid_size=0), "grid_size must be an integer >= 1"),
    (dict(grid_size=-3), "grid_size must be an integer >= 1"),
    (dict(grid_size=2.5), "grid_size must be an integer >= 1"),
    (dict(order=0), r"order must be an integer >= 1"),
    (dict(order=-1), r"order must be an integer >= 1"),
    (dict(order=1.5), r"order must be an integer >= 1"),
    (dict(grid_range=(float("nan"), 1.0)), "grid_range must be finite"),
    (dict(grid_range=(0.0, float("inf"))), "grid_range must be finite"),
    (dict(grid_range=(-float("inf"), 0.0)), "grid_range must be finite"),
    (dict(grid_range=[(0.0, 1.0), (float("nan"), 1.0)]), "grid_range must be finite"),
    (dict(grid_range=(1.0, 1.0)), "lower < upper"),
    (dict(grid_range=(1.0, -1.0)), "lower < upper"),
    (dict(grid_range=[(0.0, 1.0), (2.0, 2.0)]), "lower < upper"),
    (dict(grid_range=[(0.0, 1.0)]), r"grid_range must be \(lo, hi\) or 2 pairs"),
    (dict(grid_range=[(0.0, 1.0)] * 3), r"grid_range must be \(lo, hi\) or 2 pairs"),
    (dict(grid_range=0.5), r"grid_range must be \(lo, hi\) or 2 pairs"),
], ids=_kwargs_id)
def test_kan_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KAN([2, 3, 1], **kwargs)


@pytest.mark.parametrize("grid_range", [(0.0, 1.0, 2.0), [(0.0, 1.0, 2.0), (0.0, 1.0, 2.0)]],
                         ids=["flat-3", "pairs-of-3"])
def test_kan_rejects_grid_range_of_wrong_length(grid_range):
    with pytest.raises(ValueError, match="grid_range"):
        KAN([2, 3, 1], grid_range=grid_range)


@pytest.mark.parametrize("grid_size", [float("nan"), float("inf")])
def test_kan_rejects_non_finite_grid_size(grid_size):
    with pytest.raises(ValueError, match="grid_size"):
        KAN([2, 3, 1], grid_size=grid_size)


@pytest.mark.parametrize("widths", [[], [2], [2, 0, 1], [0, 1], [2, -1]], ids=str)
def test_kan_rejects_bad_widths(widths):
    with pytest.raises(ValueError, match="widths must list at least two positive sizes"):
        KAN(widths)


@pytest.mark.parametrize("kwargs, match", [
    (dict(new_grid_size=0), "new_grid_size must be an integer >= 1"),
    (dict(new_grid_size=-5), "new_grid_size must be an integer >= 1"),
    (dict(new_grid_size=7.5), "new_grid_size must be an integer >= 1"),
    (dict(new_grid_size=float("inf")), "new_grid_size"),
    (dict(new_grid_size=10, adaptive=-0.1), r"adaptive must lie in \[0, 1\]"),
    (dict(new_grid_size=10, adaptive=1.5), r"adaptive must lie in \[0, 1\]"),
    (dict(new_grid_size=10, adaptive=float("nan")), r"adaptive must lie in \[0, 1\]"),
], ids=_kwargs_id)
def test_extend_grid_rejects_bad_arguments(kwargs, match):
    model = KAN([2, 3, 1])
    with pytest.raises(ValueError, match=match):
        model.extend_grid(samples=points(2, 20), **kwargs)


def test_layer_rejects_bad_widths():
    with pytest.raises(ValueError, match="layer widths must be >= 1"):
        KANLayer(0, 3)


# ---------------------------------------------------------------------------------------------------------
# Parameter count, seeding


def test_count_parameters_kan():
    assert count_parameters(KAN([2, 10, 1], grid_size=5, order=3)) == 300  # (2*10 + 10*1) * (5 + 3 + 2)


@pytest.mark.parametrize("widths, grid_size, order", [([1, 1], 1, 1), ([3, 4, 4, 2], 7, 2), ([2, 10, 1], 20, 5)])
def test_count_parameters_kan_formula(widths, grid_size, order):
    edges = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    assert count_parameters(KAN(widths, grid_size=grid_size, order=order)) == edges * (grid_size + order + 2)


def test_count_parameters_skips_frozen_and_shared():
    model = KAN([2, 10, 1], grid_size=5, order=3)
    model.layers[0].scale_base.requires_grad_(False)
    model.layers[1].coef.requires_grad_(False)
    assert count_parameters(model) == 300 - 2 * 10 - 10 * 8
    twice = torch.nn.ModuleList([model, model])
    assert count_parameters(twice) == count_parameters(model)


def _parameters_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_seeding():
    a = KAN([2, 5, 1], seed=3)
    b = KAN([2, 5, 1], seed=3)
    c = KAN([2, 5, 1], seed=4)
    assert _parameters_equal(a, b)
    for name in ("coef", "scale_base"):
        for la, lc in zip(a.layers, c.layers):
            assert not torch.equal(getattr(la, name), getattr(lc, name)), name
    assert not _parameters_equal(KAN([2, 5, 1], seed=None), KAN([2, 5, 1], seed=None))


@pytest.mark.parametrize("seed", [0, 7, None])
def test_construction_leaves_global_rng_alone(seed):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    model = KAN([2, 5, 5, 1], grid_size=6, seed=seed)
    samples = points(2, 50)
    model.update_grid(samples)
    model.extend_grid(8, samples, adaptive=0.3)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------------------
# dtype, device, state_dict


@pytest.mark.parametrize("adaptive", [0.0, 0.5], ids=["uniform", "adaptive"])
@pytest.mark.parametrize("grid_size", [3, 20])
@pytest.mark.parametrize("order", [2, 3, 5])
@pytest.mark.parametrize("widths", [[2, 3, 1], [3, 4, 4, 2]], ids=str)
def test_float32_matches_float64(widths, order, grid_size, adaptive):
    model = make_kan(widths, grid_size, order)
    x = points(widths[0], 200, seed=12, spread=0.0)
    if adaptive:
        model = model.extend_grid(grid_size, x, adaptive=adaptive)
    jet64 = model.forward_jet(x)
    model32 = copy.deepcopy(model).to(torch.float32)
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert all(b.dtype == torch.float32 for b in model32.buffers())
    jet32 = model32.forward_jet(x.to(torch.float32))
    assert model32(x.to(torch.float32)).dtype == torch.float32
    for name, a, b in zip(("value", "first", "second"), (jet32.value, jet32.first, jet32.second),
                          (jet64.value, jet64.first, jet64.second)):
        assert a.dtype == torch.float32
        scale = float(b.detach().abs().max())
        torch.testing.assert_close(a.double(), b, atol=1e-5 * scale, rtol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_extend_grid_without_adaptation_keeps_the_uniform_fast_path(dtype):
    model = make_kan([2, 3, 1], 5, 3).to(dtype)
    samples = points(2, 200, seed=13, spread=0.0).to(dtype)
    model.update_grid(samples)
    assert all(layer.uniform for layer in model.layers)
    assert all(layer.uniform for layer in model.extend_grid(10, samples).layers)


@pytest.mark.parametrize("adaptive", [0.0, 0.5], ids=["uniform", "adaptive"])
def test_state_dict_round_trip(tmp_path, adaptive):
    widths, order = [2, 4, 3, 1], 3
    model = make_kan(widths, 5, order)
    samples = points(2, 300, seed=14, spread=0.0)
    model.update_grid(samples)
    model = model.extend_grid(8, samples, adaptive=adaptive)
    assert all(layer.uniform == (adaptive == 0.0) for layer in model.layers)
    path = tmp_path / "kan.pt"
    torch.save(model.state_dict(), path)

    fresh = KAN(widths, grid_size=8, order=order, seed=99)
    assert all(layer.uniform for layer in fresh.layers)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert [layer.uniform for layer in fresh.layers] == [layer.uniform for layer in model.layers]
    x = points(2, 100, seed=15)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    a, b = fresh.forward_jet(x), model.forward_jet(x)
    for u, v in zip((a.value, a.first, a.second), (b.value, b.first, b.second)):
        torch.testing.assert_close(u, v, atol=0, rtol=0)


def test_state_dict_round_trip_float32_keeps_uniform_flag(tmp_path):
    model = make_kan([2, 4, 1], 5, 3).to(torch.float32)
    path = tmp_path / "kan32.pt"
    torch.save(model.state_dict(), path)
    fresh = KAN([2, 4, 1], grid_size=5, order=3).to(torch.float32)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = points(2, 50).to(torch.float32)
    torch.testing.assert_close(fresh(x), model(x), atol=1e-6, rtol=1e-6)
    assert all(layer.uniform for layer in fresh.layers)


def test_load_state_dict_with_wrong_grid_size_fails():
    state = make_kan([2, 3, 1], 5, 3).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        KAN([2, 3, 1], grid_size=6, order=3).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = make_kan([2, 4, 1], 7, 3)
    x = points(2, 100)
    expected = model.forward_jet(x)
    jet = copy.deepcopy(model).to("cuda").forward_jet(x.to("cuda"))
    for u, v in zip((jet.value, jet.first, jet.second), (expected.value, expected.first, expected.second)):
        torch.testing.assert_close(u.cpu(), v, atol=1e-10, rtol=1e-10)
