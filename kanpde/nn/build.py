"""Build networks sized from a problem, and rebuild them from a checkpoint's plain-data spec."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kanpde.nn.kan import KAN
from kanpde.nn.mlp import MLP


def build_kan(n_in: int, n_out: int, input_range, hidden: Sequence[int] = (10,), grid_size: int = 5,
              order: int = 3, noise_scale: float = 0.1, seed: int = 0, basis: str = "bspline",
              normalize: str = "affine") -> KAN:
    """A KAN ``[n_in, *hidden, n_out]`` whose first-layer grid (or basis range) spans ``input_range`` (the domain)."""
    return KAN([n_in, *hidden, n_out], grid_size=grid_size, order=order, grid_range=input_range,
               noise_scale=noise_scale, seed=seed, basis=basis, normalize=normalize)


def build_mlp(n_in: int, n_out: int, input_range, hidden: Sequence[int] = (100, 100, 100, 100),
              activation: str = "tanh", seed: int = 0) -> MLP:
    """An MLP ``[n_in, *hidden, n_out]`` whose inputs are mapped from ``input_range`` onto [-1, 1]."""
    return MLP([n_in, *hidden, n_out], activation=activation, input_range=input_range, seed=seed)


def model_spec(model: torch.nn.Module) -> dict:
    """Plain data (lists, ints, strings) from which :func:`model_from_spec` rebuilds ``model``'s shape."""
    if isinstance(model, KAN):
        ranges = torch.stack(model.layers[0].input_range(), dim=1)
        return {"family": "kan", "widths": list(model.widths), "grid_size": model.grid_size,
                "order": model.order, "grid_range": ranges.tolist(), "basis": model.basis,
                "normalize": model.normalize}
    if isinstance(model, MLP):
        ranges = torch.stack([model.center - model.half_width, model.center + model.half_width], dim=1)
        return {"family": "mlp", "widths": list(model.widths), "activation": model.activation,
                "input_range": ranges.tolist()}
    raise TypeError(f"no spec for {type(model).__name__}; kanpde checkpoints hold KAN or MLP models")


def model_from_spec(spec: dict) -> torch.nn.Module:
    """An untrained model of the shape ``spec`` describes (load the state dict into it)."""
    family = spec.get("family")
    if family == "kan":
        return KAN(spec["widths"], grid_size=spec["grid_size"], order=spec["order"], grid_range=spec["grid_range"],
                   basis=spec.get("basis", "bspline"), normalize=spec.get("normalize", "affine"))
    if family == "mlp":
        return MLP(spec["widths"], activation=spec["activation"], input_range=spec["input_range"])
    raise ValueError(f"unknown model family {family!r} in checkpoint; expected 'kan' or 'mlp'")
