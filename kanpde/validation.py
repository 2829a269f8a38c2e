"""Start-up checks of a user's problem, on a small probe batch, before any training.

:func:`validate` evaluates the residual and every condition once, on a few interior and face points, and
checks what training relies on: one finite value per point (shape ``(N,)``), of the model's dtype, as a
``torch.Tensor`` that depends on the network's parameters; a well-formed domain, names, weights and faces;
an exact solution of shape ``(N, n_outputs)``. Each failure is an :class:`InvalidProblem` (a ``ValueError``)
or :class:`InvalidProblemType` (also a ``TypeError``) whose message names the problem class, the function
(``residual``, ``condition 'boundary'``, ``exact`` ...) and what to change, instead of a traceback from
inside torch ten steps into a run. :func:`check_reference` does the same for ``reference()`` data.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kanpde.derivatives import ENGINES, Fields
from kanpde.problem import Box, Condition, Problem
from kanpde.sampling import Sampler

# Keys of the collocation-point mapping the trainer builds; a condition may not take one of them.
RESERVED_NAMES = ("interior",)


class InvalidProblem(ValueError):
    """A problem's declaration or one of its functions is wrong; the message says where and how to fix it."""


class InvalidProblemType(InvalidProblem, TypeError):
    """A problem's function returned, or a problem declared, something of the wrong type."""


@dataclass
class ValidationReport:
    """What the probe learnt, for the trainer and the log.

    Attributes:
        terms: the loss terms, in the order the trainer builds them (e.g. ``("pde", "boundary")``).
        fast_path: the model carries derivatives forward (engine ``"forward"`` and ``model.forward_jet``).
        autograd: point set (``"interior"`` or a condition name) -> derivatives the forward jet does not
            hold (mixed or third order, e.g. ``("u_xy",)``), taken by autograd; empty when none are.
        has_exact: the problem gives an exact solution.
        n_probe: interior probe points used.
        derivative_order: the highest derivative order any residual or condition reads (2 for u_xx).
    """

    terms: tuple[str, ...]
    fast_path: bool
    autograd: dict[str, tuple[str, ...]] = field(default_factory=dict)
    has_exact: bool = False
    n_probe: int = 0
    derivative_order: int = 0

    @property
    def used_autograd(self) -> bool:
        """Whether any residual or condition needs the autograd fallback (``Fields.used_autograd``)."""
        return bool(self.autograd)

    def summary(self) -> str:
        """One line for the log."""
        path = "forward derivatives" if self.fast_path else "autograd derivatives"
        if self.autograd:
            extra = "; ".join(f"{where}: {', '.join(names)}" for where, names in self.autograd.items())
            path += f", autograd fallback for {extra}"
        return f"problem checked on {self.n_probe} probe points: terms {', '.join(self.terms)}; {path}"


def validate(problem: Problem, model: torch.nn.Module, engine: str = "forward", n_probe: int = 16,
             seed: int = 0) -> ValidationReport:
    """Check ``problem`` against ``model`` on a probe batch; raise :class:`InvalidProblem` on the first fault.

    Args:
        problem: the problem instance.
        model: the network, already of the run's dtype and device; maps (N, n_vars) -> (N, n_outputs).
            Its parameters are neither changed nor given gradients.
        engine: the derivative engine of the run, ``"forward"`` or ``"autograd"``.
        n_probe: interior points (>= 3); each condition gets ``max(n_probe // 2, 2 * faces)`` face points.
        seed: seed of the probe points.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown derivative engine {engine!r}; choose one of {ENGINES}")
    if int(n_probe) != n_probe or n_probe < 3:
        raise ValueError(f"n_probe must be an integer >= 3, got {n_probe!r}")
    who = type(problem).__name__
    box = _check_declaration(problem, who)
    conditions = _check_conditions(problem, box, who)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"the model {type(model).__name__} has no trainable parameters")
    dtype, device = parameters[0].dtype, parameters[0].device
    _check_model(problem, model, box, dtype, device, who)
    constraint = getattr(problem, "hard_constraint", None)
    if constraint is not None and not (callable(getattr(constraint, "apply_value", None))
                                       and callable(getattr(constraint, "apply_jet", None))):
        raise InvalidProblemType(f"{who}.hard_constraint must be None or an object with apply_value(x, value) and "
                                 f"apply_jet(x, jet), such as kanpde.constraints.HardConstraint(g, dist); "
                                 f"got {type(constraint).__name__}")
    transform = constraint.apply_jet if constraint is not None else None
    sampler = Sampler(method="sobol", n_interior=int(n_probe), n_boundary=int(n_probe), seed=seed)

    autograd: dict[str, tuple[str, ...]] = {}
    order = [0]  # the highest derivative order read so far

    def probe(where: str, x: torch.Tensor, function, what: str, term: str, data=None) -> list[str]:
        """Evaluate ``function(x, d)`` at ``x`` and check each value; returns the loss-term names."""
        x = x.to(dtype=dtype, device=device)
        data = None if data is None else data.to(dtype=dtype, device=device)
        fields = Fields(model, x, problem.variables, problem.outputs, engine, transform, box, data=data)
        with torch.enable_grad():
            returned = _call(function, (x, fields), who, what)
            named = _named_values(returned, who, what, term)
            for label, _, value in named:
                _check_values(value, len(x), dtype, parameters, who, label, x)
        order[0] = max([order[0], *(len(wrt) for _, wrt in fields._cache)])
        needed = tuple(_name(problem, key) for key in fields._cache if _is_fallback(key[1]))
        if fields.used_autograd and needed:
            autograd[where] = needed
        return [name for _, name, _ in named]

    terms = probe("interior", sampler.interior(box), problem.residual, "residual", "pde")
    for name, condition in conditions.items():
        if condition.points is not None:  # observations: probe their first points, with their values
            x, data = condition.points[: int(n_probe)], None if condition.values is None else condition.values[: int(n_probe)]
        else:
            n_faces = len(box.faces(condition.on))
            x, data = sampler.on_faces(box, condition.on, max(int(n_probe) // 2, 2 * n_faces)), None
        for term in probe(name, x, condition.residual, f"condition {name!r}", name, data):
            if term in terms:
                raise InvalidProblem(f"{who}: condition {name!r} gives a loss term named {term!r}, like a residual "
                                     "equation, and one would hide the other; rename the condition or the key")
            terms.append(term)
    has_exact = _check_exact(problem, sampler.interior(box), who)
    fast = engine == "forward" and hasattr(model, "forward_jet")
    return ValidationReport(tuple(terms), fast, autograd, has_exact, int(n_probe), order[0])


def check_reference(problem: Problem, reference) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``problem.reference()``'s result; returns (points (M, n_vars), values (M, n_outputs)) tensors."""
    who = f"{type(problem).__name__}.reference()"
    n_vars, n_out = len(problem.variables), len(problem.outputs)
    if not (isinstance(reference, (tuple, list)) and len(reference) == 2):
        raise InvalidProblemType(f"{who} must return None or a pair (points (M, {n_vars}), values (M, {n_out})), "
                                 f"got {type(reference).__name__}")
    points, values = (torch.as_tensor(a) if isinstance(a, np.ndarray) else a for a in reference)
    for label, array in (("points", points), ("values", values)):
        if not isinstance(array, torch.Tensor):
            raise InvalidProblemType(f"{who} {label} must be a torch.Tensor or numpy array, got {type(array).__name__}")
        if not (array.is_floating_point() and torch.isfinite(array).all()):
            raise InvalidProblem(f"{who} {label} must be finite floating-point numbers")
    if values.dim() == 1 and n_out == 1:
        values = values.unsqueeze(-1)
    if points.dim() != 2 or points.shape[1] != n_vars:
        raise InvalidProblem(f"{who} points have shape {tuple(points.shape)}; expected (M, {n_vars}), one column "
                             f"per variable {problem.variables}")
    if tuple(values.shape) != (len(points), n_out):
        raise InvalidProblem(f"{who} values have shape {tuple(values.shape)}; expected ({len(points)}, {n_out}), "
                             f"one row per point and one column per output {problem.outputs}")
    return points, values


# ----------------------------------------------------------------------------------- declarations


def _check_declaration(problem: Problem, who: str) -> Box:
    if not isinstance(problem, Problem):
        raise InvalidProblemType(f"{who} is not a kanpde.Problem; subclass kanpde.Problem and declare variables, "
                                 "outputs, domain, residual and conditions")
    for attribute in ("variables", "outputs"):
        names = getattr(problem, attribute)
        if isinstance(names, str) or not isinstance(names, (tuple, list)):
            raise InvalidProblemType(f"{who}.{attribute} must be a tuple of names such as ('x', 'y'), got {names!r}")
        if not names:
            raise InvalidProblem(f"{who}.{attribute} is empty; declare at least one name, e.g. "
                                 f"{attribute} = {('x', 'y') if attribute == 'variables' else ('u',)}")
        bad = [n for n in names if not (isinstance(n, str) and n.isidentifier())]
        if bad:
            raise InvalidProblem(f"{who}.{attribute} must be identifiers such as 'x' or 'u', got {bad}")
        if len(set(names)) != len(names):
            raise InvalidProblem(f"{who}.{attribute} must be distinct, got {tuple(names)}")
    with_underscore = [n for n in problem.outputs if "_" in n]
    if with_underscore:
        raise InvalidProblem(f"{who}.outputs {with_underscore} contain '_', which separates a field from its "
                             "derivative in names like 'u_xx'; rename them (e.g. 'u1')")
    clash = sorted(set(problem.outputs) & set(problem.variables))
    if clash:
        raise InvalidProblem(f"{who}: {clash} is both a variable and an output; rename one of them")
    box = getattr(problem, "domain", None)
    if box is None:
        raise InvalidProblem(f"{who} has no domain: set self.domain = Box({tuple(problem.variables)}, lower, upper) "
                             "in __init__")
    if not isinstance(box, Box):
        raise InvalidProblemType(f"{who}.domain must be a kanpde.Box, got {type(box).__name__}")
    if len(box.variables) != len(problem.variables):
        raise InvalidProblem(f"{who}.domain has {len(box.variables)} variables {box.variables} but the problem "
                             f"declares {len(problem.variables)}: variables = {tuple(problem.variables)}; give the "
                             "Box one (lower, upper) pair per variable")
    if tuple(box.variables) != tuple(problem.variables):
        raise InvalidProblem(f"{who}.domain's variables {box.variables} differ from variables = "
                             f"{tuple(problem.variables)}; build the Box from self.variables")
    for name, lo, hi in zip(box.variables, box.lower, box.upper):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidProblem(f"{who}.domain: {name} ranges over [{lo}, {hi}]; bounds must be finite with "
                                 "lower < upper")
    _check_number(getattr(problem, "residual_weight", None), f"{who}.residual_weight")
    if type(problem).residual is Problem.residual:
        raise InvalidProblem(f"{who} must define residual(self, x, d), returning the PDE residual at the points x")
    return box


def _check_conditions(problem: Problem, box: Box, who: str) -> dict[str, Condition]:
    conditions = _call(problem.conditions, (), who, "conditions")
    if not isinstance(conditions, Mapping):
        raise InvalidProblemType(f"{who}.conditions() must return a dict of name -> Condition (e.g. "
                                 f"{{'boundary': dirichlet(0.0)}}), got {type(conditions).__name__}")
    for name, condition in conditions.items():
        what = f"{who} condition {name!r}"
        if not isinstance(name, str) or not name:
            raise InvalidProblemType(f"{who}.conditions() keys must be non-empty strings, got {name!r}")
        if name in RESERVED_NAMES:
            raise InvalidProblem(f"{what}: {name!r} is reserved for the interior points; rename the condition")
        if not isinstance(condition, Condition):
            raise InvalidProblemType(f"{what} must be a kanpde.Condition (or dirichlet(...) / neumann(...)), "
                                     f"got {type(condition).__name__}")
        if not callable(condition.residual):
            raise InvalidProblemType(f"{what}: residual must be a function residual(x, d), got "
                                     f"{type(condition.residual).__name__}")
        _check_number(condition.weight, f"{what}: weight")
        n = condition.n_points
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or n < 1):
            raise InvalidProblem(f"{what}: n_points must be an integer >= 1 or None (the sampler's n_boundary), "
                                 f"got {n!r}")
        if condition.points is not None or condition.values is not None:
            _check_fixed_points(condition, box, what)
            continue
        if condition.on is None:
            raise InvalidProblem(f"{what}: on=None needs the condition's own points (Condition(None, residual, "
                                 "points=...)); give faces (on='boundary', 'x=0', ...) or points")
        try:
            box.faces(condition.on)
        except ValueError as error:
            raise InvalidProblem(f"{what}: on={condition.on!r}: {error}") from None
    return dict(conditions)


def _check_fixed_points(condition: Condition, box: Box, what: str) -> None:
    """A condition at given points (observations): points (N, n_vars) and, if any, values with one row per point."""
    points, values = condition.points, condition.values
    if points is None:
        raise InvalidProblem(f"{what}: values were given without points; give the points they belong to "
                             "(Condition(None, residual, points=..., values=...)) or use kanpde.observations")
    if condition.on is not None:
        raise InvalidProblem(f"{what}: give either faces (on={condition.on!r}) or points, not both; set on=None")
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != box.dim or len(points) == 0:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise InvalidProblem(f"{what}: points must be a tensor (N, {box.dim}) with N >= 1, got {shape}; build data "
                             "conditions with kanpde.observations.observations(...)")
    if condition.n_points is not None and condition.n_points != len(points):
        raise InvalidProblem(f"{what}: n_points={condition.n_points} but {len(points)} points were given; leave "
                             "n_points at None for a condition with its own points")
    if not bool(torch.isfinite(points).all()):
        raise InvalidProblem(f"{what}: some points are NaN or infinite")
    from kanpde.observations import check_inside

    try:
        check_inside(points, box)
    except ValueError as error:
        raise InvalidProblem(f"{what}: {error}") from None
    if values is not None and (not isinstance(values, torch.Tensor) or values.dim() != 2 or len(values) != len(points)):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise InvalidProblem(f"{what}: values must be a tensor (N, k) with one row per point ({len(points)}), "
                             f"got {shape}")


def _check_number(value, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise InvalidProblem(f"{what} must be a finite number >= 0, got {value!r}")


def _check_model(problem: Problem, model, box: Box, dtype, device, who: str) -> None:
    x = Sampler(method="sobol", n_interior=4, seed=0).interior(box).to(dtype=dtype, device=device)
    with torch.no_grad():
        out = model(x)
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == (4, len(problem.outputs))):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InvalidProblem(f"the model maps (N, {box.dim}) points to {shape}, but {who} has outputs "
                             f"{tuple(problem.outputs)}: build it with n_in={box.dim}, n_out={len(problem.outputs)}")


# ------------------------------------------------------------------------------------ probe values


def _call(function, args, who: str, what: str):
    """Call a user function; turn any exception into an InvalidProblem that names it and the user's line."""
    try:
        return function(*args)
    except InvalidProblem:
        raise
    except Exception as error:  # anything the user's code raises, including from inside torch
        where = _user_frame(error)
        hint = ""
        if isinstance(error, KeyError):
            hint = " (derivatives are named like 'u_x', 'u_xx', 'u_xy' from the outputs and variables)"
        elif "numpy" in str(error).lower():
            hint = " (compute with torch functions of x and d, e.g. torch.sin, not numpy)"
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        error_type = InvalidProblemType if isinstance(error, TypeError) else InvalidProblem
        raise error_type(f"{who} {what} raised {type(error).__name__}{where}: {message}{hint}") from error


def _user_frame(error: BaseException) -> str:
    """`` at my_pde.py:12`` for the deepest traceback frame outside torch and kanpde's own modules."""
    library = (str(Path(torch.__file__).parent), str(Path(__file__).parent), str(Path(np.__file__).parent))
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(library)]
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _named_values(returned, who: str, what: str, term: str) -> list[tuple[str, str, object]]:
    """(label, loss-term name, value) triples, the terms named as kanpde.training._named names them."""
    if isinstance(returned, Mapping):
        if not returned:
            raise InvalidProblem(f"{who} {what} returned an empty dict; return at least one residual")
        return [(f"{what}[{key!r}]", str(key) if term == "pde" else f"{term}_{key}", value)
                for key, value in returned.items()]
    if isinstance(returned, (tuple, list)):
        if not returned:
            raise InvalidProblem(f"{who} {what} returned an empty {type(returned).__name__}; return at least one "
                                 "residual")
        return [(f"{what}[{i}]", f"{term}{i}", value) for i, value in enumerate(returned)]
    return [(what, term, returned)]


def _check_values(value, n: int, dtype, parameters, who: str, label: str, x: torch.Tensor) -> None:
    """One finite value per point, of the model's dtype, as a tensor that depends on the parameters."""
    what = f"{who} {label}"
    if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and not isinstance(value, torch.Tensor)):
        raise InvalidProblemType(f"{what} returned a numpy array; compute it with torch functions of x and d "
                                 "(torch.sin, not np.sin; no .numpy() or .item()) so it stays differentiable")
    if not isinstance(value, torch.Tensor):
        raise InvalidProblemType(f"{what} returned {type(value).__name__}; return a torch.Tensor of shape (N,) "
                                 "with one residual value per point, built from d['u'], d['u_x'], ...")
    shape = tuple(value.shape)
    if shape != (n,):
        if shape == (n, 1):
            fix = "it has a trailing column: drop it with [:, 0] or .squeeze(-1) (and use x[:, 0], not x[:, 0:1])"
        elif shape == (n, n):
            fix = ("an (N, 1) tensor was combined with an (N,) one and broadcast to (N, N): make every term (N,), "
                   "e.g. exact(x)[:, 0] or x[:, 0] instead of x[:, 0:1]")
        elif value.dim() == 0:
            fix = "it is one number: return the residual at every point; the solver squares and averages it"
        else:
            fix = "return one value per point"
        raise InvalidProblem(f"{what} returned shape {shape} for N = {n} points; expected ({n},): {fix}")
    if value.dtype != dtype:
        raise InvalidProblem(f"{what} returned {value.dtype} but the model computes in {dtype}; build constants "
                             "with x's dtype (torch.as_tensor(c, dtype=x.dtype)) or as Python floats")
    bad = ~torch.isfinite(value.detach())
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        point = ", ".join(f"{float(v):.4g}" for v in x[index].detach())
        kind = "NaN" if torch.isnan(value.detach()[index]) else "infinite"
        raise InvalidProblem(f"{what} is not finite at {int(bad.sum())} of {n} probe points (e.g. {kind} at "
                             f"({point})); guard divisions, logs and square roots, and check the formula")
    connected = value.requires_grad and value.grad_fn is not None and any(
        g is not None for g in torch.autograd.grad(value.sum(), parameters, retain_graph=True, allow_unused=True))
    if not connected:
        raise InvalidProblem(f"{what} does not depend on the network: its values carry no gradient to the model "
                             "parameters. Build it from d['u'], d['u_x'], ... without .detach(), .item(), "
                             ".numpy() or torch.tensor(...) copies")


def _check_exact(problem: Problem, x: torch.Tensor, who: str) -> bool:
    """Check ``exact(x)`` (float64 probe points); returns whether the problem gives one."""
    x = x.to(torch.float64)
    value = _call(problem.exact, (x,), who, "exact")
    if value is None:
        return False
    what = f"{who} exact"
    n, n_out = len(x), len(problem.outputs)
    if isinstance(value, np.ndarray):
        raise InvalidProblemType(f"{what} returned a numpy array; return a torch.Tensor (torch.sin, not np.sin)")
    if not isinstance(value, torch.Tensor):
        raise InvalidProblemType(f"{what} returned {type(value).__name__}; return a torch.Tensor of shape "
                                 f"(N, {n_out}) or None")
    shape = tuple(value.shape)
    allowed = [(n, n_out)] + ([(n,)] if n_out == 1 else [])
    if shape not in allowed:
        fix = (" (an (N, 1) and an (N,) tensor were broadcast together)" if shape == (n, n) and n_out != n else "")
        raise InvalidProblem(f"{what} returned shape {shape} for N = {n} points; expected "
                             f"{' or '.join(str(s) for s in allowed)}: one row per point, one column per output "
                             f"{tuple(problem.outputs)}{fix}")
    if not value.is_floating_point():
        raise InvalidProblem(f"{what} returned {value.dtype}; return floating-point values")
    if not torch.isfinite(value).all():
        raise InvalidProblem(f"{what} is not finite at some probe points; check the formula")
    return True


def _is_fallback(wrt: tuple[int, ...]) -> bool:
    """Derivatives outside the forward jet: mixed, or of order three and more."""
    return len(wrt) > 2 or (len(wrt) == 2 and wrt[0] != wrt[1])


def _name(problem: Problem, key: tuple[int, tuple[int, ...]]) -> str:
    output, wrt = key
    return f"{problem.outputs[output]}_{''.join(problem.variables[i] for i in wrt)}"
