"""FormulaKAN: closed-form edges whose forward derivatives equal autograd, whose sympy form evaluates to the
module's output, and whose constants round to the exact solution when they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
import torch

from kanpde.derivatives import autograd_jet
from kanpde.formula import FormulaKAN, round_constants
from kanpde.symbolic import Candidate


def edge(name, a=1.0, b=0.0, c=1.0, d=0.0):
    return Candidate(name, a, b, c, d, 1.0, 1.0)


def sinsin_formula(noise: float = 0.0) -> FormulaKAN:
    """u = sin(pi x) sin(pi y) = (cos(pi x - pi y) - cos(pi x + pi y)) / 2 on a [2, 2, 1] layout."""
    pi = math.pi + noise
    first = [[edge("x", c=pi), edge("x", c=pi)], [edge("x", c=-pi), edge("x", c=pi)]]
    second = [[edge("cos", c=0.5)], [edge("cos", c=-0.5)]]
    return FormulaKAN([2, 2, 1], [first, second])


def points(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1


def test_the_layout_computes_the_formula_and_counts_free_constants():
    x = points()
    formula = sinsin_formula()
    exact = torch.sin(math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1])
    torch.testing.assert_close(formula(x)[:, 0], exact, rtol=0, atol=1e-14)
    # x edges: c only; cos edges: a, b, c; the output bias: 4 + 6 + 1
    assert formula.constants.numel() == 11


def test_forward_derivatives_equal_autograd():
    mixed = [[edge("sin", 1.3, 0.2, 0.7, 0.1), edge("x^2", 1.0, 0.3, 0.5)], [edge("exp", 0.6, 0.0, 0.2), edge("log", 0.5, 2.0, 1.1)]]
    outer = [[edge("tanh", 1.2, 0.3, 0.8)], [edge("sin(x^2)", 0.9, -0.1, 1.1)]]
    formula = FormulaKAN([2, 2, 1], [mixed, outer])
    x = points().requires_grad_(True)
    fast, reference = formula.forward_jet(x.detach()), autograd_jet(formula, x)
    for got, want in zip((fast.value, fast.first, fast.second), (reference.value, reference.first, reference.second)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_sympy_form_evaluates_to_the_module():
    formula = sinsin_formula(noise=1e-3)
    with torch.no_grad():
        formula.constants.add_(0.01 * torch.randn(formula.constants.shape, generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.float64))
    (expression,) = formula.to_sympy(["x", "y"])
    x = points()
    function = sympy.lambdify(sympy.symbols("x y", real=True), expression, "numpy")
    np.testing.assert_allclose(function(x[:, 0].numpy(), x[:, 1].numpy()), formula(x)[:, 0].detach().numpy(),
                               rtol=1e-13, atol=1e-14)


def test_rounding_recovers_the_exact_solution():
    (expression,) = sinsin_formula(noise=1e-9).to_sympy(["x", "y"])
    x, y = sympy.symbols("x y", real=True)
    rounded = round_constants(expression)
    assert sympy.simplify(rounded - sympy.sin(sympy.pi * x) * sympy.sin(sympy.pi * y)) == 0


def test_rounding_leaves_constants_that_are_not_simple():
    x = sympy.Symbol("x", real=True)
    rounded = round_constants(sympy.Float(0.1234567891) * sympy.sin(sympy.Float(2.718281828) * x))
    assert sympy.pi not in rounded.atoms(sympy.NumberSymbol)
    assert rounded.has(sympy.sin)
    assert abs(float(rounded.subs(x, 0.4)) - 0.1234567891 * math.sin(2.718281828 * 0.4)) < 1e-6


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="one .* table per layer"):
        FormulaKAN([2, 1], [])
    with pytest.raises(ValueError, match="expected 2 x 1 edges"):
        FormulaKAN([2, 1], [[[edge("x")]]])
    with pytest.raises(ValueError, match=r"functions \['sinh'\] are not in the library"):
        FormulaKAN([1, 1], [[[edge("sinh")]]])
    with pytest.raises(ValueError, match="has 2 inputs"):
        sinsin_formula().to_sympy(["x"])
