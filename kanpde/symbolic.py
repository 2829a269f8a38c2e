"""Symbolic fits of one edge: y ~ c f(a x + b) + d over a library of functions.

Each candidate function is fitted robustly: a grid over (a, b) on the edge's normalised input range, with the
best (c, d) of every grid point in closed form (linear least squares), then the best few grid points refined
by a Levenberg-Marquardt fit of all four constants (scipy). Candidates are ranked by a score that trades fit
quality against complexity, as the KAN paper's ``auto_symbolic`` does (Liu et al. 2024, section 2.5.1):
score = log10(1 - r^2 + 1e-16) + complexity_weight * complexity (lower is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch
from scipy.optimize import least_squares

Derivatives = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SymbolicFunction:
    """One library entry.

    Args:
        name: its key, e.g. ``"sin"``.
        jet: t -> (f(t), f'(t), f''(t)) in torch (the forward derivative engine uses all three).
        sympy: s -> the sympy expression f(s).
        complexity: the cost of choosing it (0 for the zero function, 1 for x, more for the rest).
        domain: ``"all"``, ``"positive"`` (log: t > 0), ``"nonnegative"`` (sqrt) or ``"nonzero"`` (1/x): grid
            points whose arguments leave it are not fitted.
        homogeneous: f(a t) is a multiple of f(t) (powers, abs): a is redundant with c and kept at 1.
        shift_invariant: f(t + b) is a multiple of f(t) (exp): b is redundant with c and kept at 0.
        max_argument: the grid search keeps |a x + b| within this (compositions such as sin(t^2) alias into
            ever faster oscillations beyond a few radians, which fit noise rather than the edge).
    """

    name: str
    jet: Derivatives
    sympy: Callable
    complexity: float
    domain: str = "all"
    homogeneous: bool = False
    shift_invariant: bool = False
    max_argument: float = math.inf

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.jet(t)[0]


def _power(n: int) -> Derivatives:
    return lambda t: (t**n, n * t ** (n - 1), n * (n - 1) * t ** (n - 2) if n > 1 else torch.zeros_like(t))


def _tanh(t):
    y = torch.tanh(t)
    return y, 1 - y**2, -2 * y * (1 - y**2)


def _gaussian(t):
    g = torch.exp(-(t**2))
    return g, -2 * t * g, (4 * t**2 - 2) * g


def compose(outer: SymbolicFunction, inner: SymbolicFunction, name: str | None = None,
            max_argument: float = 3.0) -> SymbolicFunction:
    """The library entry f(g(t)) (chain rule for its derivatives), e.g. ``compose(LIBRARY["sin"],
    LIBRARY["x^2"])`` for sin(t^2): fitted as c f(g(a x + b)) + d, complexity the sum of both."""
    def jet(t):
        g, dg, d2g = inner.jet(t)
        f, df, d2f = outer.jet(g)
        return f, df * dg, d2f * dg**2 + df * d2g

    return SymbolicFunction(name or f"{outer.name}({inner.name})", jet, lambda s: outer.sympy(inner.sympy(s)),
                            outer.complexity + inner.complexity, inner.domain, max_argument=max_argument)


def _library() -> dict[str, SymbolicFunction]:
    entries = [
        SymbolicFunction("0", lambda t: (torch.zeros_like(t),) * 3, lambda s: sympy.Integer(0), 0),
        SymbolicFunction("x", lambda t: (t, torch.ones_like(t), torch.zeros_like(t)), lambda s: s, 1, homogeneous=True),
        SymbolicFunction("x^2", _power(2), lambda s: s**2, 2, homogeneous=True),
        SymbolicFunction("x^3", _power(3), lambda s: s**3, 3, homogeneous=True),
        SymbolicFunction("x^4", _power(4), lambda s: s**4, 3, homogeneous=True),
        SymbolicFunction("1/x", lambda t: (1 / t, -1 / t**2, 2 / t**3), lambda s: 1 / s, 2, "nonzero", True),
        SymbolicFunction("sqrt", lambda t: (t.sqrt(), 0.5 / t.sqrt(), -0.25 / t**1.5), sympy.sqrt, 2, "nonnegative"),
        SymbolicFunction("exp", lambda t: (t.exp(),) * 3, sympy.exp, 2, shift_invariant=True),
        SymbolicFunction("log", lambda t: (t.log(), 1 / t, -1 / t**2), sympy.log, 2, "positive"),
        SymbolicFunction("sin", lambda t: (t.sin(), t.cos(), -t.sin()), sympy.sin, 2),
        SymbolicFunction("cos", lambda t: (t.cos(), -t.sin(), -t.cos()), sympy.cos, 2),
        SymbolicFunction("tanh", _tanh, sympy.tanh, 3),
        SymbolicFunction("abs", lambda t: (t.abs(), t.sign(), torch.zeros_like(t)), sympy.Abs, 3, homogeneous=True),
        SymbolicFunction("gaussian", _gaussian, lambda s: sympy.exp(-(s**2)), 3),
    ]
    library = {entry.name: entry for entry in entries}
    # An edge can carry a composition a network found no reason to split over two layers: the KAN paper's
    # u = sin(pi x) sin(pi y^2) has an exact [2, 2, 1] form whose y-edges are sin(pi y^2) (measured: the
    # second-layer edges are then squares, u = c1 h1^2 + c2 h2^2).
    for outer in ("sin", "cos"):
        entry = compose(library[outer], library["x^2"])
        library[entry.name] = entry
    return library


LIBRARY: dict[str, SymbolicFunction] = _library()
TAYLOR_PENALTY = 2.0
GRID_SAMPLES = 200  # samples the (a, b) grid search sees; the refinement fits all of them
"""The default function library (the KAN paper's, plus a Gaussian). Pass your own mapping to add functions."""


@dataclass
class Candidate:
    """A fitted function y ~ c f(a x + b) + d and how well it fits (``r2``) and ranks (``score``)."""

    function: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    complexity: float
    score: float = field(default=math.inf)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("function", "a", "b", "c", "d", "r2", "complexity", "score")}


def library_with(extra: Mapping[str, SymbolicFunction] | None = None,
                 names: Iterable[str] | None = None) -> dict[str, SymbolicFunction]:
    """The default library restricted to ``names`` (all by default) plus ``extra`` entries."""
    library = dict(LIBRARY)
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in library and n not in (extra or {})]
        if unknown:
            raise ValueError(f"unknown symbolic functions {unknown}; the library has {sorted(library)} "
                             "(add your own as SymbolicFunction entries)")
        library = {n: library[n] for n in names if n in library}
    library.update(extra or {})
    return library


def fit_edge(x, y, library: Mapping[str, SymbolicFunction] | None = None, *, complexity_weight: float = 0.5,
             a_range: float = 10.0, grid: int = 41, refine: int = 3, max_samples: int = 600,
             min_span: float = 0.5) -> list[Candidate]:
    """Fit y ~ c f(a x + b) + d for every function of ``library``; candidates best first.

    Args:
        x, y: samples of the edge's input and output (N,), tensors or arrays.
        library: name -> :class:`SymbolicFunction` (default :data:`LIBRARY`).
        complexity_weight: score added per unit of complexity (a factor 10 in 1 - r^2 per 1 / weight units).
        a_range: the grid spans a in [-a_range, a_range] and b in [-a_range, a_range] for the input mapped
            onto [-1, 1] (so any range of x is treated alike).
        grid: grid points per constant (the a grid is log-spaced on both signs).
        refine: best grid points refined by the nonlinear fit.
        max_samples: samples used (an evenly chosen subset beyond this).
        min_span: a non-power function whose argument a x + b varies by less than this over the samples
            is used only where it equals its Taylor polynomial (cos(eps x) ~ 1 - eps^2 x^2 / 2): it counts
            ``TAYLOR_PENALTY`` more complex, so the polynomial wins unless it fits clearly worse.
    """
    library = LIBRARY if library is None else library
    x = np.asarray(torch.as_tensor(x).detach().cpu().double(), dtype=np.float64).ravel()
    y = np.asarray(torch.as_tensor(y).detach().cpu().double(), dtype=np.float64).ravel()
    if x.shape != y.shape or len(x) < 4:
        raise ValueError(f"fit_edge needs x and y of the same length >= 4, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("fit_edge got non-finite samples")
    if len(x) > max_samples:
        chosen = np.linspace(0, len(x) - 1, max_samples).astype(int)
        x, y = x[chosen], y[chosen]
    center, half = 0.5 * (x.max() + x.min()), max(0.5 * (x.max() - x.min()), 1e-12)
    t = (x - center) / half  # in [-1, 1]
    total = float(((y - y.mean()) ** 2).sum())
    candidates = []
    for name, function in library.items():
        fitted = _fit_one(function, t, y, total, a_range, grid, refine)
        if fitted is None:
            continue
        alpha, beta, c, d, r2 = fitted
        complexity = function.complexity
        if not function.homogeneous and function.name != "0" and 2 * abs(alpha) < min_span:
            complexity += TAYLOR_PENALTY  # over so short an argument range f is its Taylor polynomial
        # f(alpha t + beta) with t = (x - center) / half  ->  a = alpha / half, b = beta - alpha center / half
        candidates.append(Candidate(name, alpha / half, beta - alpha * center / half, c, d, r2, complexity))
    for candidate in candidates:
        candidate.score = math.log10(max(1.0 - candidate.r2, 0.0) + 1e-16) + complexity_weight * candidate.complexity
    rank = {name: i for i, name in enumerate(library)}
    return sorted(candidates, key=lambda c: (c.score, c.complexity, rank[c.function]))


def _fit_one(function: SymbolicFunction, t: np.ndarray, y: np.ndarray, total: float, a_range: float,
             grid: int, refine: int):
    """(alpha, beta, c, d, r2) of the best fit of y ~ c f(alpha t + beta) + d, or None if nothing fits."""
    if function.name == "0":
        return 1.0, 0.0, 0.0, float(y.mean()), 0.0
    magnitudes = np.geomspace(1e-2, a_range, grid // 2)
    alphas = np.array([1.0]) if function.homogeneous else np.concatenate([-magnitudes[::-1], magnitudes])
    fixed_shift = function.name == "x" or function.shift_invariant
    betas = np.array([0.0]) if fixed_shift else np.linspace(-a_range, a_range, grid)
    if function.homogeneous and function.name != "x":  # (t + b)^n with large b: nearly linear shapes
        far = np.geomspace(a_range, 1e3 * a_range, 8)
        betas = np.concatenate([betas, far, -far])
    coarse = np.linspace(0, len(t) - 1, min(len(t), GRID_SAMPLES)).astype(int)  # the grid sees a subset
    t_grid, y_grid = t[coarse], y[coarse]
    arg = alphas[:, None, None] * t_grid[None, None, :] + betas[None, :, None]  # (A, B, n)
    valid = _valid(function.domain, arg) & (np.abs(arg).max(axis=-1) <= function.max_argument)
    with np.errstate(all="ignore"):
        values = function(torch.from_numpy(np.where(_in_domain(function.domain, arg), arg, 1.0))).numpy()
    # closed-form least squares for (c, d) at every grid point
    fm = values.mean(axis=-1, keepdims=True)
    centred = values - fm
    var = (centred**2).sum(axis=-1)
    cov = (centred * (y_grid - y_grid.mean())).sum(axis=-1)
    with np.errstate(all="ignore"):
        c = np.where(var > 1e-300, cov / var, 0.0)
        ssr = ((y_grid - y_grid.mean()) ** 2).sum() - c * cov
    ssr = np.where(valid & np.isfinite(ssr) & (var > 1e-300), ssr, np.inf)
    order = np.argsort(ssr, axis=None)[:refine]
    best = None
    for flat in order:
        i, j = np.unravel_index(flat, ssr.shape)
        if not np.isfinite(ssr[i, j]):
            continue
        start = (alphas[i], betas[j], c[i, j], float(y_grid.mean() - c[i, j] * fm[i, j, 0]))
        result = _refine(function, t, y, start)
        if result is not None and (best is None or result[-1] < best[-1]):
            best = result
    if best is None:
        return None
    alpha, beta, c0, d0, ssr_best = best
    r2 = 1.0 - ssr_best / total if total > 0 else (1.0 if ssr_best == 0 else 0.0)
    return float(alpha), float(beta), float(c0), float(d0), float(r2)


def _refine(function: SymbolicFunction, t: np.ndarray, y: np.ndarray, start):
    """Nonlinear least squares on (alpha, beta, c, d) from ``start``, with the exact Jacobian:
    (alpha, beta, c, d, ssr) or None. Redundant constants (see :class:`SymbolicFunction`) stay fixed."""
    free = [not function.homogeneous, not function.shift_invariant, True, True]
    tt = torch.from_numpy(t)
    full = np.asarray(start, dtype=np.float64)

    def unpack(p):
        values = full.copy()
        values[free] = p
        return values

    def parts(p):
        alpha, beta, c, d = unpack(p)
        arg = alpha * tt + beta
        if not _valid(function.domain, arg.numpy()):
            return None
        f, df, _ = (v.numpy() for v in function.jet(arg))
        return alpha, beta, c, d, f, df

    def residual(p):
        got = parts(p)
        if got is None:
            return np.full_like(t, 1e6)
        _, _, c, d, f, _ = got
        return c * f + d - y

    def jacobian(p):
        got = parts(p)
        if got is None:
            return np.zeros((len(t), int(sum(free))))
        _, _, c, _, f, df = got
        columns = np.stack([c * df * t, c * df, f, np.ones_like(t)], axis=1)
        return columns[:, free]

    try:
        with np.errstate(all="ignore"):
            fit = least_squares(residual, full[free], jac=jacobian, method="lm", xtol=1e-13, ftol=1e-13, gtol=1e-13,
                                max_nfev=80)
    except (ValueError, np.linalg.LinAlgError):
        return None
    ssr = float((residual(fit.x) ** 2).sum())
    if not math.isfinite(ssr):
        return None
    return (*unpack(fit.x), ssr)


def _valid(domain: str, arg: np.ndarray) -> np.ndarray:
    """Whether all arguments along the last axis lie in ``domain`` (for 1/x: on one side of the pole)."""
    inside = _in_domain(domain, arg).all(axis=-1)
    if domain == "nonzero":
        inside &= (arg > 0).all(axis=-1) | (arg < 0).all(axis=-1)
    return inside


def _in_domain(domain: str, arg: np.ndarray) -> np.ndarray:
    if domain == "positive":
        return arg > 1e-12
    if domain == "nonnegative":
        return arg >= 0
    if domain == "nonzero":
        return np.abs(arg) > 1e-6
    return np.isfinite(arg)
