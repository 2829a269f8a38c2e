"""Tests of kanpde.derivatives: the forward engine, the autograd engine and plain nested autograd agree.

The reference below differentiates the network output directly with ``torch.autograd.grad``
(``create_graph=True``), independently of ``kanpde.derivatives.autograd_jet``; the design asks the
engines to match it to ~1e-10 in float64.
"""

from __future__ import annotations

import pytest
import torch

from kanpde.derivatives import ENGINES, Fields, autograd_jet
from kanpde.nn import KAN, MLP

TOLERANCE = dict(rtol=1e-10, atol=1e-10)

# (widths, variables, outputs) of the networks under test: sizes and a system of two outputs.
SHAPES = [
    ([2, 3, 1], ("x", "y"), ("u",)),
    ([2, 4, 3, 2], ("x", "y"), ("u", "v")),
    ([3, 4, 1], ("x", "y", "t"), ("u",)),
]


def make_model(family: str, widths: list[int], seed: int = 0) -> torch.nn.Module:
    if family == "kan":
        model = KAN(widths, grid_size=4, grid_range=(-1.2, 1.2), noise_scale=0.5, seed=seed)
    else:
        model = MLP(widths[:1] + [8, 8] + widths[-1:], activation="tanh", input_range=(-1.0, 1.0), seed=seed)
    return model.to(torch.float64)


def points(n_vars: int, n: int = 40, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_vars, generator=generator, dtype=torch.float64) * 2 - 1  # (n, n_vars) in [-1, 1]


def reference(model, x: torch.Tensor, output: int, wrt: tuple[int, ...]) -> torch.Tensor:
    """d^len(wrt) model[:, output] / d x_wrt[0] ... d x_wrt[-1] by nested autograd, (N,)."""
    x = x.detach().clone().requires_grad_(True)
    field = model(x)[:, output]
    for index in wrt:
        (grad,) = torch.autograd.grad(field.sum(), x, create_graph=True)
        field = grad[:, index]
    return field.detach()


def name_of(outputs, variables, output: int, wrt: tuple[int, ...]) -> str:
    suffix = "".join(variables[i] for i in wrt)
    return outputs[output] + (f"_{suffix}" if suffix else "")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", ["kan", "mlp"])
@pytest.mark.parametrize("widths, variables, outputs", SHAPES)
def test_pure_derivatives_match_nested_autograd(engine, family, widths, variables, outputs):
    model = make_model(family, widths)
    x = points(len(variables))
    d = Fields(model, x, variables, outputs, engine=engine)
    for output in range(len(outputs)):
        wrts = [()] + [(a,) for a in range(len(variables))] + [(a, a) for a in range(len(variables))]
        for wrt in wrts:
            name = name_of(outputs, variables, output, wrt)
            torch.testing.assert_close(d[name].detach(), reference(model, x, output, wrt), **TOLERANCE,
                                       msg=lambda m, name=name: f"{engine} {family} {name}: {m}")
        laplacian = sum(reference(model, x, output, (a, a)) for a in range(len(variables)))
        torch.testing.assert_close(d.laplacian(outputs[output]).detach(), laplacian, **TOLERANCE)
    assert d.used_autograd is False  # value, first and pure second derivatives never need extra autograd


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("family", ["kan", "mlp"])
@pytest.mark.parametrize("widths, variables, outputs", SHAPES)
def test_mixed_and_third_derivatives_match_nested_autograd(engine, family, widths, variables, outputs):
    model = make_model(family, widths)
    x = points(len(variables))
    last = len(variables) - 1
    wrts = [(0, 1), (1, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1), (0, last, last)]
    for output in range(len(outputs)):
        for wrt in wrts:
            d = Fields(model, x, variables, outputs, engine=engine)
            name = name_of(outputs, variables, output, wrt)
            torch.testing.assert_close(d[name].detach(), reference(model, x, output, wrt), **TOLERANCE,
                                       msg=lambda m, name=name: f"{engine} {family} {name}: {m}")
            assert d.used_autograd is True, f"{name} is outside the jet and must be flagged"


@pytest.mark.parametrize("family", ["kan", "mlp"])
def test_mixed_after_pure_on_the_same_fields(family):
    """Asking for u_xx first (fast path, x without grad) and then u_xy restarts with a graph correctly."""
    model = make_model(family, [2, 3, 1])
    x = points(2)
    d = Fields(model, x, ("x", "y"), ("u",), engine="forward")
    u_xx = d["u_xx"].detach().clone()
    assert d.used_autograd is False
    torch.testing.assert_close(d["u_xy"].detach(), reference(model, x, 0, (0, 1)), **TOLERANCE)
    torch.testing.assert_close(d["u_xxy"].detach(), reference(model, x, 0, (0, 0, 1)), **TOLERANCE)
    torch.testing.assert_close(d["u_xx"].detach(), u_xx, **TOLERANCE)
    torch.testing.assert_close(d.u_yy.detach(), reference(model, x, 0, (1, 1)), **TOLERANCE)  # attribute form
    assert d.used_autograd is True


@pytest.mark.parametrize("family", ["kan", "mlp"])
def test_forward_engine_uses_forward_jet_and_no_input_graph(family):
    model = make_model(family, [2, 3, 1])
    calls = {"jet": 0}
    original = model.forward_jet

    def counting(x):
        calls["jet"] += 1
        return original(x)

    model.forward_jet = counting
    x = points(2)
    d = Fields(model, x, ("x", "y"), ("u",), engine="forward")
    d["u"], d["u_x"], d["u_yy"], d.laplacian()
    assert calls["jet"] == 1, "one forward pass must serve value, first and pure second derivatives"
    assert not d.x.requires_grad

    d = Fields(model, x, ("x", "y"), ("u",), engine="autograd")
    d["u_xx"]
    assert calls["jet"] == 1, "the autograd engine must not use forward_jet"


def test_parameter_gradients_agree_between_engines():
    """The loss gradient with respect to the parameters is the same whichever engine built the residual."""
    model = make_model("kan", [2, 3, 1])
    x = points(2)
    grads = []
    for engine in ENGINES:
        model.zero_grad()
        d = Fields(model, x, ("x", "y"), ("u",), engine=engine)
        (d.laplacian() - d["u"]).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], **TOLERANCE)


class Cubic(torch.nn.Module):
    """u = x^3 y + sin(y); a plain module without forward_jet."""

    def forward(self, x):
        return (x[:, 0] ** 3 * x[:, 1] + torch.sin(x[:, 1])).unsqueeze(-1)


def test_model_without_forward_jet_falls_back_to_autograd():
    x = points(2)
    d = Fields(Cubic(), x, ("x", "y"), ("u",), engine="forward")
    px, py = x[:, 0], x[:, 1]
    torch.testing.assert_close(d["u"].detach(), px**3 * py + torch.sin(py), rtol=0, atol=1e-15)
    torch.testing.assert_close(d["u_x"].detach(), 3 * px**2 * py, **TOLERANCE)
    torch.testing.assert_close(d["u_yy"].detach(), -torch.sin(py), **TOLERANCE)
    torch.testing.assert_close(d["u_xxy"].detach(), 6 * px, **TOLERANCE)
    torch.testing.assert_close(d.laplacian().detach(), 6 * px * py - torch.sin(py), **TOLERANCE)
    assert d.x.requires_grad  # the fallback put a graph on the points


def test_model_linear_in_an_input_has_zero_second_derivatives():
    """u = x + 2y (no forward_jet): u_y = 2 and u_yy = u_xy = 0, not an autograd error.

    A residual on a linear field (a trivial manufactured solution, or a condition read on a model that
    happens to be linear in one variable) must work on the autograd path too.
    """

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x[:, 0] + 2 * x[:, 1]).unsqueeze(-1)

    x = points(2)
    for engine in ENGINES:
        d = Fields(Linear(), x, ("x", "y"), ("u",), engine=engine)
        torch.testing.assert_close(d["u_y"].detach(), torch.full((len(x),), 2.0, dtype=x.dtype), rtol=0, atol=0)
        torch.testing.assert_close(d["u_yy"].detach(), torch.zeros(len(x), dtype=x.dtype), rtol=0, atol=0)
        torch.testing.assert_close(d.laplacian().detach(), torch.zeros(len(x), dtype=x.dtype), rtol=0, atol=0)


def test_autograd_jet_shapes():
    model = make_model("mlp", [3, 4, 2])
    x = points(3, n=7).requires_grad_(True)
    jet = autograd_jet(model, x)
    assert jet.value.shape == (7, 2) and jet.first.shape == (7, 3, 2) and jet.second.shape == (7, 3, 2)


def test_multi_character_variable_names():
    model = make_model("kan", [2, 3, 1])
    x = points(2)
    d = Fields(model, x, ("x1", "x2"), ("u",), engine="forward")
    torch.testing.assert_close(d["u_x2x2"].detach(), reference(model, x, 0, (1, 1)), **TOLERANCE)
    torch.testing.assert_close(d["u_x1x2"].detach(), reference(model, x, 0, (0, 1)), **TOLERANCE)
    assert d.parse("u_x1x2x2") == (0, (0, 1, 1))


# ------------------------------------------------------------------------------------------ bad input


def test_unknown_output_names_the_outputs():
    d = Fields(make_model("kan", [2, 3, 2]), points(2), ("x", "y"), ("u", "v"))
    with pytest.raises(KeyError, match=r"unknown field 'w' in 'w_x'; outputs are \('u', 'v'\)"):
        d["w_x"]
    with pytest.raises(KeyError, match=r"outputs are \('u', 'v'\)"):
        d["U"]


@pytest.mark.parametrize("name", ["u_z", "u_xz", "u_t", "u_X"])
def test_unknown_variable_names_the_variables(name):
    d = Fields(make_model("kan", [2, 3, 1]), points(2), ("x", "y"), ("u",))
    with pytest.raises(KeyError, match=r"is not a variable; variables are \('x', 'y'\)"):
        d[name]


def test_attribute_access_raises_attribute_error_for_unknown_names():
    d = Fields(make_model("mlp", [2, 3, 1]), points(2), ("x", "y"), ("u",))
    with pytest.raises(AttributeError, match=r"outputs are \('u',\)"):
        d.w_x
    with pytest.raises(AttributeError):
        d._private


def test_unknown_engine_names_the_engines():
    with pytest.raises(ValueError, match=r"unknown derivative engine 'jax'; choose one of \('forward', 'autograd'\)"):
        Fields(make_model("mlp", [2, 3, 1]), points(2), ("x", "y"), ("u",), engine="jax")


def test_laplacian_of_unknown_output_names_the_outputs():
    """Same contract as d["w"]: a KeyError that names the outputs, not tuple.index's message."""
    d = Fields(make_model("mlp", [2, 3, 1]), points(2), ("x", "y"), ("u",))
    with pytest.raises(KeyError, match=r"'w'.*outputs are \('u',\)"):
        d.laplacian("w")
