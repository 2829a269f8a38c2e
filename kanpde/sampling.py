"""Collocation points: in the interior of a :class:`~kanpde.problem.Box` and on its faces.

Methods: ``mesh`` (a cell-centred tensor grid, strictly inside), ``uniform`` (i.i.d.), ``lhs`` (Latin
hypercube), ``sobol`` and ``halton`` (scipy.stats.qmc, scrambled and seeded). Sobol sequences are balanced
only at powers of two: the first ``n`` points of a ``2^m >= n`` draw are kept, which is still far more even
than uniform sampling.

Residual-based adaptive sampling (:class:`ResidualAdaptive`) follows Wu, Zhu, Tan, Kartha and Lu,
*A comprehensive study of non-adaptive and residual-based adaptive sampling for PINNs*, CMAME 403 (2023):
new points are drawn from a dense candidate pool with probability

    p(x) ~ eps(x)^k / mean(eps^k) + c,

eps the residual magnitude. ``mode="add"`` appends them to the current points (RAR-D, the paper's
k = 2, c = 0); ``mode="replace"`` redraws the whole interior set that way (RAD, k = 1, c = 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.stats import qmc

from kanpde.problem import Box

METHODS = ("mesh", "uniform", "lhs", "sobol", "halton")


def unit_samples(n: int, dim: int, method: str, seed: int) -> np.ndarray:
    """``n`` points in [0, 1]^dim, (n, dim)."""
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {METHODS}")
    if int(n) != n or n < 1:
        raise ValueError(f"number of points must be an integer >= 1, got {n!r}")
    n = int(n)
    if dim == 0:
        return np.zeros((n, 0))
    if method == "uniform":
        return np.random.default_rng(seed).random((n, dim))
    if method == "lhs":
        return qmc.LatinHypercube(d=dim, seed=seed).random(n)
    if method == "halton":
        return qmc.Halton(d=dim, scramble=True, seed=seed).random(n)
    if method == "sobol":
        return qmc.Sobol(d=dim, scramble=True, seed=seed).random_base2(m=max(0, math.ceil(math.log2(n))))[:n]
    # mesh: the largest tensor grid with at most n points per side count, strictly inside the box
    per_side = max(1, int(math.floor(n ** (1.0 / dim) + 1e-9)))
    axis = (np.arange(per_side) + 0.5) / per_side
    grid = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    return grid


class ResidualAdaptive:
    """Where and how many interior points residual-based adaptive sampling draws; see the module docstring.

    Args:
        every: adapt every this many training steps (0: only at stage starts, if ``at_stage_start``).
        mode: ``"add"`` (RAR-D: ``n_new`` points join the set) or ``"replace"`` (RAD: the set is redrawn).
        k, c: exponent and floor of the density eps^k / mean(eps^k) + c (k >= 0, c >= 0, not both 0).
        n_new: points added per adaptation in ``"add"`` mode.
        candidates: size of the uniform candidate pool, as a multiple of the interior set's size.
        max_points: ``"add"`` mode stops adding once the set holds this many points (null: no limit).
        at_stage_start: also adapt at the start of every stage after the first (after grid extension).
    """

    MODES = ("add", "replace")

    def __init__(self, every: int = 50, mode: str = "add", k: float = 2.0, c: float = 0.0, n_new: int = 250,
                 candidates: float = 10.0, max_points: int | None = None, at_stage_start: bool = False):
        if mode not in self.MODES:
            raise ValueError(f"adaptive sampling mode must be one of {self.MODES}, got {mode!r}")
        if isinstance(every, bool) or int(every) != every or every < 0:
            raise ValueError(f"adaptive sampling 'every' must be an integer >= 0 (steps), got {every!r}")
        if not (math.isfinite(k) and math.isfinite(c)) or k < 0 or c < 0 or (k == 0 and c == 0):
            raise ValueError(f"adaptive sampling needs k >= 0 and c >= 0, not both 0 (p ~ eps^k/mean + c); "
                             f"got k={k!r}, c={c!r}")
        if int(n_new) != n_new or n_new < 1:
            raise ValueError(f"adaptive sampling n_new must be an integer >= 1, got {n_new!r}")
        if not math.isfinite(candidates) or candidates < 1:
            raise ValueError(f"adaptive sampling candidates must be a multiple >= 1 of the point count, "
                             f"got {candidates!r}")
        if max_points is not None and (int(max_points) != max_points or max_points < 1):
            raise ValueError(f"adaptive sampling max_points must be an integer >= 1 or null, got {max_points!r}")
        self.every, self.mode, self.k, self.c = int(every), mode, float(k), float(c)
        self.n_new, self.candidates = int(n_new), float(candidates)
        self.max_points = None if max_points is None else int(max_points)
        self.at_stage_start = bool(at_stage_start)

    def due(self, step: int, stage_start: bool) -> bool:
        """Whether to adapt before global step ``step + 1`` (``stage_start``: a later stage begins)."""
        return (stage_start and self.at_stage_start) or (self.every > 0 and step > 0 and step % self.every == 0)

    def choose(self, magnitude: np.ndarray, count: int, seed: int) -> np.ndarray:
        """Indices of ``count`` distinct candidates drawn with p ~ magnitude^k / mean + c."""
        weight = np.nan_to_num(np.abs(magnitude), nan=0.0, posinf=0.0) ** self.k
        mean = weight.mean()
        density = (weight / mean if mean > 0 else np.ones_like(weight)) + self.c
        count = min(int(count), len(density))
        return np.random.default_rng(seed).choice(len(density), size=count, replace=False,
                                                  p=density / density.sum())


class Sampler:
    """Draws interior and face points for a problem's domain.

    Args:
        method: one of ``METHODS`` for the interior.
        n_interior: interior points (for ``mesh``, rounded down to a full tensor grid).
        n_boundary: points per condition that does not set its own count, spread over its faces in
            proportion to their measure.
        boundary_method: method on faces (default: same as ``method``).
        resample_every: draw fresh interior points every this many steps (0: never).
        seed: base seed; every draw gets a distinct seed derived from it, so runs are reproducible.
        adaptive: residual-based adaptive sampling (a :class:`ResidualAdaptive` or its keyword arguments),
            or None.
    """

    def __init__(self, method: str = "sobol", n_interior: int = 2500, n_boundary: int = 400,
                 boundary_method: str | None = None, resample_every: int = 0, seed: int = 0,
                 adaptive: ResidualAdaptive | Mapping | None = None):
        for what, value in (("method", method), ("boundary_method", boundary_method or method)):
            if value not in METHODS:
                raise ValueError(f"unknown sampler {what} {value!r}; choose one of {METHODS}")
        for what, value in (("n_interior", n_interior), ("n_boundary", n_boundary)):
            if int(value) != value or value < 1:
                raise ValueError(f"sampler {what} must be an integer >= 1, got {value!r}")
        if resample_every < 0:
            raise ValueError(f"resample_every must be >= 0 (0 disables resampling), got {resample_every}")
        self.method, self.boundary_method = method, boundary_method or method
        self.n_interior, self.n_boundary = int(n_interior), int(n_boundary)
        self.resample_every, self.seed = int(resample_every), int(seed)
        if isinstance(adaptive, Mapping):
            adaptive = ResidualAdaptive(**adaptive)
        if adaptive is not None and not isinstance(adaptive, ResidualAdaptive):
            raise TypeError(f"sampler adaptive must be null or a mapping of ResidualAdaptive settings, got {adaptive!r}")
        if adaptive is not None and resample_every:
            raise ValueError("use either resample_every or adaptive sampling, not both: adaptive 'replace' mode "
                             "already redraws the points (from the residual)")
        self.adaptive = adaptive
        self._draws = 0

    def state_dict(self) -> dict:
        """The draw counter: every draw's seed derives from it, so restoring it repeats the draws to come."""
        return {"draws": self._draws}

    def load_state_dict(self, state: dict) -> None:
        self._draws = int(state["draws"])

    def _next_seed(self) -> int:
        self._draws += 1
        return self.seed * 1_000_003 + self._draws

    def interior(self, box: Box, n: int | None = None) -> torch.Tensor:
        """Points inside ``box``, (n, dim), float64."""
        unit = unit_samples(n or self.n_interior, box.dim, self.method, self._next_seed())
        return _scale(unit, box)

    def adapt(self, box: Box, current: torch.Tensor, magnitude_fn) -> torch.Tensor:
        """The next interior set under :attr:`adaptive`, (n, dim) float64 on the CPU.

        ``magnitude_fn(points) -> (M,)`` gives the residual magnitude at candidate points (uniform in the box).
        """
        rule = self.adaptive
        current = current.detach().cpu().to(torch.float64)
        if rule.mode == "add" and rule.max_points is not None and len(current) >= rule.max_points:
            return current
        n_pool = max(int(math.ceil(rule.candidates * len(current))), rule.n_new)
        pool = _scale(unit_samples(n_pool, box.dim, "uniform", self._next_seed()), box)
        magnitude = np.asarray(magnitude_fn(pool), dtype=np.float64).reshape(-1)
        if rule.mode == "replace":
            return pool[rule.choose(magnitude, self.n_interior, self._next_seed())]
        count = rule.n_new if rule.max_points is None else min(rule.n_new, rule.max_points - len(current))
        chosen = pool[rule.choose(magnitude, count, self._next_seed())]
        return torch.cat([current, chosen])

    def on_faces(self, box: Box, on, n: int | None = None) -> torch.Tensor:
        """``n`` points on the faces ``on`` (``"boundary"``, a face or a list), (n, dim), float64.

        Points are split between faces in proportion to their measure (200 per side of a square for 800).
        """
        faces = box.faces(on)
        n = int(n or self.n_boundary)
        measures = np.array([box.face_measure(index) for index, _ in faces])
        counts = _split(n, measures / measures.sum())
        parts = []
        for (index, bound), count in zip(faces, counts):
            if count == 0:
                continue
            unit = unit_samples(count, box.dim - 1, self.boundary_method, self._next_seed())
            full = np.insert(unit, index, 0.0, axis=1)  # (count, dim); the face coordinate is set below
            points = _scale(full, box)
            points[:, index] = bound
            parts.append(points)
        return torch.cat(parts)


def _scale(unit: np.ndarray, box: Box) -> torch.Tensor:
    lower, upper = np.array(box.lower), np.array(box.upper)
    return torch.from_numpy(lower + unit * (upper - lower))


def _split(n: int, fractions: np.ndarray) -> list[int]:
    """Integer counts summing to n, proportional to ``fractions`` (largest remainders)."""
    raw = fractions * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def grid_side(n_points: int, dim: int) -> int:
    """Points per side of the largest tensor grid in ``dim`` dimensions with at most ``n_points`` points (>= 2)."""
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 2:
        raise ValueError(f"the test-grid budget eval.n_points must be an integer >= 2, got {n_points!r}")
    return max(2, int(math.floor(n_points ** (1.0 / max(dim, 1)) + 1e-9)))


def evaluation_grid(box: Box, points_per_side: int = 101) -> torch.Tensor:
    """A fixed tensor grid including the boundary, (points_per_side^dim, dim), float64 (for metrics)."""
    axes = [np.linspace(lo, hi, points_per_side) for lo, hi in box.ranges]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, box.dim)
    return torch.from_numpy(mesh)
