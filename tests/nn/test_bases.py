"""Global edge bases (:mod:`kanpde.nn.bases`): closed-form derivatives, KAN jets, extension, bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from kanpde.nn import KAN, KANLayer, count_parameters, model_from_spec, model_spec
from kanpde.nn.bases import GLOBAL_BASES, global_basis, normalise

from test_kan import RANGES, assert_jet_matches_autograd, points

TOL = 1e-10
SETTINGS = [("chebyshev", "affine"), ("chebyshev", "tanh"), ("fourier", "affine"), ("fourier", "tanh"),
            ("rbf", "affine"), ("rbf", "tanh")]


def make(widths, basis, normalize="affine", grid_size=6, seed=1, noise_scale=1.0) -> KAN:
    return KAN(widths, grid_size=grid_size, grid_range=RANGES[: widths[0]], noise_scale=noise_scale, seed=seed,
               basis=basis, normalize=normalize)


@pytest.mark.parametrize("grid_size", [2, 5, 12])
@pytest.mark.parametrize("basis, normalize", SETTINGS)
def test_basis_derivatives_equal_nested_autograd(basis, normalize, grid_size):
    generator = torch.Generator().manual_seed(0)
    h = (torch.rand(50, 3, generator=generator, dtype=torch.float64) * 4 - 2).requires_grad_(True)  # past [lo, hi]
    bounds = torch.tensor([[-1.0, 1.0], [0.0, 2.0], [-1.5, 0.5]], dtype=torch.float64)
    value, first, second = global_basis(h, bounds, basis, normalize, grid_size, n_derivatives=2)
    assert value.shape == (50, 3, GLOBAL_BASES[basis].size(grid_size))
    # Each basis function depends on its own input only, so the gradient of the sum is the derivative.
    ref_first = torch.stack([torch.autograd.grad(value[..., m].sum(), h, create_graph=True)[0]
                             for m in range(value.shape[-1])], dim=-1)
    ref_second = torch.stack([torch.autograd.grad(ref_first[..., m].sum(), h, retain_graph=True)[0]
                              for m in range(value.shape[-1])], dim=-1)
    torch.testing.assert_close(first, ref_first, atol=TOL, rtol=TOL)
    torch.testing.assert_close(second, ref_second, atol=TOL, rtol=TOL)
    assert second.abs().max() > 1e-2


def test_chebyshev_values_are_cos_n_arccos_and_ends_are_finite():
    z = torch.linspace(-1, 1, 201, dtype=torch.float64).unsqueeze(1)  # the ends included
    value, first, second = GLOBAL_BASES["chebyshev"].evaluate(z, 9, 2)
    n = torch.arange(10, dtype=torch.float64)
    torch.testing.assert_close(value[:, 0], torch.cos(n * torch.arccos(z)), atol=1e-12, rtol=0)
    # T_n'(1) = n^2, T_n''(1) = n^2 (n^2 - 1) / 3 (the trigonometric form is 0/0 there)
    torch.testing.assert_close(first[-1, 0], n**2, atol=1e-9, rtol=0)
    torch.testing.assert_close(second[-1, 0], n**2 * (n**2 - 1) / 3, atol=1e-8, rtol=0)


def test_tanh_normalisation_keeps_every_input_inside_and_affine_maps_the_range_exactly():
    bounds = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    h = torch.tensor([[-100.0], [0.0], [1.0], [2.0], [100.0]], dtype=torch.float64)
    affine, slope, curvature = normalise(h, bounds, "affine")
    torch.testing.assert_close(affine[1:4, 0], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.all(slope == 1.0) and torch.all(curvature == 0.0)
    squashed, _, _ = normalise(h, bounds, "tanh")
    assert torch.all(squashed.abs() <= 1.0)
    assert squashed[2, 0] == 0.0 and squashed[3, 0] == pytest.approx(math.tanh(1.0), abs=1e-15)


@pytest.mark.parametrize("widths", [[1, 1], [2, 3, 1], [3, 4, 4, 2]], ids=str)
@pytest.mark.parametrize("basis, normalize", SETTINGS)
def test_forward_jet_matches_autograd(widths, basis, normalize, autograd_jet):
    model = make(widths, basis, normalize).double()
    assert_jet_matches_autograd(model, points(widths[0]).double(), autograd_jet)


@pytest.mark.parametrize("basis", sorted(GLOBAL_BASES))
def test_count_parameters_per_basis(basis):
    model = make([2, 3, 1], basis, grid_size=7)
    per_edge = {"chebyshev": 8, "fourier": 14, "rbf": 14}[basis] + 2
    assert model.count_parameters() == count_parameters(model) == 9 * per_edge
    assert model.extend_grid(11, points(2, n=200)).count_parameters() == model.count_parameters(11)


# Extension keeps the function: Chebyshev with the affine map is exact (a degree-5 polynomial of an affine
# image of z is a degree-5 polynomial, and degree 10 contains it); tanh ranges and the other bases are not
# nested, so they are held to the tolerances measured for this model (largest of 3 seeds, x ~3).
EXTENSION_TOL = {("chebyshev", "affine"): 2e-9, ("chebyshev", "tanh"): 5e-4, ("fourier", "affine"): 5e-7,
                 ("fourier", "tanh"): 5e-5, ("rbf", "affine"): 2e-6, ("rbf", "tanh"): 5e-6}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("basis, normalize", SETTINGS)
def test_extend_grid_keeps_the_function(basis, normalize, seed):
    model = make([2, 4, 1], basis, normalize, grid_size=5, seed=seed, noise_scale=0.5).double()
    samples = points(2, n=800, seed=seed, spread=0.0).double()
    extended = model.extend_grid(10, samples)
    assert extended.grid_size == 10 and extended.basis == basis
    assert all(layer.basis_name == basis and layer.normalize == normalize for layer in extended.layers)
    with torch.no_grad():
        before, after = model(samples), extended(samples)
    error = float((after - before).abs().max() / before.abs().max())
    assert error < EXTENSION_TOL[(basis, normalize)]
    # the first layer keeps the domain; hidden layers span their activations
    torch.testing.assert_close(extended.layers[0].bounds, model.layers[0].bounds)


@pytest.mark.parametrize("basis", sorted(GLOBAL_BASES))
def test_extension_does_not_make_the_pde_loss_jump(basis):
    """Poisson loss of a model fitted for a few LM steps, before and after extension 5 -> 10."""
    from kanpde import Sampler
    from kanpde.objective import LeastSquares
    from kanpde.optim.lm import LevenbergMarquardt
    from kanpde.problems.poisson import KANPaperPoisson
    from kanpde.training import collocation

    problem = KANPaperPoisson()
    model = KAN([2, 5, 1], grid_size=5, grid_range=problem.domain.ranges, seed=0, basis=basis).double()
    pts = {k: v.double() for k, v in collocation(problem, Sampler("sobol", 256, 64, seed=0)).items()}
    objective = LeastSquares(problem, model, pts)
    optimizer = LevenbergMarquardt(list(model.parameters()))
    for _ in range(15):
        optimizer.step(objective)
    before = float(objective.loss())
    extended = model.extend_grid(10, torch.cat(list(pts.values())))
    objective.set_model(extended)
    after = float(objective.loss())
    assert before < 1e-2  # it trained: the comparison is not between two random models
    assert after == pytest.approx(before, rel=0.02)


def test_update_grid_moves_a_global_basis_range_and_keeps_the_function():
    model = make([2, 3, 1], "chebyshev", grid_size=8, noise_scale=0.5).double()
    samples = points(2, n=500, spread=0.0).double()
    before = model(samples)
    model.update_grid(samples)
    hidden = model.layers[0](samples)
    lo, hi = model.layers[1].input_range()
    assert torch.all(hidden.amin(0) >= lo) and torch.all(hidden.amax(0) <= hi)
    # degree 8 with an affine map: the same polynomial on the new range, exactly
    torch.testing.assert_close(model(samples), before, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("basis, normalize", SETTINGS)
def test_spec_and_state_dict_round_trip(basis, normalize):
    model = make([2, 3, 1], basis, normalize).double()
    model = model.extend_grid(9, points(2, n=300).double())
    copy = model_from_spec(model_spec(model)).double()
    copy.load_state_dict(model.state_dict())
    x = points(2, seed=5).double()
    torch.testing.assert_close(copy(x), model(x), atol=0, rtol=0)
    assert copy.basis == basis and copy.normalize == normalize


@pytest.mark.parametrize("kwargs, match", [
    (dict(basis="legendre"), r"unknown basis 'legendre'; choose one of bspline, chebyshev, fourier, rbf"),
    (dict(basis="chebyshev", normalize="clamp"), r"unknown input normalisation 'clamp'; choose one of affine, tanh"),
    (dict(basis="chebyshev", grid_size=1), r"basis 'chebyshev' needs grid_size >= 2 .*second derivative"),
])
def test_bad_settings_are_refused_with_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KAN([2, 3, 1], **kwargs)
    with pytest.raises(ValueError, match=match):
        KANLayer(2, 3, **{"grid_size": 5, **kwargs})


def test_extension_to_a_too_small_degree_and_adaptive_knots_are_refused():
    model = make([2, 3, 1], "chebyshev", grid_size=4)
    samples = points(2)
    with pytest.raises(ValueError, match=r"needs grid_size >= 2"):
        model.extend_grid(1, samples)
    with pytest.raises(ValueError, match=r"adaptive knots .* apply to B-splines only"):
        model.extend_grid(8, samples, adaptive=0.5)
    with pytest.raises(TypeError, match=r"has none of; use refit_range"):
        model.layers[0].refit(samples, torch.zeros(2, 10), 4)


def test_config_builds_every_basis():
    from kanpde.nn import build_kan

    for basis in ("bspline", *GLOBAL_BASES):
        model = build_kan(2, 1, [(-1, 1), (0, 1)], hidden=[4], basis=basis)
        assert model.basis == basis and model.layers[0].basis_name == basis
    with pytest.raises(ValueError, match=r"choose one of bspline, chebyshev, fourier, rbf"):
        build_kan(2, 1, [(-1, 1), (0, 1)], basis="spline")
