"""The user's contract: a PDE problem is a declaration of domain, residual, conditions and solution.

A problem subclasses :class:`Problem` and declares

* ``variables`` (e.g. ``("x", "y")`` or ``("x", "t")``) and ``outputs`` (e.g. ``("u",)``);
* ``domain``: a :class:`Box` over the variables (set in ``__init__``, state lives on the instance);
* ``residual(x, d)``: the PDE residual at interior points ``x`` (N, n_vars), written with the derivative
  accessor ``d`` (``d["u"]``, ``d["u_x"]``, ``d["u_xx"]``, ``d.laplacian("u")``, ``d["u_xy"]`` ...);
  one tensor (N,) or a dict of named residuals;
* ``conditions()``: a dict of named :class:`Condition` (Dirichlet, Neumann or any residual on a face);
* optionally ``exact(x)`` -> (N, n_outputs), or ``reference()`` -> (points, values) for evaluation.

The solver chooses how derivatives are computed (forward propagation through the network, or nested
autograd for mixed and higher derivatives); the problem never calls autograd itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kanpde.unknowns import Coefficients, Unknown


class Box:
    """An axis-aligned box ``prod_i [lower_i, upper_i]`` over named variables.

    Faces are named ``"x=-1"``-style strings built from the variable name and ``lower``/``upper``:
    ``box.face_names()`` lists them; ``"boundary"`` means all faces.
    """

    def __init__(self, variables: Sequence[str], lower: Sequence[float], upper: Sequence[float]):
        variables = tuple(variables)
        lower = tuple(float(v) for v in lower)
        upper = tuple(float(v) for v in upper)
        if not variables:
            raise ValueError("a Box needs at least one variable")
        if len(set(variables)) != len(variables):
            raise ValueError(f"variable names must be distinct, got {variables}")
        if not (len(variables) == len(lower) == len(upper)):
            raise ValueError(f"Box got {len(variables)} variables {variables} but {len(lower)} lower and "
                             f"{len(upper)} upper bounds; give one (lower, upper) pair per variable")
        for name, lo, hi in zip(variables, lower, upper):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"bounds of {name!r} must be finite, got [{lo}, {hi}]")
            if not lo < hi:
                raise ValueError(f"bounds of {name!r} need lower < upper, got [{lo}, {hi}]")
        self.variables, self.lower, self.upper = variables, lower, upper

    @classmethod
    def from_bounds(cls, **bounds: tuple[float, float]) -> "Box":
        """``Box.from_bounds(x=(-1, 1), t=(0, 1))``; the order of keywords is the variable order."""
        return cls(tuple(bounds), [b[0] for b in bounds.values()], [b[1] for b in bounds.values()])

    @property
    def dim(self) -> int:
        return len(self.variables)

    @property
    def ranges(self) -> list[tuple[float, float]]:
        return list(zip(self.lower, self.upper))

    def volume(self) -> float:
        return math.prod(hi - lo for lo, hi in self.ranges)

    def face_names(self) -> list[str]:
        return [f"{v}={_fmt(b)}" for v, lo, hi in zip(self.variables, self.lower, self.upper) for b in (lo, hi)]

    def parse_face(self, face: str) -> tuple[int, float]:
        """``"x=-1"`` -> (index of x, -1.0), checked against the box."""
        name, _, value = face.partition("=")
        name = name.strip()
        if name not in self.variables or not value:
            raise ValueError(f"unknown face {face!r}; faces of this domain are {self.face_names()} or 'boundary'")
        index = self.variables.index(name)
        try:
            bound = float(value)
        except ValueError:
            raise ValueError(f"unknown face {face!r}; faces of this domain are {self.face_names()} or 'boundary'") from None
        if not any(math.isclose(bound, b, rel_tol=1e-12, abs_tol=1e-12) for b in (self.lower[index], self.upper[index])):
            raise ValueError(f"{face!r} is not a face of the domain: {name} ranges over "
                             f"[{self.lower[index]}, {self.upper[index]}]; faces are {self.face_names()}")
        return index, bound

    def faces(self, on: str | Sequence[str]) -> list[tuple[int, float]]:
        """Resolve ``"boundary"``, one face or a list of faces to (variable index, value) pairs."""
        names = self.face_names() if on == "boundary" else ([on] if isinstance(on, str) else list(on))
        return [self.parse_face(n) for n in names]

    def face_measure(self, index: int) -> float:
        """(dim-1)-measure of a face normal to variable ``index`` (1 for a 1D box's end points)."""
        return math.prod(hi - lo for i, (lo, hi) in enumerate(self.ranges) if i != index)

    def __repr__(self) -> str:
        spans = ", ".join(f"{v} in [{lo:g}, {hi:g}]" for v, lo, hi in zip(self.variables, self.lower, self.upper))
        return f"Box({spans})"


def _fmt(value: float) -> str:
    return f"{value:g}"


ValueFn = Callable[[torch.Tensor], torch.Tensor] | float


@dataclass
class Condition:
    """A named loss term on domain faces, or at given points: ``weight * mean(residual(x, d)^2)`` over its points.

    Args:
        on: ``"boundary"``, a face such as ``"x=-1"`` or ``"t=0"``, or a list of faces; None with ``points``.
        residual: ``residual(x, d) -> (N,)`` (or a dict/tuple of them) in terms of the derivative accessor.
        weight: multiplier of the mean-square term.
        n_points: number of points; ``None`` takes the sampler's ``n_boundary``.
        points: fixed points ``(N, n_vars)`` instead of sampled face points (observations,
            :func:`kanpde.observations.observations`).
        values: ``(N, k)`` numbers aligned with ``points``, which the residual reads as ``d.data`` (row n belongs
            to point n however the solver orders or chunks the points).
    """

    on: str | Sequence[str] | None
    residual: Callable
    weight: float = 1.0
    n_points: int | None = None
    points: torch.Tensor | None = None
    values: torch.Tensor | None = None


def dirichlet(value: ValueFn = 0.0, on: str | Sequence[str] = "boundary", output: str | None = None,
              weight: float = 1.0, n_points: int | None = None) -> Condition:
    """u = value on the faces ``on``; ``value`` is a number or ``value(x) -> (N,)``."""

    def residual(x, d):
        name = output or d.outputs[0]
        target = value(x) if callable(value) else torch.full_like(x[:, 0], float(value))
        return d[name] - target

    return Condition(on, residual, weight, n_points)


def neumann(value: ValueFn = 0.0, on: str | Sequence[str] = "boundary", output: str | None = None,
            weight: float = 1.0, n_points: int | None = None) -> Condition:
    """du/dn = value on the faces ``on`` (outward normal), ``value`` a number or ``value(x) -> (N,)``.

    Points are sampled per face, so the normal is read from which bound each point sits on.
    """

    def residual(x, d):
        name = output or d.outputs[0]
        box = d.domain
        flux = torch.zeros_like(x[:, 0])
        for index, bound in box.faces(on):
            sign = 1.0 if math.isclose(bound, box.upper[index]) else -1.0
            on_face = torch.isclose(x[:, index], torch.full_like(x[:, index], bound))
            flux = torch.where(on_face, sign * d[f"{name}_{box.variables[index]}"], flux)
        target = value(x) if callable(value) else torch.full_like(x[:, 0], float(value))
        return flux - target

    return Condition(on, residual, weight, n_points)


def periodic(domain: Box, variable: str, derivatives: int = 1, output: str | None = None, weight: float = 1.0,
             n_points: int | None = None) -> Condition:
    """u and its first ``derivatives`` derivatives along ``variable`` equal at the two faces of ``domain``.

    Points are drawn on the lower face and paired with their images on the upper face (same other
    coordinates), so each term compares the network at matched points: ``value`` (u(lo) - u(hi)) and,
    for ``derivatives`` >= 1, ``d1`` (u_v(lo) - u_v(hi)), ``d2`` (u_vv(lo) - u_vv(hi)). In a problem:
    ``{"periodic": periodic(self.domain, "x")}``.
    """
    if variable not in domain.variables:
        raise ValueError(f"periodic condition on {variable!r}, but the domain's variables are {domain.variables}")
    if isinstance(derivatives, bool) or int(derivatives) != derivatives or not 0 <= derivatives <= 2:
        raise ValueError(f"periodic derivatives must be 0, 1 or 2 (how many derivatives to match), "
                         f"got {derivatives!r}")
    index = domain.variables.index(variable)
    labels = ["value"] + [f"d{order}" for order in range(1, int(derivatives) + 1)]

    def residual(x, d):
        image = x.detach().clone()
        image[:, index] = domain.upper[index]
        there = d.at(image.requires_grad_(x.requires_grad))
        name = output or d.outputs[0]
        fields = [name] + [f"{name}_{variable * order}" for order in range(1, len(labels))]
        return {label: d[field] - there[field] for label, field in zip(labels, fields)}

    return Condition(f"{variable}={_fmt(domain.lower[index])}", residual, weight, n_points)


class Problem:
    """Base class of PDE problems; see the module docstring for the contract.

    Class attributes a subclass sets: ``variables``, ``outputs``, ``description`` (one line, shown by
    ``kanpde list``) and ``residual_weight`` (multiplier of the interior mean-square residual).
    """

    variables: tuple[str, ...] = ("x", "y")
    outputs: tuple[str, ...] = ("u",)
    description: str = ""
    residual_weight: float = 1.0
    domain: Box
    # Optional hard constraint: an object with apply_value(x, net_value) -> u and apply_jet(x, jet) -> jet
    # (e.g. u = g(x) + d(x) * net(x), so conditions hold exactly); None uses soft penalties only.
    hard_constraint = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = [name for name, value in vars(cls).items() if isinstance(value, Unknown)]
        if declared:
            raise TypeError(f"{cls.__name__} declares the unknown {declared[0]!r} as a class attribute; declare it on "
                            f"the instance, in __init__: self.{declared[0]} = Unknown(...)")

    def __setattr__(self, name: str, value) -> None:
        """``self.nu = Unknown(...)`` declares a coefficient to identify (:mod:`kanpde.unknowns`); anything else is
        an ordinary attribute."""
        if isinstance(value, Unknown):
            if hasattr(type(self), name):
                raise ValueError(f"{type(self).__name__}.{name} is a class attribute, which would hide the unknown "
                                 f"coefficient {name!r}; declare the unknown under another name")
            self.__dict__.pop(name, None)
            if "_coefficients" not in self.__dict__:
                object.__setattr__(self, "_coefficients", Coefficients())
            self._coefficients.declare(name, value)
            return
        if name in self.__dict__.get("_coefficients", ()):
            raise ValueError(f"{name!r} is an unknown coefficient of {type(self).__name__}; it is set by training, "
                             "not by assignment")
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        """An unknown coefficient's current value, a 0-dim tensor (only names not found otherwise come here)."""
        coefficients = self.__dict__.get("_coefficients")
        if coefficients is not None and name in coefficients:
            return coefficients.value(name)
        declared = getattr(type(self), name, None)
        if isinstance(declared, property):  # its getter raised AttributeError: show that error, not this one
            return declared.fget(self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def unknowns(self) -> dict[str, float]:
        """The unknown coefficients' current values by name (empty when the problem declares none)."""
        coefficients = self.__dict__.get("_coefficients")
        return coefficients.values() if coefficients is not None else {}

    def residual(self, x: torch.Tensor, d) -> torch.Tensor | dict[str, torch.Tensor]:
        """PDE residual at interior points ``x`` (N, n_vars): (N,) or a dict of them."""
        raise NotImplementedError(f"{type(self).__name__} must define residual(self, x, d)")

    def conditions(self) -> dict[str, Condition]:
        """Named boundary/initial conditions; none by default."""
        return {}

    def exact(self, x: torch.Tensor) -> torch.Tensor | None:
        """Exact solution (N, n_outputs) at ``x``, or None when unknown."""
        return None

    def reference(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Reference data (points (N, n_vars), values (N, n_outputs)) when there is no exact solution."""
        return None

    def physical_points(self, points: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...]]:
        """Points (N, n_vars) in the problem's variables as the points and names to show in plots and
        ``prediction.npz``. The identity here; a problem solved in transformed coordinates maps back."""
        return points, self.variables

    @property
    def name(self) -> str:
        return getattr(self, "_name", type(self).__name__.lower())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.domain!r})"


def check_weight(value: float, what: str) -> float:
    """A loss weight must be a finite number >= 0."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return value
