"""Tests of kanpde.sampling: counts, bounds, reproducibility, face splits and the evaluation grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kanpde.problem import Box
from kanpde.sampling import METHODS, Sampler, evaluation_grid, unit_samples

SQUARE = Box(("x", "y"), (-1.0, -1.0), (1.0, 1.0))
RECTANGLE = Box(("x", "t"), (0.0, -1.0), (2.0, 0.0))  # faces x=0, x=2 (measure 1), t=-1, t=0 (measure 2)
CUBE = Box(("x", "y", "t"), (-1.0, 0.0, 0.0), (1.0, 2.0, 0.5))
LINE = Box(("x",), (-3.0,), (5.0,))
BOXES = {"square": SQUARE, "rectangle": RECTANGLE, "cube": CUBE, "line": LINE}


def expected_count(method: str, n: int, dim: int) -> int:
    """mesh keeps the largest full tensor grid with at most n points; every other method gives n."""
    if method != "mesh":
        return n
    per_side = 1
    while (per_side + 1) ** dim <= n:
        per_side += 1
    return per_side**dim


def inside(points: torch.Tensor, box: Box) -> bool:
    lower, upper = torch.tensor(box.lower, dtype=points.dtype), torch.tensor(box.upper, dtype=points.dtype)
    return bool(((points >= lower) & (points <= upper)).all())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("box_name", list(BOXES))
@pytest.mark.parametrize("n", [1, 7, 200, 256])
def test_interior_count_bounds_and_dtype(method, box_name, n):
    box = BOXES[box_name]
    x = Sampler(method, n_interior=n, n_boundary=4, seed=3).interior(box)
    assert x.shape == (expected_count(method, n, box.dim), box.dim)
    assert x.dtype == torch.float64
    assert inside(x, box)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("n, dim, count", [(200, 2, 196), (100, 2, 100), (99, 2, 81), (1000, 3, 1000),
                                           (999, 3, 729), (125, 3, 125), (343, 3, 343), (1331, 3, 1331),
                                           (10, 1, 10), (3, 2, 1)])
def test_mesh_is_the_largest_full_grid(n, dim, count):
    unit = unit_samples(n, dim, "mesh", seed=0)
    assert unit.shape == (count, dim)
    per_side = round(count ** (1 / dim))
    for axis in range(dim):  # a full tensor grid: per_side distinct cell centres on every axis
        np.testing.assert_allclose(np.unique(unit[:, axis]), (np.arange(per_side) + 0.5) / per_side, rtol=0,
                                   atol=1e-15)
    assert (unit > 0).all() and (unit < 1).all()  # strictly inside


@pytest.mark.parametrize("method", [m for m in METHODS if m != "mesh"])
def test_reproducible_for_a_seed_and_different_for_another(method):
    first = Sampler(method, n_interior=128, seed=11).interior(CUBE)
    again = Sampler(method, n_interior=128, seed=11).interior(CUBE)
    other = Sampler(method, n_interior=128, seed=12).interior(CUBE)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    # A second draw from the same sampler (resampling) gives fresh points, reproducibly.
    sampler, replay = Sampler(method, n_interior=128, seed=11), Sampler(method, n_interior=128, seed=11)
    sampler.interior(CUBE), replay.interior(CUBE)
    second = sampler.interior(CUBE)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, replay.interior(CUBE), rtol=0, atol=0)


def test_mesh_is_deterministic():
    torch.testing.assert_close(Sampler("mesh", 100, seed=0).interior(SQUARE), Sampler("mesh", 100, seed=5).interior(SQUARE),
                               rtol=0, atol=0)


def test_interior_count_override():
    assert Sampler("sobol", n_interior=64).interior(SQUARE, n=10).shape == (10, 2)


# ------------------------------------------------------------------------------------------- faces


def on_face(points: torch.Tensor, index: int, bound: float) -> torch.Tensor:
    return points[:, index] == bound  # exactly on the face: the coordinate is set, not sampled


@pytest.mark.parametrize("method", METHODS)
def test_faces_of_a_square_split_equally_and_lie_on_the_faces(method):
    sampler = Sampler(method, n_interior=16, n_boundary=800, seed=0)
    x = sampler.on_faces(SQUARE, "boundary")
    assert x.shape == (800, 2)
    assert inside(x, SQUARE)
    counts = [int(on_face(x, index, bound).sum()) for index, bound in SQUARE.faces("boundary")]
    assert counts == [200, 200, 200, 200]
    # every point is on at least one face
    any_face = torch.zeros(len(x), dtype=torch.bool)
    for index, bound in SQUARE.faces("boundary"):
        any_face |= on_face(x, index, bound)
    assert any_face.all()


def test_faces_split_by_measure_on_a_rectangle():
    x = Sampler("sobol", n_boundary=600, seed=1).on_faces(RECTANGLE, "boundary")
    counts = {name: int(on_face(x, *RECTANGLE.parse_face(name)).sum()) for name in RECTANGLE.face_names()}
    assert counts == {"x=0": 100, "x=2": 100, "t=-1": 200, "t=0": 200}
    assert inside(x, RECTANGLE)


def test_face_split_with_remainders_sums_to_n():
    x = Sampler("uniform", n_boundary=7, seed=0).on_faces(SQUARE, "boundary")
    assert x.shape == (7, 2)
    counts = sorted(int(on_face(x, i, b).sum()) for i, b in SQUARE.faces("boundary"))
    assert counts == [1, 2, 2, 2]


def test_single_face_and_list_of_faces():
    sampler = Sampler("halton", n_boundary=50, seed=0)
    left = sampler.on_faces(CUBE, "x=-1")
    assert left.shape == (50, 3) and bool(on_face(left, 0, -1.0).all()) and inside(left, CUBE)
    initial = sampler.on_faces(CUBE, ["t=0", "t=0.5"], n=30)
    assert initial.shape == (30, 3)
    assert int(on_face(initial, 2, 0.0).sum()) == 15 and int(on_face(initial, 2, 0.5).sum()) == 15
    # faces of different measure in 3D: x=+-1 faces have measure 2*0.5 = 1, y faces 2*0.5 = 1, t faces 4
    full = sampler.on_faces(CUBE, "boundary", n=120)
    counts = [int(on_face(full, i, b).sum()) for i, b in CUBE.faces("boundary")]
    assert counts == [10, 10, 10, 10, 40, 40]


def test_faces_of_a_line_are_its_end_points():
    x = Sampler("sobol", n_boundary=10, seed=0).on_faces(LINE, "boundary")
    assert x.shape == (10, 1)
    assert sorted(x[:, 0].tolist()) == [-3.0] * 5 + [5.0] * 5


def test_faces_reproducible_for_a_seed():
    a = Sampler("sobol", n_boundary=64, seed=4).on_faces(SQUARE, "boundary")
    b = Sampler("sobol", n_boundary=64, seed=4).on_faces(SQUARE, "boundary")
    c = Sampler("sobol", n_boundary=64, seed=5).on_faces(SQUARE, "boundary")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_bad_face_names_the_faces():
    with pytest.raises(ValueError, match=r"faces of this domain are \['x=-1', 'x=1', 'y=-1', 'y=1'\]"):
        Sampler("sobol").on_faces(SQUARE, "top")


# -------------------------------------------------------------------------------- evaluation grid


@pytest.mark.parametrize("box_name", list(BOXES))
def test_evaluation_grid_includes_the_boundary(box_name):
    box = BOXES[box_name]
    grid = evaluation_grid(box, points_per_side=5)
    assert grid.shape == (5**box.dim, box.dim) and grid.dtype == torch.float64
    for axis, (lo, hi) in enumerate(box.ranges):
        values = torch.unique(grid[:, axis])
        torch.testing.assert_close(values, torch.linspace(lo, hi, 5, dtype=torch.float64), rtol=0, atol=1e-15)
    corner = torch.tensor(box.upper, dtype=torch.float64)
    assert (grid == corner).all(dim=1).any() and (grid == torch.tensor(box.lower, dtype=torch.float64)).all(dim=1).any()


def test_evaluation_grid_default_size():
    assert evaluation_grid(SQUARE).shape == (101 * 101, 2)


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", ["grid", "Sobol", "random", ""])
def test_unknown_method_names_the_methods(method):
    with pytest.raises(ValueError, match=r"unknown sampler method .*choose one of \('mesh', 'uniform', 'lhs', 'sobol', 'halton'\)"):
        Sampler(method)
    with pytest.raises(ValueError, match=r"unknown sampling method"):
        unit_samples(10, 2, method, seed=0)


def test_unknown_boundary_method():
    with pytest.raises(ValueError, match=r"unknown sampler boundary_method 'edge'"):
        Sampler("sobol", boundary_method="edge")


@pytest.mark.parametrize("what", ["n_interior", "n_boundary"])
@pytest.mark.parametrize("value", [0, -5, 2.5])
def test_bad_counts(what, value):
    with pytest.raises(ValueError, match=rf"sampler {what} must be an integer >= 1, got {value!r}"):
        Sampler("sobol", **{what: value})


@pytest.mark.parametrize("n", [0, -1, 3.5])
def test_unit_samples_rejects_bad_counts(n):
    with pytest.raises(ValueError, match=r"number of points must be an integer >= 1"):
        unit_samples(n, 2, "uniform", seed=0)


def test_negative_resample_every():
    with pytest.raises(ValueError, match=r"resample_every must be >= 0"):
        Sampler("sobol", resample_every=-1)


def test_sobol_prefix_is_balanced():
    """The first 2^m Sobol points put exactly 2^m / 4 points in each quadrant of the unit square."""
    unit = unit_samples(256, 2, "sobol", seed=0)
    quadrants = (unit[:, 0] > 0.5).astype(int) * 2 + (unit[:, 1] > 0.5).astype(int)
    assert np.bincount(quadrants, minlength=4).tolist() == [64, 64, 64, 64]
    assert math.isclose(unit.mean(), 0.5, abs_tol=0.02)
