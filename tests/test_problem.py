"""Tests of kanpde.problem: Box validation and faces, Dirichlet and Neumann residuals, the Problem base."""

from __future__ import annotations

import math

import pytest
import torch

from kanpde.derivatives import Fields
from kanpde.problem import Box, Condition, Problem, check_weight, dirichlet, neumann, periodic


class Quadratic(torch.nn.Module):
    """u = x^2 + y (and v = x y for two outputs); no forward_jet, so Fields takes the autograd path."""

    def __init__(self, n_out: int = 1):
        super().__init__()
        self.n_out = n_out

    def forward(self, x):  # (N, 2) -> (N, n_out)
        u = x[:, 0] ** 2 + x[:, 1]
        if self.n_out == 1:
            return u.unsqueeze(-1)
        return torch.stack([u, x[:, 0] * x[:, 1]], dim=-1)


SQUARE = Box(("x", "y"), (-1.0, -1.0), (1.0, 1.0))


def fields(model, x, box=SQUARE, outputs=("u",)):
    return Fields(model, x, box.variables, outputs, engine="forward", domain=box)


# ----------------------------------------------------------------------------------------------- Box


def test_box_basic_properties():
    box = Box(("x", "t"), (-1, 0), (1, 2))
    assert box.dim == 2
    assert box.variables == ("x", "t")
    assert box.lower == (-1.0, 0.0) and box.upper == (1.0, 2.0)
    assert box.ranges == [(-1.0, 1.0), (0.0, 2.0)]
    assert box.volume() == pytest.approx(4.0, abs=0)
    assert box.face_names() == ["x=-1", "x=1", "t=0", "t=2"]
    assert box.face_measure(0) == pytest.approx(2.0, abs=0)  # face x=const spans t in [0, 2]
    assert box.face_measure(1) == pytest.approx(2.0, abs=0)
    assert "x in [-1, 1]" in repr(box)


def test_box_from_bounds_keeps_keyword_order():
    box = Box.from_bounds(x=(-1, 1), t=(0, 0.5))
    assert box.variables == ("x", "t")
    assert box.ranges == [(-1.0, 1.0), (0.0, 0.5)]


def test_box_one_dimensional_faces_have_unit_measure():
    box = Box(("x",), (0.0,), (3.0,))
    assert box.face_names() == ["x=0", "x=3"]
    assert box.face_measure(0) == 1.0
    assert box.volume() == 3.0


@pytest.mark.parametrize("lower, upper", [((1.0, 0.0), (0.0, 1.0)), ((0.0, 0.0), (0.0, 1.0))])
def test_box_rejects_lower_not_below_upper(lower, upper):
    with pytest.raises(ValueError, match=r"bounds of 'x' need lower < upper"):
        Box(("x", "y"), lower, upper)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_box_rejects_non_finite_bounds(bad):
    with pytest.raises(ValueError, match=r"bounds of 'y' must be finite"):
        Box(("x", "y"), (0.0, 0.0), (1.0, bad))
    with pytest.raises(ValueError, match=r"must be finite"):
        Box(("x", "y"), (bad, 0.0), (1.0, 1.0))


@pytest.mark.parametrize("lower, upper", [((0.0,), (1.0, 1.0)), ((0.0, 0.0), (1.0,)), ((0, 0, 0), (1, 1, 1))])
def test_box_rejects_mismatched_lengths(lower, upper):
    with pytest.raises(ValueError, match=r"one \(lower, upper\) pair per variable"):
        Box(("x", "y"), lower, upper)


def test_box_rejects_duplicate_names_and_no_variables():
    with pytest.raises(ValueError, match=r"variable names must be distinct.*'x', 'x'"):
        Box(("x", "x"), (0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"at least one variable"):
        Box((), (), ())


# ------------------------------------------------------------------------------------------- faces


def test_parse_face_resolves_names_and_values():
    box = Box(("x", "t"), (-1.0, 0.0), (1.0, 2.0))
    assert box.parse_face("x=-1") == (0, -1.0)
    assert box.parse_face("x=1") == (0, 1.0)
    assert box.parse_face("t=0") == (1, 0.0)
    assert box.parse_face("t=2.0") == (1, 2.0)  # the same face written differently
    assert box.parse_face(" t =2") == (1, 2.0)


def test_faces_boundary_single_and_list():
    box = Box(("x", "t"), (-1.0, 0.0), (1.0, 2.0))
    assert box.faces("boundary") == [(0, -1.0), (0, 1.0), (1, 0.0), (1, 2.0)]
    assert box.faces("t=0") == [(1, 0.0)]
    assert box.faces(["x=-1", "x=1"]) == [(0, -1.0), (0, 1.0)]


@pytest.mark.parametrize("face", ["z=0", "x", "x=", "=1", "boundary_typo"])
def test_parse_face_unknown_names_the_valid_faces(face):
    with pytest.raises(ValueError, match=r"unknown face .*\['x=-1', 'x=1', 't=0', 't=2'\].*'boundary'"):
        Box(("x", "t"), (-1.0, 0.0), (1.0, 2.0)).parse_face(face)


@pytest.mark.parametrize("face", ["x=0.5", "t=1", "x=-1.5"])
def test_parse_face_value_not_on_a_face_names_the_range_and_faces(face):
    box = Box(("x", "t"), (-1.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError, match=r"is not a face of the domain.*ranges over.*faces are \['x=-1', 'x=1', 't=0', 't=2'\]"):
        box.parse_face(face)


@pytest.mark.parametrize("face", ["x=left", "x=1e", "t=zero"])
def test_parse_face_non_numeric_value_names_the_valid_faces(face):
    """A typo in the bound must give the same helpful message, not float()'s 'could not convert'."""
    box = Box(("x", "t"), (-1.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError, match=r"faces .*\['x=-1', 'x=1', 't=0', 't=2'\]"):
        box.parse_face(face)


def test_faces_rejects_a_bad_face_inside_a_list():
    with pytest.raises(ValueError, match=r"unknown face 'q=1'"):
        SQUARE.faces(["x=-1", "q=1"])


# ------------------------------------------------------------------------------------- conditions


def _boundary_points() -> torch.Tensor:
    """Two points on each side of the square (none at a corner), (8, 2) float64."""
    s = torch.tensor([-0.5, 0.25], dtype=torch.float64)
    one = torch.ones_like(s)
    return torch.cat([torch.stack([-one, s], 1), torch.stack([one, s], 1),
                      torch.stack([s, -one], 1), torch.stack([s, one], 1)])


def test_dirichlet_zero_residual_is_the_value():
    x = _boundary_points()
    condition = dirichlet(0.0)
    assert isinstance(condition, Condition)
    assert condition.on == "boundary" and condition.weight == 1.0 and condition.n_points is None
    residual = condition.residual(x, fields(Quadratic(), x))
    torch.testing.assert_close(residual, x[:, 0] ** 2 + x[:, 1], rtol=0, atol=0)


def test_dirichlet_constant_and_callable_values():
    x = _boundary_points()
    residual = dirichlet(2.5).residual(x, fields(Quadratic(), x))
    torch.testing.assert_close(residual, x[:, 0] ** 2 + x[:, 1] - 2.5, rtol=0, atol=1e-15)
    exact = dirichlet(lambda p: p[:, 0] ** 2 + p[:, 1], on=["x=-1", "y=1"], weight=3.0, n_points=17)
    assert exact.on == ["x=-1", "y=1"] and exact.weight == 3.0 and exact.n_points == 17
    torch.testing.assert_close(exact.residual(x, fields(Quadratic(), x)), torch.zeros(len(x), dtype=x.dtype),
                               rtol=0, atol=0)


def test_dirichlet_on_a_named_output():
    x = _boundary_points()
    d = fields(Quadratic(n_out=2), x, outputs=("u", "v"))
    torch.testing.assert_close(dirichlet(1.0, output="v").residual(x, d), x[:, 0] * x[:, 1] - 1.0, rtol=0, atol=1e-15)
    torch.testing.assert_close(dirichlet(0.0).residual(x, d), x[:, 0] ** 2 + x[:, 1], rtol=0, atol=0)


def test_neumann_uses_the_outward_normal_on_every_face():
    """u = x^2 + y: du/dn = +2x on x=1, -2x on x=-1 (both 2), +1 on y=1, -1 on y=-1."""
    x = _boundary_points()
    residual = neumann(0.0).residual(x, fields(Quadratic(), x))
    expected = torch.tensor([2.0, 2.0, 2.0, 2.0, -1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(residual, expected, rtol=0, atol=1e-14)


def test_neumann_exact_flux_gives_zero_residual_and_respects_faces():
    x = _boundary_points()
    flux = lambda p: torch.where(p[:, 1].abs() == 1, p[:, 1], 2 * p[:, 0].abs())  # noqa: E731
    torch.testing.assert_close(neumann(flux).residual(x, fields(Quadratic(), x)), torch.zeros(8, dtype=x.dtype),
                               rtol=0, atol=1e-14)
    # Only the face x=1 given: its points get u_x = 2, the flux is 0 elsewhere.
    right = neumann(0.0, on="x=1").residual(x, fields(Quadratic(), x))
    torch.testing.assert_close(right, torch.tensor([0, 0, 2, 2, 0, 0, 0, 0], dtype=x.dtype), rtol=0, atol=1e-14)


def test_neumann_on_a_shifted_box():
    """Faces away from +-1 (t in [0, 2]): the normal is read from the bound each point sits on."""
    box = Box(("x", "t"), (0.0, 0.0), (3.0, 2.0))
    x = torch.tensor([[0.0, 1.0], [3.0, 0.5], [1.5, 0.0], [2.0, 2.0]], dtype=torch.float64)
    residual = neumann(0.0).residual(x, fields(Quadratic(), x, box=box))
    # u = x^2 + t: -u_x(0) = 0, u_x(3) = 6, -u_t = -1, u_t = 1
    torch.testing.assert_close(residual, torch.tensor([0.0, 6.0, -1.0, 1.0], dtype=x.dtype), rtol=0, atol=1e-14)


def test_periodic_compares_each_point_with_its_image_on_the_upper_face():
    """u = x^2 + y: equal at x = -1 and x = 1, u_x = -2 vs 2, u_xx = 2 vs 2; u(y=-1) - u(y=1) = -2."""
    y = torch.tensor([-0.5, 0.0, 0.75], dtype=torch.float64)
    on_left = torch.stack([-torch.ones_like(y), y], 1)
    condition = periodic(SQUARE, "x", derivatives=2, weight=2.0, n_points=9)
    assert condition.on == "x=-1" and condition.weight == 2.0 and condition.n_points == 9
    terms = condition.residual(on_left, fields(Quadratic(), on_left))
    assert set(terms) == {"value", "d1", "d2"}
    torch.testing.assert_close(terms["value"], torch.zeros(3, dtype=y.dtype), rtol=0, atol=1e-15)
    torch.testing.assert_close(terms["d1"], torch.full((3,), -4.0, dtype=y.dtype), rtol=0, atol=1e-14)
    torch.testing.assert_close(terms["d2"], torch.zeros(3, dtype=y.dtype), rtol=0, atol=1e-14)
    on_bottom = torch.stack([y, -torch.ones_like(y)], 1)
    values = periodic(SQUARE, "y", derivatives=0).residual(on_bottom, fields(Quadratic(), on_bottom))
    assert set(values) == {"value"}
    torch.testing.assert_close(values["value"], torch.full((3,), -2.0, dtype=y.dtype), rtol=0, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [({"variable": "z"}, "variables are"),
                                           ({"variable": "x", "derivatives": 3}, "0, 1 or 2")])
def test_periodic_rejects_unknown_variables_and_orders(kwargs, match):
    with pytest.raises(ValueError, match=match):
        periodic(SQUARE, **kwargs)


class PeriodicAdvection(Problem):
    """u_t + u_x = 0 on [0, 2] x [0, 1], u(x, 0) = sin(pi x), periodic in x; u = sin(pi (x - t))."""

    variables = ("x", "t")

    def __init__(self):
        self.domain = Box(self.variables, (0.0, 0.0), (2.0, 1.0))

    def residual(self, x, d):
        return d["u_t"] + d["u_x"]

    def conditions(self):
        return {"initial": dirichlet(lambda p: torch.sin(math.pi * p[:, 0]), on="t=0", weight=10.0),
                "periodic": periodic(self.domain, "x", weight=10.0)}

    def exact(self, x):
        return torch.sin(math.pi * (x[:, :1] - x[:, 1:]))


def test_periodic_problem_trains_and_engines_agree(lbfgs):
    from kanpde.nn import KAN
    from kanpde.sampling import Sampler, evaluation_grid
    from kanpde.training import Evaluation, Stage, collocation, loss_terms, train

    problem = PeriodicAdvection()
    points = collocation(problem, Sampler("sobol", 128, 32, seed=0))
    assert bool((points["periodic"][:, 0] == 0.0).all())  # drawn on the lower face only
    model = KAN([2, 5, 1], grid_size=6, grid_range=problem.domain.ranges, seed=0).double()
    fast = loss_terms(problem, model, points)
    slow = loss_terms(problem, model, {k: v.clone().requires_grad_(True) for k, v in points.items()}, "autograd")
    assert set(fast) == {"pde", "initial", "periodic_value", "periodic_d1"}
    for key in fast:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-10, atol=1e-14)
    grid = evaluation_grid(problem.domain, 11)
    result = train(problem, model, [Stage("lbfgs", 30, 6)], {"lbfgs": lbfgs()}, Sampler("sobol", 128, 32, seed=0),
                   Evaluation(grid, problem.exact(grid)), eval_every=10, grid_update=None)
    # measured: rel_l2 1.0 -> 0.017; the periodic terms fall with the rest
    assert result.history[-1]["rel_l2"] < 0.05, result.history
    assert result.history[-1]["loss_periodic_d1"] < result.history[0]["loss_periodic_d1"]


# ---------------------------------------------------------------------------------------- Problem


def test_problem_base_defaults_and_missing_residual():
    class Bare(Problem):
        def __init__(self):
            self.domain = SQUARE

    problem = Bare()
    assert problem.name == "bare"
    assert problem.conditions() == {}
    assert problem.exact(torch.zeros(3, 2)) is None and problem.reference() is None
    assert repr(problem).startswith("Bare(Box(")
    with pytest.raises(NotImplementedError, match=r"Bare must define residual"):
        problem.residual(torch.zeros(3, 2), None)


@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_check_weight_rejects_negative_and_non_finite(value):
    with pytest.raises(ValueError, match=r"boundary_weight must be a finite number >= 0"):
        check_weight(value, "boundary_weight")
    assert check_weight(0, "w") == 0.0 and check_weight("0.5", "w") == 0.5


def test_builtin_poisson_rejects_negative_weights():
    from kanpde.problems.poisson import KANPaperPoisson

    with pytest.raises(ValueError, match=r"residual_weight must be a finite number >= 0"):
        KANPaperPoisson(residual_weight=-0.01)


def test_builtin_poisson_residual_vanishes_on_the_exact_solution():
    """The source term matches the exact solution: the residual of u = sin(pi x) sin(pi y^2) is ~0."""
    from kanpde.problems.poisson import KANPaperPoisson, SinSinPoisson

    x = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for problem in (KANPaperPoisson(), SinSinPoisson()):
        class Exact(torch.nn.Module):
            def forward(self, p, problem=problem):
                return problem.exact(p)

        residual = problem.residual(x, Fields(Exact(), x, problem.variables, problem.outputs, domain=problem.domain))
        torch.testing.assert_close(residual, torch.zeros(50, dtype=torch.float64), rtol=0, atol=1e-11)
        edge = torch.tensor([[-1.0, 0.3], [1.0, -0.7], [0.2, 1.0], [0.9, -1.0]], dtype=torch.float64)
        torch.testing.assert_close(problem.exact(edge)[:, 0], torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-14)
