"""Ansatz networks: the KAN (B-spline, Chebyshev, Fourier or RBF edges) and the MLP baseline, both with forward
derivatives."""

from kanpde.nn.jet import Jet
from kanpde.nn.kan import KAN, KANLayer
from kanpde.nn.mlp import MLP
from kanpde.nn.build import build_kan, build_mlp, model_from_spec, model_spec

__all__ = ["Jet", "KAN", "KANLayer", "MLP", "build_kan", "build_mlp", "count_parameters", "model_from_spec", "model_spec"]


def count_parameters(model) -> int:
    """Number of trainable scalars of ``model`` (each shared tensor counted once)."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total
