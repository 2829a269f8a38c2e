"""Kolmogorov-Arnold Networks with B-spline (or Chebyshev, Fourier, RBF) edges, forward derivatives and grid
extension.

Each edge (input i -> output j) carries phi_ij(x) = w_base_ij * silu(x) + w_spline_ij * sum_m c_ijm B_m(x)
(Liu et al., *KAN: Kolmogorov-Arnold Networks*, 2024, eq. 2.10); nodes sum their incoming edges.
Both branches are written as one matmul: per input, the features [silu(x), B_0(x), ..., B_{M-1}(x)] are
multiplied by the weights [w_base, w_spline * c]. The same matmul carries the derivatives forward
(see :meth:`KANLayer.forward_jet`), which is what makes the residual of a second-order PDE cheap.
``basis`` swaps B_m for a global basis of :mod:`kanpde.nn.bases` on the layer's input range; the rest of
the layer (silu branch, jets, tape records, least-squares refits) is the same for every basis.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from kanpde.nn.bases import GLOBAL_BASES, check_basis, global_basis
from kanpde.nn.jet import Jet
from kanpde.nn.tape import SplineRecord, active_tape
from kanpde.nn.splines import general_basis, is_uniform, make_knots, uniform_basis, uniform_local


# Layers with at least this many outputs per input evaluate their splines through a dense basis and a matmul;
# narrower layers gather their k + 1 active coefficients. Measured on a 2-core CPU, KAN [2, 10, 1] at 2,500
# points (value and derivatives plus backward, interleaved A/B): 25 ms with the 10-output first layer dense,
# 28 ms with it gathered.
DENSE_MIN_OUTPUTS = 4


def silu_derivatives(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """silu(h) = h sigmoid(h) and its first two derivatives, each shaped like ``h``."""
    s = torch.sigmoid(h)
    return h * s, s * (1 + h * (1 - s)), s * (1 - s) * (2 + h * (1 - 2 * s))


def _is_positive_integer(value) -> bool:
    """Whether ``value`` is a (possibly float-typed) integer >= 1; False for nan, inf and non-numbers."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and float(value).is_integer() and value >= 1)


def as_ranges(value, n_in: int, what: str) -> torch.Tensor:
    """Normalise ``(lo, hi)`` or one pair per input to a float64 tensor ``(n_in, 2)``, checked."""
    try:
        ranges = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        ranges = torch.empty(0)
    if ranges.shape == (2,):
        ranges = ranges.expand(n_in, 2)
    if ranges.shape != (n_in, 2):
        raise ValueError(f"{what} must be (lo, hi) or {n_in} pairs of them, got {value!r} "
                         f"({what} must be finite, with lower < upper)")
    if not torch.all(torch.isfinite(ranges)):
        raise ValueError(f"{what} must be finite, got {ranges.tolist()}")
    if not torch.all(ranges[:, 1] > ranges[:, 0]):
        raise ValueError(f"{what} must be finite with lower < upper for every input, got {ranges.tolist()}")
    return ranges.clone()


class KANLayer(nn.Module):
    """One KAN layer: ``n_in * n_out`` learnable edge functions.

    Args:
        n_in, n_out: widths.
        grid_size: number of grid intervals G (>= 1).
        order: spline order k (>= 1); k = 3 is cubic.
        grid_range: ``(lo, hi)`` for all inputs, or one pair per input.
        noise_scale: initial spline coefficients are uniform in ``noise_scale / G * [-1/2, 1/2]``.
        generator: random generator for the initialisation (seeded by :class:`KAN`).
        basis: ``"bspline"`` (knots on ``grid_range``) or a global basis of :mod:`kanpde.nn.bases`
            (``"chebyshev"``, ``"fourier"``, ``"rbf"``) on ``grid_range``, sized by ``grid_size``; ``order``
            is then unused.
        normalize: how a global basis maps ``grid_range`` onto [-1, 1]: ``"affine"`` or ``"tanh"``.
    """

    # Defaults for layers assembled without __init__ (copies made by __new__ elsewhere): B-spline edges.
    basis_name, normalize = "bspline", "affine"

    def __init__(self, n_in: int, n_out: int, grid_size: int = 5, order: int = 3, grid_range=(-1.0, 1.0),
                 noise_scale: float = 0.1, generator: torch.Generator | None = None, *, basis: str = "bspline",
                 normalize: str = "affine"):
        super().__init__()
        if not _is_positive_integer(grid_size):
            raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
        if int(order) != order or order < 1:
            raise ValueError(f"order must be an integer >= 1 (3 is cubic), got {order!r}")
        if n_in < 1 or n_out < 1:
            raise ValueError(f"layer widths must be >= 1, got {n_in} -> {n_out}")
        check_basis(basis, normalize)
        if basis in GLOBAL_BASES:
            GLOBAL_BASES[basis].check_grid_size(int(grid_size))
        self.n_in, self.n_out, self.grid_size, self.order = n_in, n_out, int(grid_size), int(order)
        self.basis_name, self.normalize = basis, normalize
        ranges = as_ranges(grid_range, n_in, "grid_range")
        dtype = torch.get_default_dtype()
        if basis == "bspline":
            self.register_buffer("knots", make_knots(ranges[:, 0], ranges[:, 1], self.grid_size, self.order).to(dtype))
        else:
            self.register_buffer("bounds", ranges.to(dtype))  # (in, 2): the range mapped onto [-1, 1]
        self.uniform = basis == "bspline"
        n_basis = self.n_basis
        noise = (torch.rand(n_in, n_out, n_basis, generator=generator, dtype=torch.float64) - 0.5)
        self.coef = nn.Parameter((noise * noise_scale / self.grid_size).to(dtype))  # (in, out, M)
        bound = 1.0 / math.sqrt(n_in)
        base = (torch.rand(n_in, n_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        self.scale_base = nn.Parameter(base.to(dtype))  # (in, out)
        self.scale_spline = nn.Parameter(torch.full((n_in, n_out), bound, dtype=dtype))  # (in, out)

    @property
    def n_basis(self) -> int:
        return self.basis_size(self.grid_size)

    def basis_size(self, grid_size: int) -> int:
        """Coefficients per edge at ``grid_size``: G + k for B-splines, else the global basis's size."""
        if self.basis_name == "bspline":
            return int(grid_size) + self.order
        return GLOBAL_BASES[self.basis_name].size(int(grid_size))

    def input_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)``, each ``(in,)``: where the basis is resolved (B-splines vanish outside it)."""
        if self.basis_name == "bspline":
            return self.knots[:, self.order], self.knots[:, -self.order - 1]
        return self.bounds[:, 0], self.bounds[:, 1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.basis_name == "bspline":
            self.uniform = is_uniform(self.knots)  # adapted grids are not uniform; the flag is not a buffer

    def extra_repr(self) -> str:
        kind = "" if self.basis_name == "bspline" else f", basis={self.basis_name}, normalize={self.normalize}"
        return (f"{self.n_in} -> {self.n_out}, grid_size={self.grid_size}, order={self.order}, "
                f"uniform={self.uniform}{kind}")

    def basis(self, h: torch.Tensor, n_derivatives: int = 0) -> list[torch.Tensor]:
        """Basis values at ``h`` (N, in): a list of ``(N, in, M)`` tensors (value, then derivatives)."""
        if self.basis_name != "bspline":
            return global_basis(h, self.bounds, self.basis_name, self.normalize, self.grid_size, n_derivatives)
        evaluate = uniform_basis if self.uniform else general_basis
        return evaluate(h, self.knots, self.order, n_derivatives)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Layer output ``(N, out)`` for inputs ``h`` (N, in)."""
        return self.edge_functions(h, n_derivatives=0)[0].sum(dim=1)

    def edge_functions(self, h: torch.Tensor, n_derivatives: int = 2) -> torch.Tensor:
        """phi_ij and its derivatives at ``h`` (N, in): ``(n_derivatives + 1, N, in, out)``."""
        coef = self.scale_spline.unsqueeze(-1) * self.coef  # (in, out, M)
        if self.basis_name != "bspline":
            # A global basis: every point touches all M coefficients, so the record's window is the whole basis.
            local = torch.stack(self.basis(h, n_derivatives))  # (K, N, in, M)
            n_orders, n = local.shape[:2]
            by_input = local.permute(2, 0, 1, 3).reshape(self.n_in, n_orders * n, self.n_basis)  # (in, K N, M)
            spline = torch.bmm(by_input, coef.transpose(1, 2))  # (in, K N, out)
            spline = spline.reshape(self.n_in, n_orders, n, self.n_out).permute(1, 2, 0, 3)  # (K, N, in, out)
            start = torch.zeros(h.shape, dtype=torch.long, device=h.device)
        elif self.uniform and self.n_out < DENSE_MIN_OUTPUTS:
            # Only k + 1 bases are non-zero per (point, input): gather their coefficients instead of
            # multiplying a mostly-zero dense basis (memory traffic, not flops, is the cost on CPU).
            local, interval = uniform_local(h, self.knots, self.order, n_derivatives)  # (K, N, in, k+1)
            padded = torch.nn.functional.pad(coef, (self.order, self.order)).transpose(1, 2)  # (in, M+2k, out)
            rows = padded.shape[1]
            offsets = torch.arange(self.n_in, device=h.device).unsqueeze(-1) * rows  # (in, 1)
            index = (interval + offsets.T).unsqueeze(-1) + torch.arange(self.order + 1, device=h.device)
            # index_select backs off to index_add, several times faster on CPU than embedding's backward.
            gathered = padded.reshape(-1, self.n_out).index_select(0, index.reshape(-1))
            gathered = gathered.reshape(*index.shape, self.n_out)  # (N, in, k+1, out)
            spline = (local.unsqueeze(-1) * gathered).sum(dim=-2)  # (K, N, in, out)
            start = interval - self.order  # basis index of local[..., 0]
        elif self.uniform:
            # Many outputs per input: scatter the k + 1 active values into a dense basis and multiply by the
            # coefficients with one matmul per input (BLAS beats the elementwise products above here).
            local, interval = uniform_local(h, self.knots, self.order, n_derivatives)  # (K, N, in, k+1)
            index = (interval.unsqueeze(-1) + torch.arange(self.order + 1, device=h.device)).expand_as(local)
            padded = local.new_zeros(*local.shape[:3], self.n_basis + 2 * self.order)
            dense = padded.scatter(-1, index, local)[..., self.order : self.order + self.n_basis]  # (K, N, in, M)
            n_orders, n = local.shape[:2]
            by_input = dense.permute(2, 0, 1, 3).reshape(self.n_in, n_orders * n, self.n_basis)  # (in, K N, M)
            spline = torch.bmm(by_input, coef.transpose(1, 2))  # (in, K N, out)
            spline = spline.reshape(self.n_in, n_orders, n, self.n_out).permute(1, 2, 0, 3)  # (K, N, in, out)
            start = interval - self.order
        else:
            local = torch.stack(self.basis(h, n_derivatives))  # (K, N, in, M)
            spline = torch.einsum("kbim,iom->kbio", local, coef)
            start = torch.zeros(h.shape, dtype=torch.long, device=h.device)
        silu = torch.stack(silu_derivatives(h)[: n_derivatives + 1])  # (K, N, in)
        phi = spline + silu.unsqueeze(-1) * self.scale_base  # (K, N, in, out)
        tape = active_tape()
        if tape is not None:  # exact Jacobians (kanpde.jacobian): where the parameters enter, and with what
            tape.records.append(SplineRecord(self, phi, local.detach(), start, silu.detach()))
        return phi

    def forward_jet(self, jet: Jet) -> Jet:
        """Propagate value, first and pure second derivatives through the layer.

        With h = jet.value (N, in), h_a = d h / d x_a and phi_ij the edge functions:
        y_j = sum_i phi_ij(h_i);  y_j,a = sum_i phi'_ij(h_i) h_i,a;
        y_j,aa = sum_i phi''_ij(h_i) h_i,a^2 + phi'_ij(h_i) h_i,aa.
        """
        phi0, phi1, phi2 = self.edge_functions(jet.value)  # each (N, in, out)
        value = phi0.sum(dim=1)
        first = torch.einsum("nai,nio->nao", jet.first, phi1)  # (N, D, out)
        second = torch.einsum("nai,nio->nao", jet.first**2, phi2) + torch.einsum("nai,nio->nao", jet.second, phi1)
        return Jet(value, first, second)

    def forward_jet_of_inputs(self, x: torch.Tensor) -> Jet:
        """:meth:`forward_jet` for the network's own inputs ``x`` (N, in): d x_i / d x_a = delta_ia,
        so the derivative sums collapse to single edge derivatives."""
        phi0, phi1, phi2 = self.edge_functions(x)
        return Jet(phi0.sum(dim=1), phi1, phi2)

    def spline_values(self, h: torch.Tensor) -> torch.Tensor:
        """The spline branch alone, per edge: ``(N, in, out)`` (without w_spline)."""
        (b,) = self.basis(h)
        return torch.einsum("nim,iom->nio", b, self.coef)

    @torch.no_grad()
    def refit_range(self, h: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, new_grid_size: int,
                    adaptive: float = 0.0) -> "KANLayer":
        """A copy of this layer resolving ``[lo, hi]`` (each (in,)) at ``new_grid_size``, fitted by least squares
        to this layer's edges on the samples ``h`` (N, in): new knots for B-splines (``adaptive`` blends
        them with the quantiles of ``h``), a new range (and degree, frequencies or centres) for global bases."""
        if self.basis_name == "bspline":
            return self.refit(h, _knots_for(h, lo, hi, int(new_grid_size), self.order, adaptive), int(new_grid_size))
        if adaptive > 0:
            raise ValueError(f"adaptive knots (grid_update.adaptive={adaptive}) apply to B-splines only; a "
                             f"{self.basis_name} basis has no knots: set grid_update.adaptive=0 or model.basis=bspline")
        GLOBAL_BASES[self.basis_name].check_grid_size(int(new_grid_size))
        layer = self._empty_copy(int(new_grid_size))
        layer.register_buffer("bounds", torch.stack([lo, hi], dim=1).to(self.bounds))
        return self._fit_into(layer, h)

    def _empty_copy(self, grid_size: int) -> "KANLayer":
        layer = KANLayer.__new__(KANLayer)
        nn.Module.__init__(layer)
        layer.n_in, layer.n_out, layer.order, layer.grid_size = self.n_in, self.n_out, self.order, grid_size
        layer.basis_name, layer.normalize = self.basis_name, self.normalize
        layer.uniform = self.basis_name == "bspline"
        return layer

    @torch.no_grad()
    def refit(self, h: torch.Tensor, new_knots: torch.Tensor, new_grid_size: int) -> "KANLayer":
        """A copy of this (B-spline) layer on ``new_knots`` (in, G' + 2k + 1), with coefficients fitted by least
        squares so that each edge's spline matches this layer's on the samples ``h`` (N, in)."""
        if self.basis_name != "bspline":
            raise TypeError(f"refit takes knots, which a {self.basis_name} layer has none of; use refit_range")
        layer = self._empty_copy(new_grid_size)
        layer.register_buffer("knots", new_knots.to(self.knots))
        layer.uniform = is_uniform(new_knots)
        return self._fit_into(layer, h)

    def _fit_into(self, layer: "KANLayer", h: torch.Tensor) -> "KANLayer":
        """Give ``layer`` (buffers set, no parameters yet) this layer's weights and the least-squares fit of
        this layer's spline branch on ``h`` (N, in)."""
        target = self.spline_values(h).transpose(0, 1)  # (in, N, out)
        (basis,) = layer.basis(h)
        layer.coef = nn.Parameter(_least_squares(basis.transpose(0, 1), target).transpose(1, 2).contiguous())
        layer.scale_base = nn.Parameter(self.scale_base.detach().clone())
        layer.scale_spline = nn.Parameter(self.scale_spline.detach().clone())
        return layer


def _least_squares(a: torch.Tensor, b: torch.Tensor, ridge: float = 1e-10) -> torch.Tensor:
    """Batched min ||a c - b||^2 + ridge ||c||^2 with a (B, N, M), b (B, N, out) -> c (B, M, out).

    The tiny ridge keeps basis functions that no sample touches at zero instead of making the system
    singular (CUDA's lstsq needs full rank), and leaves well-sampled fits exact to round-off.
    """
    batch, _, m = a.shape
    scale = a.abs().amax().clamp(min=1.0)
    eye = torch.eye(m, dtype=a.dtype, device=a.device).expand(batch, m, m) * math.sqrt(ridge) * scale
    a_aug = torch.cat([a, eye], dim=1)
    b_aug = torch.cat([b, torch.zeros(batch, m, b.shape[2], dtype=b.dtype, device=b.device)], dim=1)
    if a.device.type == "cpu":
        return torch.linalg.lstsq(a_aug, b_aug, driver="gelsd").solution
    return torch.linalg.lstsq(a_aug, b_aug).solution


class KAN(nn.Module):
    """A Kolmogorov-Arnold Network, e.g. ``KAN([2, 10, 1], grid_size=5, order=3)``.

    Args:
        widths: layer widths, input first, at least two entries.
        grid_size: grid intervals per spline.
        order: spline order (3: cubic).
        grid_range: ``(lo, hi)`` or one pair per input: the first layer's grid. Map your domain here
            (splines vanish outside it); hidden layers start on ``(-1, 1)`` and follow their activations
            through :meth:`update_grid`.
        noise_scale: scale of the random initial spline coefficients.
        seed: seed of the initialisation; the global RNG is left alone.
        basis, normalize: the edge basis (``"bspline"``, ``"chebyshev"``, ``"fourier"``, ``"rbf"``) and, for the
            global ones, how each layer's range is mapped onto [-1, 1] (``"affine"`` or ``"tanh"``); see
            :mod:`kanpde.nn.bases`. ``grid_size`` is the Chebyshev degree, the number of Fourier frequencies
            or of RBF intervals.
    """

    basis, normalize = "bspline", "affine"  # for networks assembled without __init__

    def __init__(self, widths: Sequence[int], grid_size: int = 5, order: int = 3, grid_range=(-1.0, 1.0),
                 noise_scale: float = 0.1, seed: int | None = 0, basis: str = "bspline", normalize: str = "affine"):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must list at least two positive sizes (input and output), got {widths}")
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))
        if seed is None:
            generator.seed()
        check_basis(basis, normalize)
        self.widths, self.order = widths, int(order)
        self.basis, self.normalize = basis, normalize
        self.layers = nn.ModuleList(
            KANLayer(n_in, n_out, grid_size, order, grid_range if i == 0 else (-1.0, 1.0), noise_scale, generator,
                     basis=basis, normalize=normalize)
            for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]))
        )

    @property
    def grid_size(self) -> int:
        return self.layers[0].grid_size

    def count_parameters(self, grid_size: int | None = None) -> int:
        """Trainable scalars at ``grid_size`` (the current grid by default): per edge the basis coefficients
        (G + k for B-splines), w_base and w_spline."""
        grid = self.grid_size if grid_size is None else int(grid_size)
        return sum(layer.n_in * layer.n_out * (layer.basis_size(grid) + 2) for layer in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network output ``(N, widths[-1])`` at ``x`` (N, widths[0])."""
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_jet(self, x: torch.Tensor) -> Jet:
        """Value, first and pure second derivatives with respect to every input, in one forward pass."""
        jet = self.layers[0].forward_jet_of_inputs(x)
        for layer in self.layers[1:]:
            jet = layer.forward_jet(jet)
        return jet

    @torch.no_grad()
    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of every layer at ``x``: a list of ``(N, width)`` tensors."""
        inputs = []
        for layer in self.layers:
            inputs.append(x)
            x = layer(x)
        return inputs

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int, samples: torch.Tensor, margin: float = 0.1,
                    adaptive: float = 0.0) -> "KAN":
        """A new KAN on ``new_grid_size`` intervals fitted to this one by least squares on ``samples``.

        The first layer keeps its input range; each hidden layer's grid spans the activations it sees
        (plus ``margin`` of their spread each side), so the refit is exact when ``new_grid_size`` is a
        multiple of the current one and the activations already lie inside the grid.
        ``adaptive`` in [0, 1] moves knots towards the quantiles of the activations (pykan's
        ``1 - grid_eps``); anything above 0 switches to the general (non-uniform) basis evaluation.
        """
        if not _is_positive_integer(new_grid_size):
            raise ValueError(f"new_grid_size must be an integer >= 1, got {new_grid_size!r}")
        if not 0.0 <= adaptive <= 1.0:
            raise ValueError(f"adaptive must lie in [0, 1], got {adaptive}")
        new = KAN.__new__(KAN)
        nn.Module.__init__(new)
        new.widths, new.order = list(self.widths), self.order
        new.basis, new.normalize = self.basis, self.normalize
        layers = []
        for index, (layer, h) in enumerate(zip(self.layers, self.layer_inputs(samples))):
            lo, hi = layer.input_range() if index == 0 else _padded_range(h, margin)
            layers.append(layer.refit_range(h, lo, hi, int(new_grid_size), adaptive))
        new.layers = nn.ModuleList(layers)
        return new

    @torch.no_grad()
    def update_grid(self, samples: torch.Tensor, margin: float = 0.1, adaptive: float = 0.0,
                    first_layer: bool = False) -> None:
        """Move hidden layers' knots to the range of the activations seen at ``samples``, in place.

        Coefficients are refitted so each edge keeps its shape on the samples, as pykan's
        ``update_grid_from_samples`` does. The first layer keeps its (domain) range unless ``first_layer``.
        """
        h = samples
        for index, layer in enumerate(self.layers):
            if index == 0 and not first_layer:
                h = layer(h)
                continue
            lo, hi = _padded_range(h, margin)
            fitted = layer.refit_range(h, lo, hi, layer.grid_size, adaptive)
            for name, buffer in fitted.named_buffers():  # knots, or a global basis's bounds
                getattr(layer, name).copy_(buffer)
            layer.uniform = fitted.uniform
            layer.coef.copy_(fitted.coef)
            h = layer(h)  # the next layer sees the updated activations (as pykan's update_grid_from_samples)

    @torch.no_grad()
    def fraction_outside_grid(self, samples: torch.Tensor) -> list[float]:
        """Per layer, the fraction of activations at ``samples`` outside its grid (where splines vanish)."""
        fractions = []
        for layer, h in zip(self.layers, self.layer_inputs(samples)):
            lo, hi = layer.input_range()
            fractions.append(float(((h < lo) | (h > hi)).to(torch.float64).mean()))
        return fractions

    def warn_if_outside(self, samples: torch.Tensor, tolerance: float = 0.01) -> None:
        """Warn when more than ``tolerance`` of some layer's activations leave its grid."""
        for index, fraction in enumerate(self.fraction_outside_grid(samples)):
            if fraction > tolerance:
                warnings.warn(f"KAN layer {index}: {fraction:.1%} of activations lie outside its grid, where the "
                              "spline branch is zero; call update_grid(samples) or widen grid_range", stacklevel=2)


def _padded_range(h: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = h.amin(dim=0), h.amax(dim=0)
    spread = (hi - lo).clamp(min=1e-3)
    return lo - margin * spread, hi + margin * spread


MIN_INTERVAL = 0.05  # adaptive knots: narrowest interval, as a fraction of the uniform spacing


def _knots_for(h: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, grid_size: int, order: int,
               adaptive: float) -> torch.Tensor:
    """Knots (in, G + 2k + 1): uniform on [lo, hi], or blended with sample quantiles (``adaptive`` > 0).

    Quantiles repeat where many samples share a value (boundary points all at x = 1, say); every interval
    is therefore made at least ``MIN_INTERVAL`` of the uniform spacing wide (then all widths shrink a
    little to span [lo, hi] again), and the k knots outside [lo, hi] are spaced uniformly. Otherwise coincident
    knots would make every spline vanish at such a value.
    """
    knots = make_knots(lo, hi, grid_size, order)
    if adaptive <= 0:
        return knots
    probabilities = torch.linspace(0, 1, grid_size + 1, dtype=h.dtype, device=h.device)
    quantiles = torch.quantile(h, probabilities, dim=0).T  # (in, G + 1)
    quantiles[:, 0], quantiles[:, -1] = lo, hi
    interior = (1 - adaptive) * knots[:, order:-order] + adaptive * quantiles
    uniform = ((hi - lo) / grid_size).unsqueeze(1)  # (in, 1)
    widths = (interior[:, 1:] - interior[:, :-1]).maximum(MIN_INTERVAL * uniform)
    widths = widths * ((hi - lo).unsqueeze(1) / widths.sum(dim=1, keepdim=True))
    interior = torch.cat([lo.unsqueeze(1), lo.unsqueeze(1) + widths.cumsum(dim=1)], dim=1)
    interior[:, -1] = hi
    return torch.cat([knots[:, :order], interior, knots[:, -order:]], dim=1)
