"""Tests of kanpde.validation: every mistake a user can make in a problem is caught on the probe batch,
before training, with a message that names the problem class, the function and the fix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kanpde import Box, Condition, KAN, MLP, Problem, dirichlet
from kanpde.validation import InvalidProblem, InvalidProblemType, ValidationReport, check_reference, validate

PI = math.pi


class Good(Problem):
    """u_xx + u_yy = -2 pi^2 sin(pi x) sin(pi y) on [-1,1]^2, u = 0 on the boundary."""

    variables = ("x", "y")
    outputs = ("u",)

    def __init__(self):
        self.domain = Box(self.variables, (-1.0, -1.0), (1.0, 1.0))

    def source(self, x):
        return -2 * PI**2 * torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])

    def residual(self, x, d):
        return d.laplacian("u") - self.source(x)

    def conditions(self):
        return {"boundary": dirichlet(0.0)}

    def exact(self, x):
        return (torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])).unsqueeze(-1)


def kan(problem: Problem, dtype=torch.float64) -> KAN:
    widths = [problem.domain.dim, 3, len(problem.outputs)]
    return KAN(widths, grid_size=3, grid_range=problem.domain.ranges, seed=0).to(dtype)


def check(problem: Problem, engine: str = "forward", dtype=torch.float64) -> ValidationReport:
    return validate(problem, kan(problem, dtype), engine=engine)


def with_residual(function, base=Good):
    """An instance of a subclass of ``base`` whose residual is ``function(self, x, d)``."""
    return type("Broken", (base,), {"residual": function})()


# ------------------------------------------------------------------------------------ passing cases


@pytest.mark.parametrize("engine", ["forward", "autograd"])
@pytest.mark.parametrize("family", ["kan", "mlp"])
def test_a_correct_problem_passes_with_a_report(engine, family):
    problem = Good()
    model = kan(problem) if family == "kan" else MLP([2, 6, 1], input_range=problem.domain.ranges).double()
    report = validate(problem, model, engine=engine, n_probe=8)
    assert report.terms == ("pde", "boundary") and report.has_exact and report.n_probe == 8
    assert report.fast_path == (engine == "forward")
    assert not report.used_autograd and report.autograd == {}
    assert "pde, boundary" in report.summary()


def test_validation_changes_neither_parameters_nor_gradients():
    problem = Good()
    model = kan(problem)
    before = [p.detach().clone() for p in model.parameters()]
    validate(problem, model)
    for old, new in zip(before, model.parameters()):
        assert new.grad is None
        torch.testing.assert_close(old, new.detach(), rtol=0, atol=0)


def test_report_names_the_fallback_derivatives():
    report = check(with_residual(lambda self, x, d: d["u_xx"] + d["u_xy"] - self.source(x)))
    assert report.used_autograd and report.autograd == {"interior": ("u_xy",)}
    assert "autograd fallback for interior: u_xy" in report.summary()


def test_float32_model_and_problem_pass():
    assert check(Good(), dtype=torch.float32).terms == ("pde", "boundary")


# --------------------------------------------------------------------- residual values: shape, type


def test_broadcast_n_by_n_residual_is_named():
    # x[:, 0:1] is (N, 1); with d["u_xx"] (N,) it broadcasts to (N, N)
    broken = with_residual(lambda self, x, d: d["u_xx"] + d["u_yy"] - x[:, 0:1])
    with pytest.raises(InvalidProblem, match=r"Broken residual returned shape \(16, 16\) for N = 16 points; "
                                             r"expected \(16,\): an \(N, 1\) tensor .* broadcast to \(N, N\)"):
        check(broken)


def test_trailing_column_residual_is_named():
    broken = with_residual(lambda self, x, d: (d.laplacian() - self.source(x)).unsqueeze(-1))
    with pytest.raises(InvalidProblem, match=r"Broken residual returned shape \(16, 1\).*trailing column: drop it "
                                             r"with \[:, 0\] or \.squeeze\(-1\)"):
        check(broken)


def test_scalar_residual_is_named():
    broken = with_residual(lambda self, x, d: (d.laplacian() - self.source(x)).pow(2).mean())
    with pytest.raises(InvalidProblem, match=r"returned shape \(\) .* it is one number: return the residual at "
                                             r"every point"):
        check(broken)


def test_numpy_residual_is_a_type_error():
    broken = with_residual(lambda self, x, d: d.laplacian().detach().numpy() - self.source(x).numpy())
    with pytest.raises(InvalidProblemType, match=r"Broken residual returned a numpy array; compute it with torch "
                                                 r"functions"):
        check(broken)
    assert issubclass(InvalidProblemType, TypeError) and issubclass(InvalidProblemType, ValueError)


def test_python_number_residual_is_a_type_error():
    with pytest.raises(TypeError, match=r"Broken residual returned float; return a torch.Tensor of shape \(N,\)"):
        check(with_residual(lambda self, x, d: 0.0))


def test_wrong_dtype_residual_is_named():
    # a float64 constant tensor promotes a float32 residual to float64
    broken = with_residual(lambda self, x, d: d.laplacian() - self.source(x).double())
    with pytest.raises(InvalidProblem, match=r"Broken residual returned torch.float64 but the model computes in "
                                             r"torch.float32; build constants with x's dtype"):
        check(broken, dtype=torch.float32)


# -------------------------------------------------------------------- residual values: NaN, detached


@pytest.mark.parametrize("poison, kind", [(math.nan, "NaN"), (math.inf, "infinite")])
def test_non_finite_residual_is_named_with_a_point(poison, kind):
    broken = with_residual(lambda self, x, d: d.laplacian() - self.source(x) + torch.where(x[:, 0] > 0, poison, 0.0))
    with pytest.raises(InvalidProblem, match=rf"Broken residual is not finite at \d+ of 16 probe points \(e.g. {kind} "
                                             r"at \(0\.\d+, -?\d\.\d+\)\); guard divisions"):
        check(broken)


def test_nan_from_a_division_at_the_boundary_is_caught_in_the_condition():
    problem = Good()
    problem.conditions = lambda: {"boundary": Condition("boundary", lambda x, d: d["u"] / (1 - x[:, 0] ** 2))}
    with pytest.raises(InvalidProblem, match=r"Good condition 'boundary' is not finite at \d+ of \d+ probe points"):
        check(problem)


@pytest.mark.parametrize("engine", ["forward", "autograd"])
def test_detached_residual_is_named(engine):
    broken = with_residual(lambda self, x, d: (d.laplacian() - self.source(x)).detach())
    with pytest.raises(InvalidProblem, match=r"Broken residual does not depend on the network: .* without "
                                             r"\.detach\(\)"):
        check(broken, engine)


def test_residual_of_the_points_only_is_named_under_autograd():
    # with the autograd engine x requires grad, so a residual of x alone has a grad_fn but no path to the model
    broken = with_residual(lambda self, x, d: x[:, 0] ** 2 + 0 * d["u"].detach())
    with pytest.raises(InvalidProblem, match="Broken residual does not depend on the network"):
        check(broken, "autograd")


def test_residual_rebuilt_with_torch_tensor_is_detached():
    broken = with_residual(lambda self, x, d: torch.tensor(d.laplacian().tolist(), dtype=x.dtype))
    with pytest.raises(InvalidProblem, match="does not depend on the network"):
        check(broken)


def test_detached_equation_in_a_dict_names_its_key():
    broken = with_residual(lambda self, x, d: {"main": d.laplacian() - self.source(x), "side": d["u"].detach()})
    with pytest.raises(InvalidProblem, match=r"Broken residual\['side'\] does not depend on the network"):
        check(broken)


def test_empty_residual_dict_is_named():
    with pytest.raises(InvalidProblem, match="Broken residual returned an empty dict"):
        check(with_residual(lambda self, x, d: {}))


# -------------------------------------------------------------------- errors raised by user code


def test_unknown_derivative_names_the_users_line():
    broken = with_residual(lambda self, x, d: d["u_z"])
    with pytest.raises(InvalidProblem, match=r"Broken residual raised KeyError at test_validation\.py:\d+: cannot "
                                             r"read 'u_z'.*variables are \('x', 'y'\)"):
        check(broken)


def test_numpy_on_a_graph_tensor_is_explained():
    broken = with_residual(lambda self, x, d: torch.as_tensor(np.sin(d["u"])))
    with pytest.raises(InvalidProblem, match=r"Broken residual raised RuntimeError.*not numpy"):
        check(broken)


def test_missing_residual_is_named():
    class NoResidual(Good):
        residual = Problem.residual

    with pytest.raises(InvalidProblem, match=r"NoResidual must define residual\(self, x, d\)"):
        check(NoResidual())


# ------------------------------------------------------------------------------------- conditions


def test_condition_shape_is_named():
    problem = Good()
    problem.conditions = lambda: {"boundary": Condition("boundary", lambda x, d: d["u"].unsqueeze(-1))}
    with pytest.raises(InvalidProblem, match=r"Good condition 'boundary' returned shape \(8, 1\)"):
        check(problem)


def test_detached_condition_is_named():
    problem = Good()
    problem.conditions = lambda: {"wall": Condition("x=1", lambda x, d: d["u"].detach())}
    with pytest.raises(InvalidProblem, match="Good condition 'wall' does not depend on the network"):
        check(problem)


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, "1"])
def test_bad_condition_weight_is_named(weight):
    problem = Good()
    problem.conditions = lambda: {"boundary": dirichlet(0.0, weight=weight)}
    with pytest.raises(InvalidProblem, match=r"Good condition 'boundary': weight must be a finite number >= 0"):
        check(problem)


@pytest.mark.parametrize("on, message", [
    ("z=0", r"unknown face 'z=0'; faces of this domain are \['x=-1', 'x=1', 'y=-1', 'y=1'\]"),
    ("x=2", r"'x=2' is not a face of the domain: x ranges over \[-1.0, 1.0\]"),
    (["x=1", "top"], r"unknown face 'top'"),
])
def test_bad_condition_face_is_named(on, message):
    problem = Good()
    problem.conditions = lambda: {"wall": dirichlet(0.0, on=on)}
    with pytest.raises(InvalidProblem, match=rf"Good condition 'wall': on=.*{message}"):
        check(problem)


def test_bad_condition_n_points_is_named():
    problem = Good()
    problem.conditions = lambda: {"boundary": dirichlet(0.0, n_points=0)}
    with pytest.raises(InvalidProblem, match=r"condition 'boundary': n_points must be an integer >= 1 or None"):
        check(problem)


def test_conditions_must_be_a_dict_of_conditions():
    problem = Good()
    problem.conditions = lambda: [dirichlet(0.0)]
    with pytest.raises(InvalidProblemType, match=r"Good.conditions\(\) must return a dict of name -> Condition"):
        check(problem)
    problem.conditions = lambda: {"boundary": lambda x, d: d["u"]}
    with pytest.raises(InvalidProblemType, match=r"Good condition 'boundary' must be a kanpde.Condition"):
        check(problem)


def test_condition_named_interior_is_rejected():
    problem = Good()
    problem.conditions = lambda: {"interior": dirichlet(0.0)}
    with pytest.raises(InvalidProblem, match="'interior' is reserved for the interior points"):
        check(problem)


def test_condition_hiding_a_residual_equation_is_rejected():
    broken = with_residual(lambda self, x, d: {"boundary": d.laplacian() - self.source(x)})
    with pytest.raises(InvalidProblem, match="condition 'boundary' gives a loss term named 'boundary', like a "
                                             "residual equation"):
        check(broken)


# -------------------------------------------------------------------------- domain and declarations


def test_domain_with_fewer_variables_than_declared():
    problem = Good()
    problem.domain = Box(("x",), (-1.0,), (1.0,))
    with pytest.raises(InvalidProblem, match=r"Good.domain has 1 variables \('x',\) but the problem declares 2"):
        check(problem)


def test_domain_with_other_variable_names():
    problem = Good()
    problem.domain = Box(("x", "t"), (-1.0, 0.0), (1.0, 1.0))
    with pytest.raises(InvalidProblem, match=r"Good.domain's variables \('x', 't'\) differ from variables"):
        check(problem)


def test_domain_with_lower_not_below_upper():
    problem = Good()
    problem.domain.upper = (1.0, -1.0)  # changed after the Box checked its bounds
    with pytest.raises(InvalidProblem, match=r"Good.domain: y ranges over \[-1.0, -1.0\]; bounds must be finite "
                                             "with lower < upper"):
        validate(problem, kan(Good()))
    with pytest.raises(ValueError, match=r"bounds of 'y' need lower < upper"):
        Box(("x", "y"), (-1.0, 1.0), (1.0, 1.0))


def test_missing_and_wrong_domain():
    class NoDomain(Good):
        def __init__(self):
            pass

    with pytest.raises(InvalidProblem, match=r"NoDomain has no domain: set self.domain = Box\(\('x', 'y'\)"):
        validate(NoDomain(), kan(Good()))
    problem = Good()
    problem.domain = [(-1, 1), (-1, 1)]
    with pytest.raises(InvalidProblemType, match="Good.domain must be a kanpde.Box, got list"):
        validate(problem, kan(Good()))


@pytest.mark.parametrize("attribute, value, error, message", [
    ("outputs", (), InvalidProblem, r"Good.outputs is empty"),
    ("variables", (), InvalidProblem, r"Good.variables is empty"),
    ("outputs", "u", InvalidProblemType, r"Good.outputs must be a tuple of names"),
    ("outputs", ("u", "u"), InvalidProblem, r"Good.outputs must be distinct"),
    ("variables", ("x", "x"), InvalidProblem, r"Good.variables must be distinct"),
    ("outputs", ("u_1",), InvalidProblem, r"contain '_', which separates a field from its derivative"),
    ("outputs", ("x",), InvalidProblem, r"\['x'\] is both a variable and an output"),
    ("variables", ("x", "y z"), InvalidProblem, r"Good.variables must be identifiers"),
])
def test_bad_names(attribute, value, error, message):
    problem = Good()
    setattr(problem, attribute, value)
    with pytest.raises(error, match=message):
        validate(problem, kan(Good()))


@pytest.mark.parametrize("weight", [-0.5, math.nan, None])
def test_bad_residual_weight(weight):
    problem = Good()
    problem.residual_weight = weight
    with pytest.raises(InvalidProblem, match=r"Good.residual_weight must be a finite number >= 0"):
        check(problem)


def test_model_of_the_wrong_size_is_named():
    problem = Good()
    model = KAN([2, 3, 2], grid_size=3).double()
    with pytest.raises(InvalidProblem, match=r"the model maps \(N, 2\) points to \(4, 2\), but Good has outputs "
                                             r"\('u',\): build it with n_in=2, n_out=1"):
        validate(problem, model)


def test_bad_hard_constraint_is_a_type_error():
    problem = Good()
    problem.hard_constraint = lambda x, u: u
    with pytest.raises(InvalidProblemType, match="Good.hard_constraint must be None or an object with apply_value"):
        check(problem)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown derivative engine 'jax'"):
        check(Good(), engine="jax")
    with pytest.raises(ValueError, match="n_probe must be an integer >= 3"):
        validate(Good(), kan(Good()), n_probe=1)


# ------------------------------------------------------------------------------ exact and reference


class TwoOutputs(Good):
    outputs = ("u", "v")

    def residual(self, x, d):
        return {"u": d.laplacian("u") - self.source(x), "v": d["v"] - d["u_x"]}


@pytest.mark.parametrize("problem_class, exact, message", [
    (Good, lambda x: torch.sin(x[:, 0]) + torch.sin(x[:, 1:2]), r"Good exact returned shape \(16, 16\) for N = 16 "
                                                             r"points; expected \(16, 1\) or \(16,\).*broadcast"),
    (Good, lambda x: x, r"Good exact returned shape \(16, 2\).*one column per output \('u',\)"),
    (TwoOutputs, lambda x: x[:, 0], r"TwoOutputs exact returned shape \(16,\) for N = 16 points; expected \(16, 2\)"),
    (Good, lambda x: torch.log(x[:, :1]), r"Good exact is not finite at some probe points"),
    (Good, lambda x: (x[:, :1] > 0).long(), r"Good exact returned torch.int64; return floating-point values"),
])
def test_bad_exact_solution(problem_class, exact, message):
    problem = problem_class()
    problem.exact = exact
    with pytest.raises(InvalidProblem, match=message):
        check(problem)


def test_numpy_exact_solution_is_a_type_error():
    problem = Good()
    problem.exact = lambda x: np.sin(x.numpy())
    with pytest.raises(InvalidProblemType, match="Good exact returned a numpy array; return a torch.Tensor"):
        check(problem)


def test_two_output_exact_of_the_right_shape_passes():
    problem = TwoOutputs()
    problem.exact = lambda x: torch.stack([x[:, 0], x[:, 1]], dim=1)
    assert check(problem).terms == ("u", "v", "boundary")


def test_check_reference():
    problem = Good()
    points, values = check_reference(problem, (np.zeros((5, 2)), torch.zeros(5)))
    assert points.shape == (5, 2) and values.shape == (5, 1)
    with pytest.raises(InvalidProblem, match=r"Good.reference\(\) points have shape \(5, 3\); expected \(M, 2\)"):
        check_reference(problem, (torch.zeros(5, 3), torch.zeros(5, 1)))
    with pytest.raises(InvalidProblem, match=r"values have shape \(4, 1\); expected \(5, 1\)"):
        check_reference(problem, (torch.zeros(5, 2), torch.zeros(4, 1)))
    with pytest.raises(InvalidProblem, match=r"values must be finite"):
        check_reference(problem, (torch.zeros(5, 2), torch.full((5, 1), math.nan)))
    with pytest.raises(InvalidProblemType, match=r"must return None or a pair"):
        check_reference(problem, torch.zeros(5, 3))
