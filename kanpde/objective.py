"""The training objective: weighted mean squares of residuals, as a loss and as a residual vector.

The loss is sum_t w_t mean_n(r_tn^2) over terms t (each PDE residual equation at the interior points, each
condition at its points), which is ||R||^2 for the stacked vector R with entries sqrt(w_t / N_t) r_tn.
First-order optimizers see the loss and its gradient (:meth:`LeastSquares.backward`); a least-squares
optimizer sees R's Gauss-Newton products J^T J and J^T R (:meth:`LeastSquares.gauss_newton`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import torch

from kanpde.derivatives import Fields
from kanpde.jacobian import (NotStructured, ParameterIndex, cell_keys, generic_columns, generic_rows, gram,
                             structured_rows, symmetric)
from kanpde.nn.tape import recording
from kanpde.problem import Problem
from kanpde.prune import sparsity_penalty
from kanpde.unknowns import unknown_parameters

log = logging.getLogger("kanpde")


def _fields_factory(problem: Problem, model: torch.nn.Module, engine: str, transform, plain_values: bool = False):
    constraint = getattr(problem, "hard_constraint", None)
    if transform is None and constraint is not None:
        transform = constraint.apply_jet

    def fields(x, data=None):
        return Fields(model, x, problem.variables, problem.outputs, engine, transform, problem.domain, plain_values,
                      data)

    return fields


def aligned(values: torch.Tensor | None, x: torch.Tensor, name: str = "") -> torch.Tensor | None:
    """A condition's ``values`` (N, k) in the dtype and on the device of its points ``x`` (N, d), or None."""
    if values is None:
        return None
    if len(values) != len(x):
        raise ValueError(f"condition {name!r} has {len(values)} rows of values for {len(x)} points; its points and "
                         "values must stay aligned (observations keep the points they were built with)")
    return values.to(dtype=x.dtype, device=x.device)


def residual_terms(problem: Problem, model: torch.nn.Module, interior: torch.Tensor, engine: str = "forward",
                   transform=None, scale: Callable | None = None) -> dict[str, torch.Tensor]:
    """``residual_weight * mean(residual^2)`` per residual equation at ``interior`` (N, n_vars); ``scale(x) -> (N,)``
    multiplies each residual first (a time decay, :mod:`kanpde.windows`), or None."""
    fields = _fields_factory(problem, model, engine, transform)
    return {name: problem.residual_weight * residual.pow(2).mean()
            for name, residual in _scaled(_named(problem.residual(interior, fields(interior)), "pde"), interior, scale)}


def _scaled(named, x: torch.Tensor, scale: Callable | None):
    """[(name, residual)] with each residual multiplied by ``scale(x)`` (N,) when a scale is given."""
    if scale is None:
        return named
    factor = scale(x.detach())
    return [(name, residual * factor) for name, residual in named]


def condition_terms(problem: Problem, model: torch.nn.Module, points: Mapping[str, torch.Tensor],
                    engine: str = "forward", transform=None) -> dict[str, torch.Tensor]:
    """``weight * mean(residual^2)`` per condition, at ``points[condition name]``."""
    # Face points are few and Dirichlet conditions read values only: skip derivative propagation there.
    fields = _fields_factory(problem, model, engine, transform, plain_values=True)
    terms = {}
    for name, condition in problem.conditions().items():
        x = points[name]
        for key, residual in _named(condition.residual(x, fields(x, aligned(condition.values, x, name))), name):
            terms[key] = condition.weight * residual.pow(2).mean()
    return terms


def loss_terms(problem: Problem, model: torch.nn.Module, points: Mapping[str, torch.Tensor],
               engine: str = "forward", transform=None, scale: Callable | None = None) -> dict[str, torch.Tensor]:
    """Weighted mean-square terms: one per residual equation and one per condition.

    ``transform`` defaults to the problem's ``hard_constraint.apply_jet`` when it has one; ``scale`` multiplies the
    interior residuals (:func:`residual_terms`).
    """
    return {**residual_terms(problem, model, points["interior"], engine, transform, scale),
            **condition_terms(problem, model, points, engine, transform)}


def backward_in_chunks(problem: Problem, model: torch.nn.Module, points: Mapping[str, torch.Tensor],
                       chunk_size: int | None = None, engine: str = "forward", transform=None,
                       backward: bool = True, scale: Callable | None = None) -> dict[str, float]:
    """Back-propagate the total loss, interior points ``chunk_size`` at a time; returns the loss terms.

    Mean-square terms are additive over chunks when each chunk's mean is weighted by its share of the
    points, so the gradient equals the unchunked one while only one chunk's graph is alive at a time.
    With ``backward=False`` the terms are only evaluated (see :func:`evaluate_terms`).
    """
    def done(terms):
        if backward and terms:
            sum(terms.values()).backward()
        return {k: float(v.detach()) for k, v in terms.items()}

    interior = points["interior"]
    if chunk_size is None or len(interior) <= chunk_size:
        return done(loss_terms(problem, model, points, engine, transform, scale))
    totals: dict[str, float] = {}
    for terms in weighted_chunks(problem, model, interior, chunk_size, engine, transform, scale):
        for k, v in done(terms).items():
            totals[k] = totals.get(k, 0.0) + v
    return {**totals, **done(condition_terms(problem, model, points, engine, transform))}


def weighted_chunks(problem: Problem, model: torch.nn.Module, interior: torch.Tensor, chunk_size: int,
                    engine: str = "forward", transform=None, scale: Callable | None = None):
    """:func:`residual_terms` of each chunk of ``chunk_size`` interior points (N, n_vars), weighted by the
    chunk's share of the points: the terms of all chunks add up to the unchunked ones."""
    for start in range(0, len(interior), chunk_size):
        part = interior[start : start + chunk_size]
        yield {k: v * (len(part) / len(interior))
               for k, v in residual_terms(problem, model, part, engine, transform, scale).items()}


def evaluate_terms(problem: Problem, model: torch.nn.Module, points: Mapping[str, torch.Tensor],
                   chunk_size: int | None = None, engine: str = "forward", transform=None,
                   scale: Callable | None = None) -> dict[str, float]:
    """The loss terms at the current parameters, without a backward pass.

    A graph is built only where the derivatives themselves need autograd: engine ``"autograd"``, or point
    sets that require grad (``train``'s ``input_grad``: mixed or higher derivatives, on any point set).
    """
    needs_graph = engine == "autograd" or any(x.requires_grad for x in points.values())
    with torch.set_grad_enabled(needs_graph):
        return backward_in_chunks(problem, model, points, chunk_size, engine, transform, backward=False, scale=scale)


def residual_magnitude(problem: Problem, model: torch.nn.Module, x: torch.Tensor, engine: str = "forward",
                       transform=None, needs_graph: bool = False, chunk_size: int = 16384) -> torch.Tensor:
    """sqrt(sum of squared residual equations) at points ``x`` (N, n_vars): (N,), detached."""
    fields = _fields_factory(problem, model, engine, transform)
    parts = []
    with torch.set_grad_enabled(needs_graph or engine == "autograd"):
        for start in range(0, len(x), chunk_size):
            part = x[start : start + chunk_size].detach().requires_grad_(needs_graph)
            residuals = _named(problem.residual(part, fields(part)), "pde")
            parts.append(torch.sqrt(sum(r.detach() ** 2 for _, r in residuals)))
    return torch.cat(parts)


def _named(residual, default: str):
    if isinstance(residual, Mapping):
        return [(f"{default}_{k}" if default != "pde" else str(k), v) for k, v in residual.items()]
    if isinstance(residual, (tuple, list)):
        return [(f"{default}{i}", v) for i, v in enumerate(residual)]
    return [(default, residual)]


@dataclass
class GaussNewton:
    """The Gauss-Newton products of the residual vector R at the current parameters.

    Attributes:
        jtj_upper: the upper triangle of J^T J ``(P, P)``, zeros below (all a Cholesky solve reads).
        jtr: J^T R ``(P,)``; the loss gradient is 2 J^T R.
        terms: each term's ||R_t||^2, i.e. its weighted mean square; ``loss`` is their sum.
    """

    jtj_upper: torch.Tensor
    jtr: torch.Tensor
    terms: dict[str, float]

    @property
    def loss(self) -> float:
        return sum(self.terms.values())

    @property
    def jtj(self) -> torch.Tensor:
        """J^T J in full."""
        return symmetric(self.jtj_upper)


@dataclass
class _Group:
    """One point set and the residual equations evaluated there."""

    name: str  # "interior" or a condition's name
    weight: float
    residuals: Callable  # (x, fields) -> [(term name, (N,) residual), ...]
    plain_values: bool
    data: torch.Tensor | None = None  # (N, k) values aligned with the set's points (observations)


class LeastSquares:
    """The training objective over ``points``, for every kind of optimizer.

    Args:
        problem, model: what is trained.
        points: point sets by name (``"interior"`` and each condition's), read afresh at every call, so the
            training loop may replace a set (resampling).
        engine, transform: as for :class:`~kanpde.derivatives.Fields`.
        chunk_size: interior points per chunk for loss and gradient (bounded memory, same values).
        input_grad: point sets whose residuals take mixed or higher derivatives by autograd.
        jacobian_chunk: points per chunk of Jacobian rows (memory: ``jacobian_chunk * P`` numbers, 106 MB for
            the default KAN in float64); a set that fits in one chunk reuses the accepted trial's forward pass.
    """

    GENERIC_CHUNK = 256  # points per chunk on the generic Jacobian path (its cost grows with chunk size)
    COLUMNS_MAX_PARAMETERS = 64  # up to this many parameters the generic path builds J column by column
    ROWS_PER_CELL = 128  # rows per block of the blockwise J^T J (measured near-best on Poisson, 2,900 rows)

    def __init__(self, problem: Problem, model: torch.nn.Module, points: Mapping[str, torch.Tensor], *,
                 engine: str = "forward", transform=None, chunk_size: int | None = None,
                 input_grad: Collection[str] = (), jacobian_chunk: int = 16384):
        self.problem, self.model, self.points = problem, model, points
        self.engine, self.transform, self.chunk_size = engine, transform, chunk_size
        self.input_grad = frozenset(input_grad)
        self.jacobian_chunk = int(jacobian_chunk)
        self.evaluations = 0  # loss evaluations (with or without gradient or Jacobian)
        self.sparsity = 0.0  # lambda of the KAN sparsity regulariser added by backward() (first-order methods)
        self.unknowns = unknown_parameters(problem)  # the problem's unknown coefficients, trained with the model
        self.residual_scale: Callable | None = None  # (x) -> (N,) multiplying the interior residuals (set_residual_scale)
        self._structured: dict[str, bool] = {}  # group -> structured rows verified against generic ones
        self._buffer: torch.Tensor | None = None
        self._order_cache: dict[str, tuple] = {}  # set name -> (points, version, points in cell order, keys, order)
        self._data_cache: dict[str, tuple] = {}  # set name -> (points in cell order, their values in that order)
        self._kept: dict[str, tuple] = {}  # set name -> (parameter state, points, evaluation) of a trial
        self._trial_terms: tuple | None = None  # (parameter state, point sets, loss terms) of the last trial

    def parameters(self) -> list[torch.Tensor]:
        """What the optimizers train: the model's parameters, then the problem's unknown coefficients."""
        return [p for p in self.model.parameters() if p.requires_grad] + self.unknowns

    def set_model(self, model: torch.nn.Module) -> None:
        """Train another model from now on (a grid extension's new KAN): what was cached for the old one goes."""
        self.model = model
        self._kept.clear()
        self._buffer, self._trial_terms = None, None

    def set_residual_scale(self, scale: Callable | None) -> None:
        """Multiply the interior residuals by ``scale(x) -> (N,)`` from now on (None: by 1), e.g. a stage's time decay
        (:func:`kanpde.windows.time_decay`); a trial's kept forward pass under the old scale goes."""
        if scale is not self.residual_scale:
            self.residual_scale = scale
            self._kept.clear()
            self._trial_terms = None

    def _state(self, parameters: list[torch.Tensor]) -> tuple:
        """Parameters and buffers (a KAN's knots) with their versions: a kept forward pass is valid for this."""
        return _state([*parameters, *self.model.buffers()])

    def loss_terms(self) -> dict[str, float]:
        """The loss terms at the current parameters (no gradient)."""
        self.evaluations += 1
        return evaluate_terms(self.problem, self.model, self.points, self.chunk_size, self.engine, self.transform,
                              self.residual_scale)

    def loss(self) -> float:
        return sum(self.loss_terms().values())

    def backward(self) -> dict[str, float]:
        """Accumulate the loss gradient into the parameters' ``.grad``; returns the loss terms (with the
        ``"sparsity"`` penalty when :attr:`sparsity` is set)."""
        self.evaluations += 1
        terms = backward_in_chunks(self.problem, self.model, self.points, self.chunk_size, self.engine,
                                   self.transform, scale=self.residual_scale)
        if self.sparsity:
            penalty = self.sparsity * sparsity_penalty(self.model, self.points["interior"].detach())
            penalty.backward()
            terms["sparsity"] = float(penalty.detach())
        return terms

    def _groups(self) -> list[_Group]:
        problem = self.problem
        scale = self.residual_scale
        groups = [_Group("interior", problem.residual_weight,
                         lambda x, d: _scaled(_named(problem.residual(x, d), "pde"), x, scale), plain_values=False)]
        for name, condition in problem.conditions().items():
            groups.append(_Group(name, condition.weight,
                                 lambda x, d, c=condition, n=name: _named(c.residual(x, d), n), plain_values=True,
                                 data=condition.values))
        return groups

    def gauss_newton(self, index: ParameterIndex) -> GaussNewton:
        """J^T J, J^T R and the loss terms at the current parameters, accumulated over chunks of points."""
        self.evaluations += 1
        size = index.size
        reference = index.parameters[0]
        jtj = reference.new_zeros(size, size)  # upper triangle
        jtr = reference.new_zeros(size)
        terms: dict[str, float] = {}
        for group in self._groups():
            points, keys = self._in_cell_order(group.name)
            data = self._data_in_order(group)
            n_total = len(points)
            structured = self._use_structured(group, index)
            by_columns = not structured and size <= self.COLUMNS_MAX_PARAMETERS
            chunk = self.jacobian_chunk if structured or by_columns else self.GENERIC_CHUNK
            for start in range(0, n_total, chunk):
                x = points[start : start + chunk]
                kept = self._kept.pop(group.name, None)
                if kept is not None and _same(kept[0], self._state(index.parameters)) and kept[1] is points \
                        and start == 0 and len(x) == len(points):
                    evaluated = kept[2]  # the accepted trial's forward pass, at these very parameters and points
                else:
                    evaluated = self._evaluate(group, x, None if data is None else data[start : start + chunk])
                for name, residual, records in evaluated:
                    scaled = residual * math.sqrt(group.weight / n_total)  # entries of R
                    if structured:
                        rows = structured_rows(scaled, records, index, self._rows_buffer(len(x), size, scaled))
                    elif by_columns:
                        rows = generic_columns(scaled, index)
                    else:
                        rows = generic_rows(scaled, index)
                    scaled = scaled.detach()
                    gram(rows, keys[start : start + chunk], out=jtj)
                    jtr += rows.T @ scaled
                    terms[name] = terms.get(name, 0.0) + float(scaled @ scaled)
        self._kept.clear()
        return GaussNewton(jtj, jtr, terms)

    def trial_loss(self, index: ParameterIndex) -> float:
        """The loss at the current parameters, keeping the forward pass of each point set that fits in one
        Jacobian chunk: if the caller accepts these parameters, :meth:`gauss_newton` starts from it."""
        self.evaluations += 1
        self._kept.clear()
        state, terms = self._state(index.parameters), {}
        for group in self._groups():
            points, _ = self._in_cell_order(group.name)
            if len(points) <= self.jacobian_chunk and self._structured.get(group.name):
                evaluated = self._evaluate(group, points, self._data_in_order(group))
                self._kept[group.name] = (state, points, evaluated)
                terms.update({name: group.weight * float(r.detach().pow(2).mean()) for name, r, _ in evaluated})
            else:
                terms.update(self._group_terms(group))
        self._trial_terms = (state, dict(self.points), terms)
        return sum(terms.values())

    def current_terms(self) -> dict[str, float]:
        """The loss terms at the current parameters (for history rows): the last trial's when neither the
        parameters, the buffers nor the points changed since (an accepted LM step), else evaluated afresh."""
        cached = self._trial_terms
        if cached is not None and _same(cached[0], self._state(self.parameters())) \
                and cached[1].keys() == self.points.keys() and all(self.points[k] is v for k, v in cached[1].items()):
            return dict(cached[2])
        return evaluate_terms(self.problem, self.model, self.points, self.chunk_size, self.engine, self.transform,
                              self.residual_scale)

    def _group_terms(self, group: _Group) -> dict[str, float]:
        """One point set's loss terms, without a graph where the derivatives allow."""
        x = self.points[group.name]
        with torch.set_grad_enabled(self.engine == "autograd" or x.requires_grad):
            if group.name == "interior":
                terms: dict[str, float] = {}
                for chunk in weighted_chunks(self.problem, self.model, x, self.chunk_size or len(x), self.engine,
                                             self.transform, self.residual_scale):
                    for k, v in chunk.items():
                        terms[k] = terms.get(k, 0.0) + float(v.detach())
                return terms
            fields = _fields_factory(self.problem, self.model, self.engine, self.transform, plain_values=True)
            return {k: group.weight * float(r.detach().pow(2).mean())
                    for k, r in group.residuals(x, fields(x, aligned(group.data, x, group.name)))}

    def _in_cell_order(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The points of a set sorted by cell of the domain, and their cell keys: Jacobian rows then come
        grouped as the blockwise J^T J wants them (the loss does not depend on the order). Cached per tensor."""
        points = self.points[name]
        cached = self._order_cache.get(name)
        if cached is not None and cached[0] is points and cached[1] == points._version:
            return cached[2], cached[3]
        box = self.problem.domain
        keys = cell_keys(points, box.lower, box.upper, self.ROWS_PER_CELL)
        keys, order = torch.sort(keys, stable=True)
        ordered = points.detach()[order]
        if points.requires_grad:
            ordered.requires_grad_(True)
        self._order_cache[name] = (points, points._version, ordered, keys, order)
        return ordered, keys

    def _data_in_order(self, group: _Group) -> torch.Tensor | None:
        """The group's values (N, k) in the cell order of its points (:meth:`_in_cell_order`), or None; converted
        and permuted once per point set (cached beside the cell order)."""
        if group.data is None:
            return None
        ordered, _ = self._in_cell_order(group.name)
        cached = self._data_cache.get(group.name)
        if cached is None or cached[0] is not ordered:  # a new point set (or order): convert and permute again
            order = self._order_cache[group.name][4]
            cached = (ordered, aligned(group.data, self.points[group.name], group.name)[order])
            self._data_cache[group.name] = cached
        return cached[1]

    def _evaluate(self, group: _Group, x: torch.Tensor, data: torch.Tensor | None = None):
        """The group's residuals at ``x`` (its values ``data`` aligned with it) with the layer records of the
        evaluation: [(name, (N,), records)]."""
        fields = _fields_factory(self.problem, self.model, self.engine, self.transform, group.plain_values)
        with torch.enable_grad(), recording() as tape:
            named = group.residuals(x, fields(x, data))
        for name, residual in named:
            if residual.dim() != 1 or residual.shape[0] != len(x):
                raise ValueError(f"loss term {name!r} returned shape {tuple(residual.shape)} at {len(x)} points; "
                                 f"a residual has one entry per point, shape ({len(x)},): return a dict of (N,) "
                                 "tensors for several equations")
        return [(name, residual, tape.records) for name, residual in named]

    def _rows_buffer(self, n: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """A reused (n, P) buffer for Jacobian rows: fresh large allocations cost page faults every call."""
        buffer = self._buffer
        if buffer is None or buffer.numel() < n * size or buffer.dtype != like.dtype or buffer.device != like.device:
            self._buffer = buffer = like.new_empty(n * size)
        return buffer[: n * size].view(n, size)

    def _use_structured(self, group: _Group, index: ParameterIndex) -> bool:
        """Whether the structured rows hold for this group: checked once against generic rows on a probe."""
        if group.name in self.input_grad or self.engine != "forward":
            return False  # mixed derivatives by autograd: the parameters also act through the input graph
        known = self._structured.get(group.name)
        if known is not None:
            return known
        ordered = self._in_cell_order(group.name)[0]
        stride = max(1, len(ordered) // 6)
        probe = ordered[::stride][:6]  # spread over the set, not one corner cell
        data = self._data_in_order(group)
        agrees, reason = True, ""
        try:
            for name, residual, records in self._evaluate(group, probe, None if data is None else data[::stride][:6]):
                fast = structured_rows(residual, records, index)
                exact = generic_rows(residual, index)
                tolerance = math.sqrt(torch.finfo(exact.dtype).eps) * (1.0 + float(exact.abs().max()))
                if float((fast - exact).abs().max()) > tolerance:
                    agrees, reason = False, f"term {name!r} is not pointwise in the network's evaluations"
        except NotStructured as error:
            agrees, reason = False, str(error)
        if not agrees:
            log.info("Jacobian of %r by the generic autograd path (%s)", group.name, reason)
        self._structured[group.name] = agrees
        return agrees


def _state(tensors) -> tuple:
    """Tensors with their in-place version counters: equal states mean the very same tensors, not changed in
    between (the tuple holds them, so their ids cannot be reused meanwhile)."""
    return tuple((t, t._version) for t in tensors)


def _same(state: tuple, other: tuple) -> bool:
    return len(state) == len(other) and all(p is q and v == w for (p, v), (q, w) in zip(state, other))
