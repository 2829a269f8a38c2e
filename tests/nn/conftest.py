"""Shared fixtures for the tests of :mod:`kanpde.nn`.

Every test here runs with float64 as torch's default dtype (restored afterwards), so that models built
inside a test hold float64 knots and parameters; float32 behaviour is tested by explicit ``.to``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def default_float64(float64_default):
    """tests/conftest.py's ``float64_default``, applied to every test in this folder."""
    return float64_default


def _autograd_jet(model, x: torch.Tensor):
    """Reference jet by nested autograd: value (N, out), first and pure second derivatives (N, D, out).

    Built with ``create_graph=True`` all the way, so that losses made of the result can be
    differentiated with respect to the model parameters. Rows of ``x`` are independent points, so
    summing over the batch before differentiating gives per-point derivatives.
    """
    x = x.detach().clone().requires_grad_(True)
    value = model(x)
    n_out, n_in = value.shape[1], x.shape[1]
    firsts, seconds = [], []
    for j in range(n_out):
        (grad,) = torch.autograd.grad(value[:, j].sum(), x, create_graph=True)  # (N, D)
        firsts.append(grad)
        pure = []
        for a in range(n_in):
            # allow_unused/materialize_grads: a linear map has a first derivative independent of x.
            (hess_row,) = torch.autograd.grad(grad[:, a].sum(), x, create_graph=True, allow_unused=True,
                                              materialize_grads=True)
            pure.append(hess_row[:, a])
        seconds.append(torch.stack(pure, dim=1))  # (N, D)
    return value, torch.stack(firsts, dim=-1), torch.stack(seconds, dim=-1)


@pytest.fixture
def autograd_jet():
    """The nested-autograd reference jet, as a function ``(model, x) -> (value, first, second)``."""
    return _autograd_jet
