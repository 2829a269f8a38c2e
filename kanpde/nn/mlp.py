"""The MLP-PINN baseline, with the same forward-derivative interface as :class:`kanpde.nn.KAN`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kanpde.nn.kan import as_ranges, silu_derivatives
from kanpde.nn.jet import Jet, elementwise_jet, stack_jet, unstack_jet
from kanpde.nn.tape import LinearRecord, active_tape


def _tanh(z):
    t = torch.tanh(z)
    d1 = 1 - t * t
    return t, d1, -2 * t * d1


def _sin(z):
    s, c = torch.sin(z), torch.cos(z)
    return s, c, -s



# Each entry returns f, f', f'' of the activation; all are smooth enough for second-order PDEs.
ACTIVATIONS = {"tanh": _tanh, "sin": _sin, "silu": silu_derivatives}
# The value alone, for the plain forward (prediction, nested autograd): no derivative work.
VALUES = {"tanh": torch.tanh, "sin": torch.sin, "silu": torch.nn.functional.silu}


class MLP(nn.Module):
    """A fully connected network, e.g. ``MLP([2, 100, 100, 100, 100, 1], activation="tanh")``.

    Args:
        widths: layer widths, input first, at least two entries.
        activation: one of ``ACTIVATIONS`` (tanh, sin, silu); none after the last layer.
        input_range: ``(lo, hi)`` or one pair per input; inputs are mapped affinely onto [-1, 1]
            (like the KAN's first-layer grid), so both families see the same scaled domain.
        seed: seed of the Xavier-normal initialisation; the global RNG is left alone.
    """

    def __init__(self, widths: Sequence[int], activation: str = "tanh", input_range=(-1.0, 1.0),
                 seed: int | None = 0):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must list at least two positive sizes (input and output), got {widths}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        ranges = as_ranges(input_range, widths[0], "input_range")
        self.widths, self.activation = widths, activation
        dtype = torch.get_default_dtype()
        self.register_buffer("center", ((ranges[:, 0] + ranges[:, 1]) / 2).to(dtype))
        self.register_buffer("half_width", ((ranges[:, 1] - ranges[:, 0]) / 2).to(dtype))
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        self.linears = nn.ModuleList()
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            linear = torch.nn.utils.skip_init(nn.Linear, n_in, n_out)  # no draw from the global RNG
            std = (2.0 / (n_in + n_out)) ** 0.5
            with torch.no_grad():
                linear.weight.copy_(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) * std)
                linear.bias.zero_()
            self.linears.append(linear)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network output ``(N, widths[-1])`` at ``x`` (N, widths[0])."""
        h = (x - self.center) / self.half_width
        act = VALUES[self.activation]
        tape = active_tape()
        for index, linear in enumerate(self.linears):
            h = linear(h) if tape is None else _recorded_linear(linear, h.unsqueeze(1), tape)[:, 0]
            if index < len(self.linears) - 1:
                h = act(h)
        return h

    def forward_jet(self, x: torch.Tensor) -> Jet:
        """Value, first and pure second derivatives with respect to every input, in one forward pass.

        A linear map acts on value and derivatives alike (bias on the value only); the activation follows
        the chain rule of :func:`kanpde.nn.jet.elementwise_jet`.
        """
        jet = Jet.of_inputs(x)
        scale = self.half_width.unsqueeze(-1)  # (D, 1): d x'_a / d x_a = 1 / half_width_a
        jet = Jet((x - self.center) / self.half_width, jet.first / scale, jet.second)
        n_in = x.shape[1]
        act = ACTIVATIONS[self.activation]
        for index, linear in enumerate(self.linears):
            stacked = _recorded_linear(linear, stack_jet(jet), active_tape())  # (N, 1 + 2D, width)
            jet = unstack_jet(stacked, n_in)
            if index < len(self.linears) - 1:
                jet = elementwise_jet(jet, *act(jet.value))
        return jet


def _recorded_linear(linear: nn.Linear, stacked: torch.Tensor, tape) -> torch.Tensor:
    """``linear`` on stacked channels ``(N, C, in)`` -> ``(N, C, out)``: the weight acts on every channel, the
    bias on channel 0 (the value) only; recorded on ``tape`` (or None) for exact Jacobians."""
    out = stacked @ linear.weight.T
    if tape is not None:
        tape.records.append(LinearRecord(linear, out, stacked.detach()))
    bias = torch.nn.functional.pad(linear.bias.unsqueeze(0), (0, 0, 0, stacked.shape[1] - 1))  # (C, out)
    return out + bias
