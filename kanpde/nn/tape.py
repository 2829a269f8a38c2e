"""Where parameters enter a forward pass: records for exact per-point Jacobians.

Every layer kanpde ships is *linear in its parameters once its per-point features are known*: a KAN
layer's edge functions phi_ij = w_base silu(h_i) + (w_spline c_ij) . B(h_i), and a linear layer's
output W s + b. While a :class:`Tape` is active, each layer records the tensor through which its parameters
reach the output (phi, or W s) together with those per-point features. One ordinary backward of
``sum(residual)`` then gives dr_n / d(that tensor) at every point n at once (points never mix inside a
network), and the per-point Jacobian rows follow in closed form from the features (the per-example
gradient trick of Goodfellow, *Efficient per-example gradient computations*, 2015, applied to the jets).
See :mod:`kanpde.jacobian`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

_ACTIVE: list[Tape] = []


@dataclass
class SplineRecord:
    """A KAN layer's edge functions at N points, for ``K`` derivative orders (1: value only, 3: jet).

    Attributes:
        layer: the :class:`~kanpde.nn.KANLayer`.
        output: phi and its derivatives ``(K, N, in, out)``, in the graph (the backward target).
        local: active basis values and derivatives ``(K, N, in, w)``, detached.
        start: basis index of ``local[..., 0]`` ``(N, in)`` (long); indices outside [0, M) carry no
            coefficient (their ``local`` entries multiply nothing).
        silu: silu and its derivatives ``(K, N, in)``, detached.
    """

    layer: torch.nn.Module
    output: torch.Tensor
    local: torch.Tensor
    start: torch.Tensor
    silu: torch.Tensor

    @property
    def n_points(self) -> int:
        return self.output.shape[1]


@dataclass
class LinearRecord:
    """A linear layer ``W s + b`` applied to C stacked channels (value first, then derivatives).

    Attributes:
        layer: the ``torch.nn.Linear``.
        output: ``s @ W.T`` before the bias, ``(N, C, out)``, in the graph.
        features: the stacked input ``s`` ``(N, C, in)``, detached; the bias acts on channel 0 only.
    """

    layer: torch.nn.Module
    output: torch.Tensor
    features: torch.Tensor

    @property
    def n_points(self) -> int:
        return self.output.shape[0]


class Tape:
    """The records of every layer evaluation made while it was active, in order."""

    def __init__(self):
        self.records: list[SplineRecord | LinearRecord] = []


def active_tape() -> Tape | None:
    """The innermost active tape, or None (the usual case: layers then record nothing)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def recording():
    """``with recording() as tape:`` every layer evaluated inside appends its record to ``tape``."""
    tape = Tape()
    _ACTIVE.append(tape)
    try:
        yield tape
    finally:
        _ACTIVE.pop()
