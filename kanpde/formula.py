"""A KAN whose edges are closed-form functions, trainable like any model, and readable as a sympy formula.

Node j of a layer computes y_j = bias_j + sum_i c_ij f_ij(a_ij h_i + b_ij), with f_ij from a symbolic library
(:mod:`kanpde.symbolic`). The free constants live in one parameter vector, so the Levenberg-Marquardt solver
(or any torch optimizer) fine-tunes them on the PDE loss through the same training loop as the spline
network; :meth:`FormulaKAN.forward_jet` carries value, first and pure second derivatives forward with the
functions' closed-form f' and f'', as the spline layers do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import sympy
import torch
from torch import nn

from kanpde.nn.jet import Jet
from kanpde.symbolic import LIBRARY, Candidate, SymbolicFunction


class FormulaKAN(nn.Module):
    """Closed-form edges on a KAN's layout.

    Args:
        widths: layer widths, input first.
        edges: per layer, an ``(in, out)`` nested list of :class:`~kanpde.symbolic.Candidate` (function and
            constants a, b, c, d of y ~ c f(a x + b) + d).
        library: the functions the candidates name.

    Constants that the function makes redundant (a of powers, b of exp, everything of the zero function)
    are fixed; hidden-node biases are fixed too (the next layer's shifts absorb them); the rest are free.
    """

    def __init__(self, widths: Sequence[int], edges: Sequence[Sequence[Sequence[Candidate]]],
                 library: Mapping[str, SymbolicFunction] | None = None):
        super().__init__()
        self.library = dict(LIBRARY if library is None else library)
        self.widths = [int(w) for w in widths]
        if len(edges) != len(self.widths) - 1:
            raise ValueError(f"edges must give one (in, out) table per layer ({len(self.widths) - 1}), "
                             f"got {len(edges)}")
        self.functions: list[list[list[str]]] = []
        free: list[float] = []
        layouts = []
        for index, (table, n_in, n_out) in enumerate(zip(edges, self.widths[:-1], self.widths[1:])):
            if len(table) != n_in or any(len(row) != n_out for row in table):
                raise ValueError(f"layer {index}: expected {n_in} x {n_out} edges")
            names = [[table[i][j].function for j in range(n_out)] for i in range(n_in)]
            unknown = {n for row in names for n in row} - set(self.library)
            if unknown:
                raise ValueError(f"layer {index}: functions {sorted(unknown)} are not in the library")
            self.functions.append(names)
            last = index == len(edges) - 1
            layout = {}
            for key in "abc":
                fixed = torch.zeros(n_in, n_out, dtype=torch.float64)
                position = torch.full((n_in, n_out), -1, dtype=torch.long)
                for i in range(n_in):
                    for j in range(n_out):
                        candidate, function = table[i][j], self.library[names[i][j]]
                        value = getattr(candidate, key)
                        fixed[i, j] = value
                        if _is_free(key, function):
                            position[i, j] = len(free)
                            free.append(value)
                layout[key] = (position, fixed)
            bias = torch.tensor([sum(table[i][j].d for i in range(n_in)) for j in range(n_out)], dtype=torch.float64)
            position = torch.arange(len(free), len(free) + n_out) if last else torch.full((n_out,), -1)
            if last:
                free.extend(bias.tolist())
            layout["bias"] = (position, bias)
            layouts.append(layout)
        self.constants = nn.Parameter(torch.tensor(free, dtype=torch.float64))
        for index, layout in enumerate(layouts):
            for key, (position, fixed) in layout.items():
                self.register_buffer(f"position_{key}_{index}", position)
                self.register_buffer(f"fixed_{key}_{index}", fixed)

    def layer_constants(self, index: int) -> dict[str, torch.Tensor]:
        """a, b, c ``(in, out)`` and bias ``(out,)`` of layer ``index``, free constants taken from the vector."""
        values = {}
        for key in ("a", "b", "c", "bias"):
            position, fixed = getattr(self, f"position_{key}_{index}"), getattr(self, f"fixed_{key}_{index}")
            free = self.constants[position.clamp(min=0)] if len(self.constants) else fixed
            values[key] = torch.where(position >= 0, free, fixed.to(self.constants.dtype))
        return values

    def _edges(self, index: int, h: torch.Tensor, n_derivatives: int) -> list[torch.Tensor]:
        """phi_ij and its derivatives at ``h`` (N, in): a list of ``(N, in, out)`` tensors."""
        k = self.layer_constants(index)
        n_in, n_out = self.widths[index], self.widths[index + 1]
        orders = [[[None] * n_out for _ in range(n_in)] for _ in range(n_derivatives + 1)]
        for i in range(n_in):
            for j in range(n_out):
                name = self.functions[index][i][j]
                if name == "0":
                    zero = h[:, i] * 0
                    for order in orders:
                        order[i][j] = zero
                    continue
                a, b, c = k["a"][i, j], k["b"][i, j], k["c"][i, j]
                f = self.library[name].jet(a * h[:, i] + b)
                scale = c
                for n in range(n_derivatives + 1):
                    orders[n][i][j] = scale * f[n]
                    scale = scale * a  # d/dh f(a h + b) = a f'(a h + b)
        return [torch.stack([torch.stack(row, dim=-1) for row in order], dim=1) for order in orders]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output ``(N, widths[-1])`` at ``x`` (N, widths[0])."""
        h = x
        for index in range(len(self.widths) - 1):
            (phi,) = self._edges(index, h, 0)
            h = phi.sum(dim=1) + self.layer_constants(index)["bias"]
        return h

    def forward_jet(self, x: torch.Tensor) -> Jet:
        """Value, first and pure second derivatives with respect to every input, in one forward pass."""
        n, dims = x.shape
        jet = Jet(x, torch.eye(dims, dtype=x.dtype, device=x.device).expand(n, dims, dims), x.new_zeros(n, dims, dims))
        for index in range(len(self.widths) - 1):
            phi0, phi1, phi2 = self._edges(index, jet.value, 2)
            value = phi0.sum(dim=1) + self.layer_constants(index)["bias"]
            first = torch.einsum("nai,nio->nao", jet.first, phi1)  # (N, D, out)
            second = (torch.einsum("nai,nio->nao", jet.first**2, phi2)
                      + torch.einsum("nai,nio->nao", jet.second, phi1))
            jet = Jet(value, first, second)
        return jet

    def to_sympy(self, variables: Sequence[str]) -> list[sympy.Expr]:
        """The outputs as sympy expressions in ``variables`` (floats for the constants)."""
        nodes = list(sympy.symbols(list(variables), real=True))
        if len(nodes) != self.widths[0]:
            raise ValueError(f"the formula has {self.widths[0]} inputs, got variables {list(variables)}")
        with torch.no_grad():
            for index in range(len(self.widths) - 1):
                k = {key: value.tolist() for key, value in self.layer_constants(index).items()}
                outputs = []
                for j in range(self.widths[index + 1]):
                    total = sympy.Float(k["bias"][j], 17)
                    for i in range(self.widths[index]):
                        name = self.functions[index][i][j]
                        if name == "0":
                            continue
                        argument = sympy.Float(k["a"][i][j], 17) * nodes[i] + sympy.Float(k["b"][i][j], 17)
                        total += sympy.Float(k["c"][i][j], 17) * self.library[name].sympy(argument)
                    outputs.append(total)
                nodes = outputs
        return nodes


def _is_free(key: str, function: SymbolicFunction) -> bool:
    if function.name == "0":
        return False
    if key == "a":
        return not function.homogeneous
    if key == "b":
        return not function.shift_invariant and function.name != "x"
    return True


def round_constants(expression: sympy.Expr, tolerance: float = 1e-6, max_denominator: int = 12,
                    digits: int = 6) -> sympy.Expr:
    """Replace each float by a nearby simple number (p/q or p/q * pi, with q <= ``max_denominator``, within
    ``tolerance`` relative), or round it to ``digits`` significant digits; then simplify.

    Rounding runs twice: on the constants as they stand (the inner a, b of each edge), then once more after
    the expression is expanded (sums of angles and products multiplied out), where the constants of a
    structure the network spread over several edges (c1 a1^2 + c2 a2^2, say) come together and cancel.
    """
    def rounded(expr, keep):
        return expr.xreplace({n: _recognise(float(n), tolerance, max_denominator, digits, keep)
                              for n in expr.atoms(sympy.Float)})

    once = rounded(expression, keep=True)  # unrecognised constants keep every digit until they have combined
    twice = rounded(sympy.expand(sympy.expand_trig(once)), keep=False)
    return sympy.simplify(twice)


def _recognise(value: float, tolerance: float, max_denominator: int, digits: int, keep: bool = False) -> sympy.Expr:
    if abs(value) < tolerance:
        return sympy.Integer(0)
    for unit, symbol in ((1.0, sympy.Integer(1)), (math.pi, sympy.pi), (math.pi**2, sympy.pi**2)):
        ratio = Fraction(value / unit).limit_denominator(max_denominator)
        if ratio != 0 and abs(float(ratio) * unit - value) <= tolerance * max(1.0, abs(value)):
            return sympy.Rational(ratio.numerator, ratio.denominator) * symbol
    return sympy.Float(value, 17) if keep else sympy.Float(float(f"{value:.{digits}g}"), digits)
