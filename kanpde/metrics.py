"""Errors of a prediction against the exact or reference solution: combined, and per output; the fixed test set
(:class:`Evaluation`) and chunked prediction (:func:`predict`).

For predictions and true values (N, n_outputs) at the test points,

    rel_l2 = ||pred - true||_F / ||true||_F,   mse = mean((pred - true)^2),   max_abs = max |pred - true|,

over all points and outputs together; with more than one output the same three per output column, as
``rel_l2_<name>``, ``mse_<name>``, ``max_abs_<name>`` (e.g. ``rel_l2_u``, ``rel_l2_v``, ``rel_l2_p``), since one
output with a large norm (a pressure) can hide another's error in the combined figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

ERRORS = ("rel_l2", "mse", "max_abs")


def errors(predicted: torch.Tensor, values: torch.Tensor, outputs: Sequence[str] = ()) -> dict[str, float]:
    """The combined errors, and each output's when ``values`` (N, n_outputs) has several columns.

    Args:
        predicted: (N, n_outputs) model values at the test points.
        values: (N, n_outputs) true values there.
        outputs: a name per column; empty names them ``output0``, ``output1``, ...
    """
    if predicted.shape != values.shape:
        raise ValueError(f"predicted values {tuple(predicted.shape)} and true values {tuple(values.shape)} must "
                         "have the same shape (N, n_outputs)")
    result = _errors(predicted - values, values)
    n_outputs = values.shape[1] if values.dim() == 2 else 1
    if n_outputs > 1:
        names = tuple(outputs) or tuple(f"output{i}" for i in range(n_outputs))
        if len(names) != n_outputs:
            raise ValueError(f"{len(names)} output names {names} for true values with {n_outputs} columns; "
                             "give one name per column (the problem's outputs)")
        for column, name in enumerate(names):
            per_output = _errors(predicted[:, column] - values[:, column], values[:, column])
            result.update({f"{key}_{name}": value for key, value in per_output.items()})
    return result


def _errors(diff: torch.Tensor, values: torch.Tensor) -> dict[str, float]:
    """rel_l2, mse and max_abs of the differences ``diff`` against the true ``values`` (same shape)."""
    return {
        # an output that is identically zero has no relative error (mse and max_abs still say how far off it is)
        "rel_l2": float(diff.norm() / values.norm()) if float(values.norm()) > 0 else math.nan,
        "mse": float((diff**2).mean()),
        "max_abs": float(diff.abs().max()),
    }


@dataclass
class Evaluation:
    """Fixed test points and the true solution there, for metrics.

    ``outputs`` names the columns of ``values`` (the problem's outputs): with several, :meth:`errors` reports each
    output's errors too (``rel_l2_u``, ... see :mod:`kanpde.metrics`).
    """

    points: torch.Tensor  # (N, n_vars)
    values: torch.Tensor  # (N, n_outputs)
    outputs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.outputs and len(self.outputs) != self.values.shape[-1]:
            raise ValueError(f"Evaluation got {len(self.outputs)} output names {tuple(self.outputs)} for values with "
                             f"{self.values.shape[-1]} columns; give one name per column (the problem's outputs)")

    def errors(self, model: torch.nn.Module, constraint=None, chunk: int = 65536) -> dict[str, float]:
        return errors(predict(model, self.points, constraint, chunk), self.values, self.outputs)


@torch.no_grad()
def predict(model: torch.nn.Module, points: torch.Tensor, constraint=None, chunk: int = 65536) -> torch.Tensor:
    """Solution values at ``points`` (N, d), in chunks to bound memory: (N, n_out).

    ``constraint``: the problem's ``hard_constraint`` (or None); its ``apply_value(x, net_value)`` turns the
    network output into the solution.
    """
    parts = []
    for i in range(0, len(points), chunk):
        x = points[i : i + chunk]
        value = model(x)
        parts.append(constraint.apply_value(x, value) if constraint is not None else value)
    return torch.cat(parts)
