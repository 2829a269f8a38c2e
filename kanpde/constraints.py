"""Hard constraints: output transforms that satisfy initial and Dirichlet conditions exactly.

:class:`HardConstraint` turns a network ``N`` into the ansatz

    u(x) = g(x) + dist(x) * N(x),

where ``g`` meets the conditions and ``dist`` vanishes where they are imposed (Lagaris et al. 1998,
eq. 11; Lu et al., *Physics-informed neural networks with hard constraints*, 2021). A problem sets
``self.hard_constraint = HardConstraint(g, dist)``; training then calls :meth:`~HardConstraint.apply_jet`
on the network's jet for residuals and :meth:`~HardConstraint.apply_value` for predictions.

``g`` and ``dist`` have no parameters, so their derivatives are taken once by autograd per point set
and cached: the collocation points are the same tensor every step.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch

from kanpde.nn.jet import Jet

PointFunction = Callable[[torch.Tensor], torch.Tensor]


def function_jet(fn: PointFunction, x: torch.Tensor, n_out: int | None = None,
                 create_graph: bool = False) -> Jet:
    """Value, first and pure second derivatives of ``fn`` at ``x`` (N, d) by autograd.

    ``fn(x)`` may return (N,) or (N, n_out); an (N,) result is broadcast to ``n_out`` columns.
    With ``create_graph=False`` the result is detached (a constant for the optimiser); with ``True``
    it stays differentiable in ``x`` (needed when ``x`` itself carries a graph, for mixed derivatives).
    """
    if x.dim() != 2:
        raise ValueError(f"points must be shaped (N, d), got {tuple(x.shape)}")
    with torch.enable_grad():
        point = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        value = fn(point)
        if not isinstance(value, torch.Tensor):  # a constant
            value = torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)
        if value.dim() == 1:
            value = value.unsqueeze(-1)  # (N, 1)
        if value.shape[0] != x.shape[0] or value.dim() != 2:
            raise ValueError(f"a constraint function must return (N,) or (N, n_out) for N = {x.shape[0]} "
                             f"points, got {tuple(value.shape)}")
        if n_out is not None and value.shape[1] not in (1, n_out):
            raise ValueError(f"a constraint function returned {value.shape[1]} columns; expected 1 or {n_out}")
        n, d = x.shape
        firsts, seconds = [], []
        for column in range(value.shape[1]):
            if not value.requires_grad:  # independent of x
                firsts.append(torch.zeros(n, d, dtype=x.dtype, device=x.device))
                seconds.append(torch.zeros(n, d, dtype=x.dtype, device=x.device))
                continue
            (grad,) = torch.autograd.grad(value[:, column].sum(), point, create_graph=True, allow_unused=True,
                                          materialize_grads=True)  # (N, d)
            pure = []
            for a in range(d):
                if grad.requires_grad:
                    (row,) = torch.autograd.grad(grad[:, a].sum(), point, create_graph=create_graph,
                                                 retain_graph=True, allow_unused=True, materialize_grads=True)
                else:  # linear in x
                    row = torch.zeros_like(grad)
                pure.append(row[:, a])
            firsts.append(grad)
            seconds.append(torch.stack(pure, dim=1))  # (N, d)
        jet = Jet(value, torch.stack(firsts, dim=-1), torch.stack(seconds, dim=-1))  # (N,k), (N,d,k), (N,d,k)
    if not create_graph:
        jet = Jet(jet.value.detach(), jet.first.detach(), jet.second.detach())
    return jet


class HardConstraint:
    """The ansatz ``u = g(x) + dist(x) * net(x)``, applied to values and to jets by the product rule.

    Args:
        g: ``g(x) -> (N,)`` or ``(N, n_out)``; satisfies the imposed conditions.
        dist: ``dist(x) -> (N,)`` or ``(N, n_out)``; zero where the conditions are imposed, non-zero inside.
        cache_size: how many point sets (tensors, with every chunk sliced off them) keep their cached jets of
            ``g`` and ``dist``.

    Example (heat equation on [-1, 1] x [0, 1], u(x, 0) = sin(pi x), u(+-1, t) = 0)::

        HardConstraint(lambda x: torch.sin(pi * x[:, 0]), lambda x: x[:, 1] * (1 - x[:, 0] ** 2))
    """

    def __init__(self, g: PointFunction, dist: PointFunction, cache_size: int = 8):
        if not callable(g) or not callable(dist):
            raise TypeError("HardConstraint(g, dist) needs two callables mapping points (N, d) to (N,) or (N, n_out)")
        if int(cache_size) != cache_size or cache_size < 0:
            raise ValueError(f"cache_size must be an integer >= 0, got {cache_size!r}")
        self.g, self.dist, self.cache_size = g, dist, int(cache_size)
        # Point sets by identity: id(base tensor) -> (weak reference to it, {view -> (version, jet of g, jet of
        # dist)}), a view being (offset, shape, strides, dtype, device) into it. Training slices its chunks off
        # the same points every step (new view objects, one base), so every chunk hits, however many there are;
        # the weak reference drops a point set's entry when the points themselves go (resampling), and the
        # version counter (shared by views) catches points changed in place. No data_ptr(): under torch.func
        # transforms there is no storage to ask, and such tensors are not cached at all.
        self._cache: OrderedDict[int, tuple] = OrderedDict()

    def __repr__(self) -> str:
        return f"HardConstraint(g={getattr(self.g, '__name__', self.g)!r}, dist={getattr(self.dist, '__name__', self.dist)!r})"

    def __getstate__(self):  # copies and pickles start with an empty cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    @staticmethod
    def _columns(value: torch.Tensor) -> torch.Tensor:
        return value.unsqueeze(-1) if value.dim() == 1 else value

    def apply_value(self, x: torch.Tensor, net_value: torch.Tensor) -> torch.Tensor:
        """``g(x) + dist(x) * net_value`` for ``x`` (N, d) and ``net_value`` (N, n_out): (N, n_out)."""
        return self._columns(self.g(x)) + self._columns(self.dist(x)) * net_value

    def jets(self, x: torch.Tensor, n_out: int | None = None) -> tuple[Jet, Jet]:
        """Jets of ``g`` and ``dist`` at ``x`` (N, d); cached for points that carry no graph."""
        if x.requires_grad:  # x is part of an autograd computation: keep the jets differentiable in x
            return (function_jet(self.g, x, n_out, create_graph=True),
                    function_jet(self.dist, x, n_out, create_graph=True))
        found = self._lookup(x)
        if found is not None and found[0] == x._version:
            return found[1], found[2]
        jets = function_jet(self.g, x, n_out), function_jet(self.dist, x, n_out)
        self._store(x, jets)
        return jets

    @staticmethod
    def _keys(x: torch.Tensor) -> tuple | None:
        """(base tensor, view key) of ``x``; None for tensors of a torch.func transform (not cached)."""
        if torch._C._functorch.is_functorch_wrapped_tensor(x):
            return None
        base = x._base if x._base is not None else x
        return base, (x.storage_offset(), tuple(x.shape), x.stride(), x.dtype, x.device)

    def _lookup(self, x: torch.Tensor) -> tuple | None:
        keys = self._keys(x) if self.cache_size else None
        if keys is None:
            return None
        base, view = keys
        entry = self._cache.get(id(base))
        if entry is None or entry[0]() is not base:
            return None
        self._cache.move_to_end(id(base))
        return entry[1].get(view)

    def _store(self, x: torch.Tensor, jets: tuple) -> None:
        keys = self._keys(x) if self.cache_size else None
        if keys is None:
            return
        base, view = keys
        entry = self._cache.get(id(base))
        if entry is None or entry[0]() is not base:
            cache, key = self._cache, id(base)
            entry = (weakref.ref(base, lambda _, cache=cache, key=key: cache.pop(key, None)), {})
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        entry[1][view] = (x._version, *jets)

    def apply_jet(self, x: torch.Tensor, jet: Jet) -> Jet:
        """The jet of ``u = g + dist * net`` from the network's ``jet`` at ``x`` (N, d).

        Product rule, per input a:  u_a = g_a + D_a N + D N_a,
        u_aa = g_aa + D_aa N + 2 D_a N_a + D N_aa.
        """
        g, dist = self.jets(x, jet.value.shape[1])
        value = g.value + dist.value * jet.value  # (N, n_out)
        d_value = dist.value.unsqueeze(1)  # (N, 1, n_out) against (N, d, n_out)
        net_value = jet.value.unsqueeze(1)
        first = g.first + dist.first * net_value + d_value * jet.first
        second = g.second + dist.second * net_value + 2 * dist.first * jet.first + d_value * jet.second
        return Jet(value, first, second)
