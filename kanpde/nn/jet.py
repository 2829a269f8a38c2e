"""The ``Jet``: a network output together with its derivatives with respect to every input."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Jet:
    """Value, first derivatives and pure second derivatives of a function at N points.

    Attributes:
        value: ``(N, n_out)``.
        first: ``(N, n_in, n_out)``; ``first[:, a]`` is d value / d x_a.
        second: ``(N, n_in, n_out)``; ``second[:, a]`` is d^2 value / d x_a^2 (pure, not mixed).
    """

    value: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor

    @classmethod
    def of_inputs(cls, x: torch.Tensor) -> "Jet":
        """The jet of the identity map at ``x`` (N, d): first = I, second = 0."""
        n, d = x.shape
        eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(n, d, d)
        return cls(x, eye, torch.zeros(n, d, d, dtype=x.dtype, device=x.device))

    def laplacian(self) -> torch.Tensor:
        """Sum of pure second derivatives, ``(N, n_out)``."""
        return self.second.sum(dim=1)


def stack_jet(jet: Jet) -> torch.Tensor:
    """Stack value, first and second derivatives on a new axis: ``(N, 1 + 2 n_in, width)``."""
    return torch.cat([jet.value.unsqueeze(1), jet.first, jet.second], dim=1)


def unstack_jet(stacked: torch.Tensor, n_in: int) -> Jet:
    """Inverse of :func:`stack_jet` for a stacked tensor ``(N, 1 + 2 n_in, width)``."""
    return Jet(stacked[:, 0], stacked[:, 1 : 1 + n_in], stacked[:, 1 + n_in :])


def elementwise_jet(jet: Jet, f0: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor) -> Jet:
    """Chain rule for y = f(h) applied elementwise, given f, f', f'' at ``jet.value``.

    ``f0, f1, f2`` have the shape of ``jet.value`` (N, width).
    d y / dx_a = f'(h) h_a;   d^2 y / dx_a^2 = f''(h) h_a^2 + f'(h) h_aa.
    """
    g1, g2 = f1.unsqueeze(1), f2.unsqueeze(1)
    return Jet(f0, g1 * jet.first, g2 * jet.first**2 + g1 * jet.second)
