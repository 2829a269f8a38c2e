"""HardConstraint: jets by the product rule equal nested autograd of the composed function (float64)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from kanpde.constraints import HardConstraint, function_jet
from kanpde.derivatives import Fields, autograd_jet
from kanpde.nn import KAN, MLP

PI = math.pi


def g_scalar(x):
    return torch.sin(PI * x[:, 0]) * torch.exp(x[:, 1])


def dist_scalar(x):
    return x[:, 1] * (1 - x[:, 0] ** 2)


def g_two(x):  # (N, 2): a different g per output
    return torch.stack([torch.cos(x[:, 0] * x[:, 1]), x[:, 0] ** 3], dim=1)


class Composed(torch.nn.Module):
    """x -> constraint.apply_value(x, net(x)), the function whose jet apply_jet must produce."""

    def __init__(self, net, constraint):
        super().__init__()
        self.net, self.constraint = net, constraint

    def forward(self, x):
        return self.constraint.apply_value(x, self.net(x))


def points(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return unit * torch.tensor([2.0, 1.0], dtype=torch.float64) - torch.tensor([1.0, 0.0], dtype=torch.float64)


def make_net(kind, n_out):
    ranges = [(-1.0, 1.0), (0.0, 1.0)]
    if kind == "kan":
        return KAN([2, 4, n_out], grid_size=5, grid_range=ranges, seed=3).double()
    return MLP([2, 8, n_out], activation="tanh", input_range=ranges, seed=3).double()


@pytest.mark.parametrize("kind", ["kan", "mlp"])
@pytest.mark.parametrize("g, dist, n_out", [(g_scalar, dist_scalar, 1), (g_two, dist_scalar, 2),
                                             (g_scalar, lambda x: torch.stack([dist_scalar(x), x[:, 1]], 1), 2)])
def test_apply_jet_equals_nested_autograd(kind, g, dist, n_out):
    net = make_net(kind, n_out)
    constraint = HardConstraint(g, dist)
    x = points()
    jet = constraint.apply_jet(x, net.forward_jet(x))
    reference = autograd_jet(Composed(net, constraint), x.clone().requires_grad_(True))
    for got, want in zip((jet.value, jet.first, jet.second), (reference.value, reference.first, reference.second)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_apply_jet_keeps_the_parameter_gradient():
    net = make_net("kan", 1)
    constraint = HardConstraint(g_scalar, dist_scalar)
    x = points()
    jet = constraint.apply_jet(x, net.forward_jet(x))
    (jet.second[:, 0, 0] + jet.first[:, 1, 0]).pow(2).mean().backward()
    fast = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    reference = autograd_jet(Composed(net, constraint), x.clone().requires_grad_(True))
    (reference.second[:, 0, 0] + reference.first[:, 1, 0]).pow(2).mean().backward()
    for got, want in zip(fast, (p.grad for p in net.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_conditions_hold_exactly_on_the_faces():
    net = make_net("mlp", 1)
    constraint = HardConstraint(g_scalar, dist_scalar)
    s = torch.linspace(-1, 1, 9, dtype=torch.float64)
    faces = torch.cat([torch.stack([s, torch.zeros_like(s)], 1),  # t = 0
                       torch.stack([torch.ones_like(s), (s + 1) / 2], 1),  # x = 1
                       torch.stack([-torch.ones_like(s), (s + 1) / 2], 1)])  # x = -1
    u = constraint.apply_value(faces, net(faces))
    torch.testing.assert_close(u[:, 0], g_scalar(faces), rtol=0, atol=1e-14)


def test_jets_of_g_and_dist_are_cached_per_point_set():
    calls = {"g": 0}

    def g(x):
        calls["g"] += 1
        return g_scalar(x)

    constraint = HardConstraint(g, dist_scalar)
    x = points()
    first = constraint.jets(x)
    assert constraint.jets(x)[0] is first[0] and calls["g"] == 1
    y = points(seed=1)  # another tensor: another entry
    constraint.jets(y)
    assert calls["g"] == 2
    x.mul_(0.5)  # changed in place: the cached derivatives are stale and must be recomputed
    again = constraint.jets(x)
    assert calls["g"] == 3
    torch.testing.assert_close(again[0].value[:, 0], g_scalar(x))
    constraint.jets(x[:10])  # chunks: a new view object each step, the same memory
    constraint.jets(x[:10])
    assert calls["g"] == 4
    x[:10].add_(0.1)  # in place through another view: the shared version counter notices
    torch.testing.assert_close(constraint.jets(x[:10])[0].value[:, 0], g_scalar(x[:10]))
    assert calls["g"] == 5


def test_every_chunk_of_a_point_set_hits_however_many_chunks():
    """20 chunks of one point set, each asked for twice per 'step': the cache used to hold 8 entries keyed by
    address, so with more than 8 chunks every call missed (40 evaluations of g instead of 20)."""
    calls = {"g": 0}

    def g(x):
        calls["g"] += 1
        return g_scalar(x)

    constraint = HardConstraint(g, dist_scalar)  # the default cache_size, 8
    x = points(n=200)
    for _ in range(2):
        for start in range(0, 200, 10):
            constraint.jets(x[start : start + 10])
    assert calls["g"] == 20


def test_the_cache_lets_go_of_points_that_are_gone():
    constraint = HardConstraint(g_scalar, dist_scalar)
    x = points()
    constraint.jets(x)
    assert len(constraint._cache) == 1
    del x  # resampling replaces the points: their entry goes with them
    assert len(constraint._cache) == 0


def test_tensors_of_torch_func_transforms_are_not_keyed_by_storage():
    """Under vmap there is no storage: the old key (data_ptr) raised there; such tensors are not cached."""
    x = points()
    keyed = torch.func.vmap(lambda row: torch.tensor(HardConstraint._keys(row) is None))(x)
    assert bool(keyed.all())
    assert HardConstraint._keys(x[:5])[0] is x


def test_cache_is_bounded_and_not_copied():
    constraint = HardConstraint(g_scalar, dist_scalar, cache_size=2)
    kept = [points(seed=s) for s in range(4)]
    for x in kept:
        constraint.jets(x)
    assert len(constraint._cache) == 2
    clone = copy.deepcopy(constraint)
    assert len(clone._cache) == 0 and clone.g is g_scalar


def test_points_with_a_graph_give_mixed_derivatives_through_fields():
    """The autograd engine (and mixed derivatives) differentiate the transformed jet again in x."""
    net = make_net("kan", 1)
    constraint = HardConstraint(g_scalar, dist_scalar)
    x = points()
    reference = Fields(Composed(net, constraint), x, ("x", "t"), ("u",), engine="autograd")
    for engine in ("forward", "autograd"):
        fields = Fields(net, x, ("x", "t"), ("u",), engine=engine, transform=constraint.apply_jet)
        for name in ("u", "u_t", "u_xx", "u_xt"):
            torch.testing.assert_close(fields[name], reference[name], rtol=0, atol=1e-10)


def test_function_jet_of_constants_and_linear_maps():
    x = points()
    constant = function_jet(lambda p: torch.full_like(p[:, 0], 2.0), x)
    assert torch.all(constant.value == 2) and torch.all(constant.first == 0) and torch.all(constant.second == 0)
    linear = function_jet(lambda p: 3 * p[:, 1], x)
    torch.testing.assert_close(linear.first[:, :, 0], torch.tensor([[0.0, 3.0]], dtype=torch.float64).expand(40, 2))
    assert torch.all(linear.second == 0)


def test_bad_inputs_are_rejected_with_clear_messages():
    with pytest.raises(TypeError, match="two callables"):
        HardConstraint(1.0, dist_scalar)
    with pytest.raises(ValueError, match="cache_size"):
        HardConstraint(g_scalar, dist_scalar, cache_size=-1)
    constraint = HardConstraint(lambda x: x[:3, 0], dist_scalar)
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, n_out\)"):
        constraint.jets(points())
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        function_jet(g_scalar, torch.zeros(5))
