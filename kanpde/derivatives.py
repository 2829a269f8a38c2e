"""The derivative engine: what a problem's residual reads derivatives from.

:class:`Fields` answers ``d["u"]``, ``d["u_x"]``, ``d["u_xx"]``, ``d.laplacian("u")``, ``d["u_xy"]``,
``d["u_xxx"]`` at a batch of points. Values, first and pure second derivatives come from one forward
pass that carries derivatives through the network (``model.forward_jet``, engine ``"forward"``); anything
else (mixed or third derivatives) is taken by autograd from those, automatically. Engine ``"autograd"``
computes everything by nested ``torch.autograd.grad`` and is the reference the tests hold the fast path to.
"""

from __future__ import annotations

import torch

from kanpde.nn.jet import Jet

ENGINES = ("forward", "autograd")


def autograd_jet(model: torch.nn.Module, x: torch.Tensor) -> Jet:
    """The :class:`Jet` of ``model`` at ``x`` (N, d) by nested autograd (``create_graph=True``).

    ``x`` must require grad. Used as the reference and by models without ``forward_jet``.
    """
    value = model(x)  # (N, out)
    firsts, seconds = [], []
    for o in range(value.shape[1]):
        grad = _grad(value[:, o], x)  # (N, d)
        pure = [_grad(grad[:, a], x)[:, a] for a in range(x.shape[1])]
        firsts.append(grad)
        seconds.append(torch.stack(pure, dim=1))
    return Jet(value, torch.stack(firsts, dim=-1), torch.stack(seconds, dim=-1))


def _grad(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d(sum y)/dx with a graph; zeros where y does not depend on x (e.g. a model linear in x)."""
    if not y.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(y.sum(), x, create_graph=True, allow_unused=True, materialize_grads=True)
    return grad


class Fields:
    """Lazy, cached derivatives of a network's outputs at points ``x`` (N, n_vars).

    Args:
        model: maps (N, n_vars) -> (N, n_outputs); uses ``model.forward_jet`` when present.
        x: the points.
        variables, outputs: names, e.g. ("x", "t") and ("u",).
        engine: ``"forward"`` or ``"autograd"``.
        transform: optional ``transform(x, jet) -> jet`` applied to the network's jet (hard constraints).
        domain: the problem's domain, for conditions that need it (e.g. normals).
        plain_values: answer value requests made before any derivative with a plain forward pass (no
            derivative propagation); right for small point sets such as Dirichlet faces, where values are
            usually all that is asked. Without a transform only.
        data: values ``(N, k)`` aligned with ``x`` that a condition reads as ``d.data`` (observations); or None.
    """

    def __init__(self, model, x: torch.Tensor, variables, outputs, engine: str = "forward", transform=None,
                 domain=None, plain_values: bool = False, data: torch.Tensor | None = None):
        if engine not in ENGINES:
            raise ValueError(f"unknown derivative engine {engine!r}; choose one of {ENGINES}")
        self.model, self.variables, self.outputs = model, tuple(variables), tuple(outputs)
        self.engine, self.transform, self.domain = engine, transform, domain
        self.x = x
        self.data = data
        self.used_autograd = False  # set when a derivative outside the jet was asked for
        self._jet: Jet | None = None
        self.plain_values = plain_values
        self._value: torch.Tensor | None = None  # plain forward, when only values were asked for
        self._cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def at(self, x: torch.Tensor) -> "Fields":
        """The same network, engine and transform at other points ``x`` (e.g. periodic images)."""
        return Fields(self.model, x, self.variables, self.outputs, self.engine, self.transform, self.domain,
                      self.plain_values)

    @property
    def jet(self) -> Jet:
        if self._jet is None:
            fast = self.engine == "forward" and hasattr(self.model, "forward_jet")
            if not fast and not self.x.requires_grad:
                self.x = self.x.detach().requires_grad_(True)
            jet = self.model.forward_jet(self.x) if fast else autograd_jet(self.model, self.x)
            self._jet = self.transform(self.x, jet) if self.transform is not None else jet
        return self._jet

    def parse(self, name: str) -> tuple[int, tuple[int, ...]]:
        """``"u_xy"`` -> (output index of u, (index of x, index of y))."""
        output, _, suffix = name.partition("_")
        if output not in self.outputs:
            raise KeyError(f"unknown field {output!r} in {name!r}; outputs are {self.outputs}, "
                           f"derivatives are written like {self.outputs[0]}_{self.variables[0] * 2}")
        order, rest = [], suffix
        by_length = sorted(self.variables, key=len, reverse=True)
        while rest:
            match = next((v for v in by_length if rest.startswith(v)), None)
            if match is None:
                raise KeyError(f"cannot read {name!r}: {rest!r} is not a variable; variables are {self.variables}")
            order.append(self.variables.index(match))
            rest = rest[len(match):]
        return self.outputs.index(output), tuple(order)

    def __getitem__(self, name: str) -> torch.Tensor:
        """The field or derivative named ``name``, shape (N,)."""
        return self.derivative(*self.parse(name))

    def derivative(self, output: int, wrt: tuple[int, ...]) -> torch.Tensor:
        key = (output, tuple(wrt))
        if key in self._cache:
            return self._cache[key]
        if len(wrt) == 0:
            if self.plain_values and self._jet is None and self.transform is None and self.engine == "forward":
                if self._value is None:
                    self._value = self.model(self.x)  # (N, n_out)
                result = self._value[:, output]
            else:
                result = self.jet.value[:, output]
        elif len(wrt) == 1:
            result = self.jet.first[:, wrt[0], output]
        elif len(wrt) == 2 and wrt[0] == wrt[1]:
            result = self.jet.second[:, wrt[0], output]
        else:
            result = self._autograd(output, wrt)
        self._cache[key] = result
        return result

    def _autograd(self, output: int, wrt: tuple[int, ...]) -> torch.Tensor:
        """Mixed or higher derivatives by differentiating a lower one with autograd."""
        self.used_autograd = True
        # Restart with points that carry a graph, also when the jet was computed without one (under no_grad):
        # differentiating a tensor without a graph would read every mixed derivative as 0.
        no_graph = self._jet is not None and not self._jet.value.requires_grad
        if not self.x.requires_grad or no_graph:
            self.x = self.x.detach().requires_grad_(True)
            self._jet, self._value, self._cache = None, None, {}
        with torch.enable_grad():  # evaluation under no_grad (history losses, adaptive sampling) needs it too
            # Start from the highest derivative the jet already holds, then differentiate the rest.
            if len(wrt) >= 2 and wrt[0] == wrt[1]:
                base, rest = self.derivative(output, wrt[:2]), wrt[2:]
            else:
                base, rest = self.derivative(output, wrt[:1]), wrt[1:]
            for index in rest:
                base = _grad(base, self.x)[:, index]
        return base

    def laplacian(self, output: str | None = None) -> torch.Tensor:
        """Sum of pure second derivatives over all variables, (N,)."""
        if output is not None and output not in self.outputs:
            raise KeyError(f"unknown field {output!r}; outputs are {self.outputs}")
        index = self.outputs.index(output) if output is not None else 0
        return sum(self.derivative(index, (a, a)) for a in range(len(self.variables)))

    def __getattr__(self, name: str) -> torch.Tensor:
        """``d.u_xx`` as a synonym of ``d["u_xx"]``."""
        if name.startswith("_") or name in ("model", "variables", "outputs", "engine", "transform", "domain", "x",
                                            "plain_values", "used_autograd", "data"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(str(error)) from None
