"""Collocation points: in the interior of a :class:`~kanpde.problem.Box` and on its faces.

Methods: ``mesh`` (a cell-centred tensor grid, strictly inside), ``uniform`` (i.i.d.), ``lhs`` (Latin hypercube), ``sobol`` and ``halton`` (scipy.stats.qmc,
scrambled and seeded). Sobol sequences are balanced only at powers of two: the first ``n`` points of a
``2^m >= n`` draw are kept, which is still far more even than uniform sampling.
"""

from __future__ import annotations

import math

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
    """

    def __init__(self, method: str = "sobol", n_interior: int = 2500, n_boundary: int = 400,
                 boundary_method: str | None = None, resample_every: int = 0, seed: int = 0):
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
        self._draws = 0

    def _next_seed(self) -> int:
        self._draws += 1
        return self.seed * 1_000_003 + self._draws

    def interior(self, box: Box, n: int | None = None) -> torch.Tensor:
        """Points inside ``box``, (n, dim), float64."""
        unit = unit_samples(n or self.n_interior, box.dim, self.method, self._next_seed())
        return _scale(unit, box)

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


def evaluation_grid(box: Box, points_per_side: int = 101) -> torch.Tensor:
    """A fixed tensor grid including the boundary, (points_per_side^dim, dim), float64 (for metrics)."""
    axes = [np.linspace(lo, hi, points_per_side) for lo, hi in box.ranges]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, box.dim)
    return torch.from_numpy(mesh)
