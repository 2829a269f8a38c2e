"""Exact Jacobians of residual vectors with respect to network parameters, and their Gauss-Newton products.

Two ways to the same rows d r_n / d theta, one per point n:

* :func:`structured_rows` (the fast path): the forward pass runs under :func:`kanpde.nn.tape.recording`,
  so every layer has recorded the tensor through which its parameters act and the per-point features
  they multiply. One backward of ``sum(r)`` gives dr_n / d(that tensor) for every n at once, and each
  row follows in closed form. A KAN point touches only k + 1 coefficients per edge, and the rows are
  built from those alone. Valid when r_n depends on row n of each network evaluation only (pointwise
  residuals, conditions, periodic pairs, hard constraints, several outputs); the caller checks this
  against :func:`generic_rows` on a probe before relying on it.
* :func:`generic_rows`: reverse mode, one vector-Jacobian product per row (batched with
  ``is_grads_batched``), for anything else (mixed derivatives through autograd, parameters the network
  does not own).

:func:`gram` forms J^T J blockwise: rows are grouped by where their points lie (:func:`cell_keys`), and each
group's product is taken over the columns it touches. The spline rows of a cell touch a fraction of the
coefficients, so this costs a fraction of the dense product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.linalg import blas

from kanpde.nn.tape import LinearRecord, SplineRecord


class ParameterIndex:
    """Column offsets of a list of parameters in the flattened vector theta."""

    def __init__(self, parameters: Sequence[torch.Tensor]):
        self.parameters = list(parameters)
        self.offsets: dict[int, int] = {}
        total = 0
        for parameter in self.parameters:
            self.offsets[id(parameter)] = total
            total += parameter.numel()
        self.size = total

    def offset(self, parameter: torch.Tensor) -> int | None:
        return self.offsets.get(id(parameter))

    def vector(self) -> torch.Tensor:
        """theta as one detached vector (P,)."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters])

    @torch.no_grad()
    def add_(self, delta: torch.Tensor) -> None:
        """theta += delta, in place, for delta (P,)."""
        for parameter in self.parameters:
            start = self.offsets[id(parameter)]
            parameter.add_(delta[start : start + parameter.numel()].view_as(parameter))

    @torch.no_grad()
    def set_(self, theta: torch.Tensor) -> None:
        for parameter in self.parameters:
            start = self.offsets[id(parameter)]
            parameter.copy_(theta[start : start + parameter.numel()].view_as(parameter))


class NotStructured(RuntimeError):
    """The recorded evaluations do not determine the rows (the caller falls back to generic rows)."""


def structured_rows(residual: torch.Tensor, records: Sequence, index: ParameterIndex,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows d residual_n / d theta ``(N, P)`` of a residual ``(N,)`` from the layers' tape records.

    ``out``: an ``(N, P)`` buffer to fill (a large fresh allocation costs page faults every iteration).

    Parameters in ``index`` that no record covers (a problem's unknown coefficients) get their columns by
    :func:`add_columns`, exact and cheap while they are few. Raises :class:`NotStructured` when a record was made
    at another number of points, or when more than ``MAX_EXTRA_COLUMNS`` numbers lie outside the records.
    """
    n = residual.shape[0]
    if not records or any(record.n_points != n for record in records):
        raise NotStructured("network evaluations at another number of points than the residual")
    covered = {id(p) for record in records for p in record.layer.parameters()}
    outside = [p for p in index.parameters if p.requires_grad and id(p) not in covered]
    if sum(p.numel() for p in outside) > MAX_EXTRA_COLUMNS:
        raise NotStructured("many parameters outside the recorded layers")
    signals = torch.autograd.grad(residual.sum(), [record.output for record in records], retain_graph=True,
                                  allow_unused=True)
    rows = residual.new_zeros(n, index.size) if out is None else out.zero_()
    for record, signal in zip(records, signals):
        if signal is None:  # this evaluation does not reach the residual
            continue
        if isinstance(record, SplineRecord):
            _spline_rows(rows, record, signal, index)
        elif isinstance(record, LinearRecord):
            _linear_rows(rows, record, signal, index)
        else:
            raise NotStructured(f"unknown record {type(record).__name__}")
    if outside:
        add_columns(rows, residual, outside, index)
    return rows


MAX_EXTRA_COLUMNS = 64  # parameters outside the network's records that structured_rows fills column by column


def add_columns(rows: torch.Tensor, residual: torch.Tensor, parameters: Sequence[torch.Tensor],
                index: ParameterIndex) -> None:
    """Add the columns d residual / d p ``(N,)`` of a few ``parameters`` into ``rows`` (N, P), exactly: J v for
    each unit vector v by the double-backward trick (J^T u is linear in u, so d(v . J^T u)/du = J v), about two
    backward passes of the residual's graph per column (which must still be alive: ``retain_graph``)."""
    seed = torch.zeros_like(residual, requires_grad=True)
    grads = torch.autograd.grad(residual, list(parameters), grad_outputs=seed, create_graph=True, allow_unused=True,
                                materialize_grads=True)
    for parameter, grad in zip(parameters, grads):
        offset, flat = index.offset(parameter), grad.reshape(-1)
        for k in range(flat.numel()):
            if flat[k].requires_grad:  # else the residual does not depend on it: a zero column
                (column,) = torch.autograd.grad(flat[k], seed, retain_graph=True, allow_unused=True,
                                                materialize_grads=True)
                rows[:, offset + k] += column.detach()


def _spline_rows(rows: torch.Tensor, record: SplineRecord, signal: torch.Tensor, index: ParameterIndex) -> None:
    """Add a KAN layer's contribution to ``rows`` (N, P), given signal = d sum(r) / d phi ``(K, N, in, out)``.

    phi_ij = w_base_ij silu(h_i) + w_spline_ij sum_m c_ijm B_m(h_i) (and its derivatives, row k), so
    d r_n / d c_ijm = w_spline_ij sum_k signal_k,nij B^(k)_m(h_ni), non-zero for the w active m only.
    """
    layer = record.layer
    n, n_in, n_out = signal.shape[1], layer.n_in, layer.n_out
    n_basis = layer.coef.shape[-1]
    with torch.no_grad():
        # d r / d (w_spline c) on the active window: (N, in, out, w)
        local = (signal.unsqueeze(-1) * record.local.unsqueeze(3)).sum(0)  # (broadcast: einsum's bmm is slower)
        basis_index = record.start.unsqueeze(-1) + torch.arange(record.local.shape[-1], device=rows.device)
        valid = ((basis_index >= 0) & (basis_index < n_basis)).unsqueeze(2)  # (N, in, 1, w)
        basis_index = basis_index.clamp(0, n_basis - 1).unsqueeze(2)  # (N, in, 1, w)
        local = torch.where(valid, local, torch.zeros((), dtype=local.dtype, device=local.device))
        edge = (torch.arange(n_in, device=rows.device).view(1, n_in, 1, 1) * n_out
                + torch.arange(n_out, device=rows.device).view(1, 1, n_out, 1))  # (1, in, out, 1)
        coef_offset = index.offset(layer.coef)
        if coef_offset is not None and layer.coef.requires_grad:
            columns = coef_offset + edge * n_basis + basis_index  # (N, in, out, w)
            values = local * layer.scale_spline.unsqueeze(-1)
            rows.scatter_add_(1, columns.reshape(n, -1), values.reshape(n, -1))
        spline_offset = index.offset(layer.scale_spline)
        if spline_offset is not None and layer.scale_spline.requires_grad:
            coef = layer.coef.unsqueeze(0).expand(n, -1, -1, -1)  # (N, in, out, M)
            gathered = coef.gather(-1, basis_index.expand(-1, -1, n_out, -1))  # (N, in, out, w)
            rows[:, spline_offset : spline_offset + n_in * n_out] += (local * gathered).sum(-1).reshape(n, -1)
        base_offset = index.offset(layer.scale_base)
        if base_offset is not None and layer.scale_base.requires_grad:
            base = (signal * record.silu.unsqueeze(-1)).sum(0)  # (N, in, out)
            rows[:, base_offset : base_offset + n_in * n_out] += base.reshape(n, -1)


def _linear_rows(rows: torch.Tensor, record: LinearRecord, signal: torch.Tensor, index: ParameterIndex) -> None:
    """A linear layer's contribution: d r_n / d W_oi = sum_c signal_nco s_nci, d r_n / d b_o = signal_n0o."""
    layer = record.layer
    n = signal.shape[0]
    with torch.no_grad():
        weight_offset = index.offset(layer.weight)
        if weight_offset is not None and layer.weight.requires_grad:
            weight = torch.einsum("nco,nci->noi", signal, record.features)  # (N, out, in), W's layout
            rows[:, weight_offset : weight_offset + layer.weight.numel()] += weight.reshape(n, -1)
        bias_offset = index.offset(layer.bias) if layer.bias is not None else None
        if bias_offset is not None and layer.bias.requires_grad:
            rows[:, bias_offset : bias_offset + layer.bias.numel()] += signal[:, 0]


def generic_rows(residual: torch.Tensor, index: ParameterIndex, batch: int = 64) -> torch.Tensor:
    """Rows d residual_n / d theta ``(N, P)`` by reverse mode: one vector-Jacobian product per row,
    ``batch`` rows per vectorised backward. Exact for any residual; costs about N / batch backward passes
    of the whole graph, so callers hand it small point sets."""
    n = residual.shape[0]
    parameters = index.parameters
    rows = residual.new_zeros(n, index.size)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        seeds = torch.zeros(stop - start, n, dtype=residual.dtype, device=residual.device)
        seeds[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        try:
            grads = torch.autograd.grad(residual, parameters, grad_outputs=seeds, is_grads_batched=True,
                                        retain_graph=True, allow_unused=True, materialize_grads=True)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:  # an operation without a batching rule: one backward per row
            grads = [torch.stack(parts) for parts in zip(*(
                torch.autograd.grad(residual, parameters, grad_outputs=seed, retain_graph=True, allow_unused=True,
                                    materialize_grads=True) for seed in seeds))]
        # A parameter the residual does not use gets materialised zeros without the batch dimension.
        rows[start:stop] = torch.cat([g.new_zeros(stop - start, p.numel()) if g.shape == p.shape
                                      else g.reshape(stop - start, -1) for g, p in zip(grads, parameters)], dim=1)
    return rows


def generic_columns(residual: torch.Tensor, index: ParameterIndex) -> torch.Tensor:
    """Rows d residual_n / d theta ``(N, P)`` built a column at a time: J v for each unit vector v, by the
    double-backward trick (J^T u is linear in u, so d(v . J^T u)/du = J v). Exact for any residual; costs
    about 2 P backward passes however many rows there are, so it wins over :func:`generic_rows` when the
    parameters are few (a formula's constants)."""
    rows = residual.new_zeros(residual.shape[0], index.size)
    add_columns(rows, residual, index.parameters, index)
    return rows


def cell_keys(points: torch.Tensor, lower: Sequence[float], upper: Sequence[float], rows_per_cell: int = 128
              ) -> torch.Tensor:
    """A block number per point ``(N,)`` (long): runs of ``rows_per_cell`` points consecutive in Z-order.

    Nearby points touch the same spline coefficients, so rows grouped by block share most of their zeros.
    The Z-order (Morton) curve over a fine grid of the box keeps runs compact whatever the dimension of
    the point set (the interior, a face, an edge), so blocks stay small on faces too.
    """
    n, dim = points.shape
    bits = max(1, 30 // dim)  # 2^bits cells per side, all the bits of a key within 30
    lo = torch.as_tensor(lower, dtype=points.dtype, device=points.device)
    hi = torch.as_tensor(upper, dtype=points.dtype, device=points.device)
    cells = ((points.detach() - lo) / (hi - lo) * 2**bits).floor().clamp(0, 2**bits - 1).long()  # (N, d)
    morton = torch.zeros(n, dtype=torch.long, device=points.device)
    for bit in range(bits):
        for axis in range(dim):
            morton |= ((cells[:, axis] >> bit) & 1) << (bit * dim + axis)
    rank = torch.empty_like(morton)
    rank[torch.argsort(morton, stable=True)] = torch.arange(n, device=points.device)
    return rank // max(1, int(rows_per_cell))


def gram(rows: torch.Tensor, keys: torch.Tensor | None = None, dense_fraction: float = 0.7,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """The upper triangle of J^T J ``(P, P)`` (zeros below) for rows ``(N, P)``, blockwise over the groups of
    equal ``keys`` (N,); added into ``out`` when given. Cholesky reads one triangle, so no symmetrising.

    Each group contributes the product of its rows restricted to the columns they touch; a group that
    touches more than ``dense_fraction`` of the columns (an MLP touches all) is multiplied densely.
    """
    n, size = rows.shape
    upper = rows.new_zeros(size, size) if out is None else out
    if n == 0:
        return upper
    if keys is None:
        return upper.add_(_upper_product(rows))
    in_order = bool(torch.all(keys[1:] >= keys[:-1]))  # rows already grouped: blocks are slices, no copies
    order = None if in_order else torch.argsort(keys, stable=True)
    counts = torch.unique_consecutive(keys if in_order else keys[order], return_counts=True)[1].tolist()
    flat = upper.view(-1)
    dense = []
    for members in (torch.split(rows, counts) if in_order else torch.split(order, counts)):
        block = members if in_order else rows.index_select(0, members)  # (count, P)
        columns = torch.nonzero(block.abs().amax(dim=0)).squeeze(1)  # sorted: upper stays upper
        if len(columns) > dense_fraction * size:
            dense.append(block)
            continue
        sub = block.index_select(1, columns)  # (count, active)
        # The block's product lands on (columns x columns): one flat index_add, no gather of old values.
        flat.index_add_(0, (columns.unsqueeze(1) * size + columns).reshape(-1), _upper_product(sub).reshape(-1))
    if dense:
        upper.add_(_upper_product(torch.cat(dense)))
    return upper


def _upper_product(rows: torch.Tensor) -> torch.Tensor:
    """The upper triangle of rows^T rows ``(P, P)`` (zeros below): BLAS syrk on the CPU, half a matmul's work."""
    if rows.device.type == "cpu" and rows.dtype in (torch.float64, torch.float32):
        syrk = blas.dsyrk if rows.dtype == torch.float64 else blas.ssyrk
        # A C-ordered (n, P) array is the Fortran-ordered (P, n) matrix rows^T: syrk(trans=0) gives rows^T rows,
        # Fortran-ordered; its transpose is the C-ordered lower triangle, i.e. (read back) the upper one.
        product = syrk(1.0, rows.detach().contiguous().numpy().T, trans=0, lower=1)
        return torch.from_numpy(product.T)
    return torch.triu(rows.T @ rows)


def symmetric(upper: torch.Tensor) -> torch.Tensor:
    """The full symmetric matrix from its upper triangle."""
    return upper + torch.triu(upper, diagonal=1).T
