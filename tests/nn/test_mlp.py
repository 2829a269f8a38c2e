"""The MLP baseline of :mod:`kanpde.nn.mlp`: forward derivatives, input scaling, validation, seeding, dtypes."""

from __future__ import annotations

import copy

import pytest
import torch

from kanpde.nn import MLP, count_parameters
from kanpde.nn.mlp import ACTIVATIONS

RANGES = [(0.0, 2.0), (-3.0, 5.0), (10.0, 10.5)]  # deliberately not [-1, 1]
WIDTHS = [[1, 1], [2, 8, 1], [3, 16, 16, 2]]
TOL = 1e-10


def points(n_in: int, n: int = 64, seed: int = 0, spread: float = 0.15) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    r = torch.tensor(RANGES[:n_in])
    lo, width = r[:, 0], r[:, 1] - r[:, 0]
    return lo - spread * width + torch.rand(n, n_in, generator=generator) * (1 + 2 * spread) * width


def jet_loss(value, first, second):
    return (second.sum(dim=1) ** 2).mean() + (value**2).mean() + 0.5 * (first**2).mean()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_derivatives(activation):
    z = torch.linspace(-6, 6, 1001, requires_grad=True)
    f0, f1, f2 = ACTIVATIONS[activation](z)
    (g1,) = torch.autograd.grad(f0.sum(), z, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), z)
    torch.testing.assert_close(f1, g1, atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(f2, g2, atol=1e-13, rtol=1e-13)


@pytest.mark.parametrize("widths", WIDTHS, ids=str)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_forward_jet_matches_autograd(activation, widths, autograd_jet):
    model = MLP(widths, activation=activation, input_range=RANGES[: widths[0]], seed=1)
    x = points(widths[0])
    jet = model.forward_jet(x)
    value, first, second = autograd_jet(model, x)
    n, d, n_out = x.shape[0], widths[0], widths[-1]
    assert jet.value.shape == (n, n_out) and jet.first.shape == jet.second.shape == (n, d, n_out)
    torch.testing.assert_close(jet.value, value, atol=TOL, rtol=TOL)
    torch.testing.assert_close(jet.first, first, atol=TOL, rtol=TOL)
    torch.testing.assert_close(jet.second, second, atol=TOL, rtol=TOL)
    torch.testing.assert_close(jet.laplacian(), second.sum(dim=1), atol=TOL, rtol=TOL)
    if len(widths) > 2:  # a linear [1, 1] map has zero second derivative; deeper nets must not be trivial
        assert value.abs().max() > 1e-2 and first.abs().max() > 1e-2 and second.abs().max() > 1e-2
    parameters = list(model.parameters())
    grads = torch.autograd.grad(jet_loss(jet.value, jet.first, jet.second), parameters)
    reference = torch.autograd.grad(jet_loss(value, first, second), parameters)
    for (name, _), g, r in zip(model.named_parameters(), grads, reference):
        torch.testing.assert_close(g, r, atol=TOL, rtol=TOL, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_input_range_is_an_affine_map_onto_unit_cube(activation):
    """MLP(input_range) at x equals MLP((-1, 1)) at the mapped x', and derivatives pick up 1 / half width."""
    scaled = MLP([3, 16, 1], activation=activation, input_range=RANGES, seed=5)
    plain = MLP([3, 16, 1], activation=activation, seed=5)
    x = points(3, 50, seed=2)
    r = torch.tensor(RANGES)
    center, half = (r[:, 0] + r[:, 1]) / 2, (r[:, 1] - r[:, 0]) / 2
    a, b = scaled.forward_jet(x), plain.forward_jet((x - center) / half)
    torch.testing.assert_close(a.value, b.value, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(a.first, b.first / half[:, None], atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(a.second, b.second / half[:, None] ** 2, atol=1e-14, rtol=1e-12)


def test_single_pair_input_range_applies_to_every_input():
    a = MLP([2, 8, 1], input_range=(0.0, 4.0), seed=2)
    b = MLP([2, 8, 1], input_range=[(0.0, 4.0), (0.0, 4.0)], seed=2)
    x = torch.rand(20, 2, generator=torch.Generator().manual_seed(0)) * 4
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
    torch.testing.assert_close(a.center, torch.tensor([2.0, 2.0]), atol=0, rtol=0)
    torch.testing.assert_close(a.half_width, torch.tensor([2.0, 2.0]), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("activation", ["relu", "Tanh", ""])
def test_rejects_unknown_activation(activation):
    expected = rf"unknown activation {activation!r}; choose one of \['silu', 'sin', 'tanh'\]"
    with pytest.raises(ValueError, match=expected):
        MLP([2, 3, 1], activation=activation)


@pytest.mark.parametrize("input_range", [
    (1.0, 0.0), (1.0, 1.0), (float("nan"), 1.0), (0.0, float("inf")), [(0.0, 1.0), (2.0, 1.0)],
    [(0.0, 1.0)], [(0.0, 1.0)] * 3, 0.5,
], ids=str)
def test_rejects_bad_input_range(input_range):
    with pytest.raises(ValueError, match="input_range must be finite"):
        MLP([2, 3, 1], input_range=input_range)


def test_rejects_input_range_of_wrong_length():
    with pytest.raises(ValueError, match="input_range"):
        MLP([2, 3, 1], input_range=(0.0, 1.0, 2.0))


@pytest.mark.parametrize("widths", [[], [2], [2, 0, 1], [0, 1]], ids=str)
def test_rejects_bad_widths(widths):
    with pytest.raises(ValueError, match="widths must list at least two positive sizes"):
        MLP(widths)


# ---------------------------------------------------------------------------------------------------------
# Parameters and seeding


def test_count_parameters_mlp():
    model = MLP([2, 100, 100, 100, 100, 1])
    assert count_parameters(model) == 30701  # 2*100+100 + 3*(100*100+100) + 100+1
    model.linears[0].weight.requires_grad_(False)
    model.linears[-1].bias.requires_grad_(False)
    assert count_parameters(model) == 30701 - 200 - 1


def test_initialisation_is_xavier_normal_with_zero_bias():
    model = MLP([2, 200, 200, 1], seed=0)
    weight = model.linears[1].weight.detach()
    assert abs(float(weight.std()) / (2 / 400) ** 0.5 - 1) < 0.02
    assert abs(float(weight.mean())) < 0.01
    assert all(torch.equal(linear.bias, torch.zeros_like(linear.bias)) for linear in model.linears)


def test_seeding():
    a, b, c = MLP([2, 8, 1], seed=3), MLP([2, 8, 1], seed=3), MLP([2, 8, 1], seed=4)
    for p, q, r in zip(a.linears, b.linears, c.linears):
        assert torch.equal(p.weight, q.weight)
        assert not torch.equal(p.weight, r.weight)
    x, y = MLP([2, 8, 1], seed=None), MLP([2, 8, 1], seed=None)
    assert not torch.equal(x.linears[0].weight, y.linears[0].weight)


@pytest.mark.parametrize("seed", [0, None])
def test_construction_leaves_global_rng_alone(seed):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    MLP([2, 16, 16, 1], seed=seed)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------------------
# dtype, state_dict


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_float32_matches_float64(activation):
    model = MLP([3, 16, 16, 2], activation=activation, input_range=RANGES, seed=1)
    x = points(3, 200, seed=3)
    jet64 = model.forward_jet(x)
    model32 = copy.deepcopy(model).to(torch.float32)
    jet32 = model32.forward_jet(x.to(torch.float32))
    for name, a, b in zip(("value", "first", "second"), (jet32.value, jet32.first, jet32.second),
                          (jet64.value, jet64.first, jet64.second)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, atol=1e-5 * float(b.detach().abs().max()), rtol=0,
                                   msg=lambda m: f"{name}: {m}")


def test_state_dict_round_trip(tmp_path):
    model = MLP([3, 16, 16, 2], activation="sin", input_range=RANGES, seed=1)
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    fresh = MLP([3, 16, 16, 2], activation="sin", seed=2)  # default range: restored from the buffers
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = points(3, 50)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    a, b = fresh.forward_jet(x), model.forward_jet(x)
    for u, v in zip((a.value, a.first, a.second), (b.value, b.first, b.second)):
        torch.testing.assert_close(u, v, atol=0, rtol=0)
