"""Symbolic edge fits: known functions and constants are recovered, the ranking prefers the simpler of
equally good fits, a user can add functions, and bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

from kanpde.symbolic import LIBRARY, SymbolicFunction, compose, fit_edge, library_with

X = np.linspace(-0.7, 1.3, 400)

# (function, y samples, names accepted as the best fit: sin and cos are shifts of each other)
KNOWN = {
    "sin": (lambda x: 0.7 * np.sin(2.1 * x + 0.3) - 0.2, {"sin", "cos"}),
    "cos": (lambda x: np.cos(math.pi * x), {"sin", "cos"}),
    "x^2": (lambda x: 3 * (x - 0.2) ** 2 + 1, {"x^2"}),
    "x": (lambda x: -2 * x + 0.5, {"x"}),
    "exp": (lambda x: 0.5 * np.exp(-1.5 * x) + 2, {"exp"}),
    "log": (lambda x: np.log(2 * x + 3), {"log"}),
    "1/x": (lambda x: 1 / (x + 2), {"1/x"}),
    "sqrt": (lambda x: np.sqrt(3 * x + 2.5), {"sqrt"}),
    "tanh": (lambda x: np.tanh(4 * x - 1), {"tanh"}),
    "sin(x^2)": (lambda x: 0.3 * np.sin(math.pi * x**2) + 0.1, {"sin(x^2)", "cos(x^2)"}),
}


def evaluate(candidate, x):
    function = LIBRARY[candidate.function]
    return candidate.c * function(torch.as_tensor(candidate.a * x + candidate.b)).numpy() + candidate.d


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_fit_recovers_known_functions(name):
    make, accepted = KNOWN[name]
    x = np.linspace(-1, 1, 300) if name == "sin(x^2)" else X
    y = make(x)
    library = library_with(names=sorted(accepted | {"0", "x", "x^2", "sin", "exp"}))  # a few distractors: fast
    best = fit_edge(x, y, library)[0]
    assert best.function in accepted
    assert best.r2 > 1 - 1e-12
    np.testing.assert_allclose(evaluate(best, x), y, rtol=0, atol=1e-7)


def test_fit_recovers_the_constants_of_sin_pi_x():
    best = fit_edge(X, 0.5 * np.sin(math.pi * X + 0.25) + 0.75, library_with(names=["0", "x", "sin"]))[0]
    assert best.function == "sin"
    # sin(a x + b) = sin(-a x + pi - b) = -sin(a x + b + pi): a and c are determined up to sign
    assert abs(best.a) == pytest.approx(math.pi, rel=1e-9)
    assert abs(best.c) == pytest.approx(0.5, rel=1e-9)
    assert best.d == pytest.approx(0.75, abs=1e-9)


def test_a_polynomial_seen_over_a_short_range_is_not_called_a_cosine():
    """cos(eps h) ~ 1 - eps^2 h^2 / 2 fits a parabola as well as x^2 does, to the spline's accuracy: the
    Taylor penalty makes the polynomial win (a case measured on a trained [2, 2, 1] KAN)."""
    h = np.linspace(-0.05, 0.04, 300)
    y = 357.0 * h**2 + 1e-9 * np.sin(400 * h)  # noise at the level a spline leaves
    assert fit_edge(h, y, library_with(names=["0", "x", "x^2", "cos", "gaussian"]))[0].function == "x^2"


def test_candidates_are_ranked_by_score_and_the_zero_edge_is_a_constant():
    candidates = fit_edge(X, np.full_like(X, 0.3) + 1e-14 * X, library_with(names=["0", "x", "sin", "exp"]))
    scores = [c.score for c in candidates]
    assert scores == sorted(scores)
    zero = next(c for c in candidates if c.function == "0")
    assert zero.d == pytest.approx(0.3) and zero.c == 0.0


def test_user_functions_join_the_library():
    cube_root = SymbolicFunction("cbrt", lambda t: (torch.sign(t) * t.abs() ** (1 / 3),
                                                    t.abs() ** (-2 / 3) / 3, -2 / 9 * torch.sign(t) * t.abs() ** (-5 / 3)),
                                 sympy.cbrt, 2, domain="positive")
    library = library_with({"cbrt": cube_root}, names=["0", "x", "x^2"])
    assert set(library) == {"0", "x", "x^2", "cbrt"}
    x = np.linspace(0.5, 2.0, 200)
    best = fit_edge(x, 2 * np.cbrt(x + 1), library)[0]
    assert best.function == "cbrt" and best.r2 > 1 - 1e-12


def test_compositions_follow_the_chain_rule():
    square_sin = compose(LIBRARY["sin"], LIBRARY["x^2"])
    t = torch.linspace(-1.2, 1.3, 50, dtype=torch.float64, requires_grad=True)
    f, df, d2f = square_sin.jet(t)
    (auto_first,) = torch.autograd.grad(torch.sin(t**2).sum(), t, create_graph=True)
    (auto_second,) = torch.autograd.grad(auto_first.sum(), t)
    torch.testing.assert_close(f, torch.sin(t**2))
    torch.testing.assert_close(df, auto_first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d2f, auto_second, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_every_library_jet_matches_autograd(name):
    function = LIBRARY[name]
    t = torch.linspace(0.3, 1.7, 40, dtype=torch.float64, requires_grad=True)  # inside every domain
    f, df, d2f = function.jet(t)
    if not f.requires_grad:  # the zero function
        assert torch.all(f == 0) and torch.all(df == 0)
        return
    (first,) = torch.autograd.grad(f.sum(), t, create_graph=True)
    torch.testing.assert_close(df, first, rtol=1e-10, atol=1e-12)
    if first.requires_grad:
        (second,) = torch.autograd.grad(first.sum(), t)
        torch.testing.assert_close(d2f, second, rtol=1e-10, atol=1e-12)
    else:  # f' constant (x, abs away from 0): f'' must vanish
        assert torch.all(d2f == 0)
    symbol = sympy.Symbol("s")
    lambdified = sympy.lambdify(symbol, function.sympy(symbol), "numpy")
    np.testing.assert_allclose(np.broadcast_to(lambdified(t.detach().numpy()), t.shape), f.detach().numpy(),
                               rtol=1e-12, atol=1e-14)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        fit_edge(X, X[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        fit_edge(np.array([0.0, 1.0, np.nan, 2.0]), np.ones(4))
    with pytest.raises(ValueError, match="unknown symbolic functions.*'sinh'"):
        library_with(names=["sin", "sinh"])
