"""Systems (several outputs and residual equations) and higher-order terms through the general path.

Three problems a user could write: a first-order system for Poisson's equation (outputs u and v = u_x, a
dict of two residuals), an equation with a mixed derivative u_xy, and a KdV-type equation with u_xxx.
The fast forward engine covers what its jet holds (values, first and pure second derivatives) and falls
back to autograd for the rest, by itself; the loss terms must equal the all-autograd engine's to 1e-10
(float64), and a few training steps must run and lower the loss.
"""

from __future__ import annotations

import math

import pytest
import torch

from kanpde import Box, Condition, KAN, MLP, Problem, Sampler, Stage, dirichlet, neumann, train
from kanpde.training import Evaluation, collocation, loss_terms
from kanpde.validation import validate

PI = math.pi
TOLERANCE = dict(rtol=1e-10, atol=1e-10)


class PoissonSystem(Problem):
    r"""Poisson's equation as a first-order system in two outputs.

    .. math::
        v_x + u_{yy} = f, \quad v = u_x \text{ on } [-1,1]^2, \qquad u = 0,\ v = \pi\cos(\pi x)\sin(\pi y)
        \text{ on the boundary},

    f = -2 pi^2 sin(pi x) sin(pi y); exact u = sin(pi x) sin(pi y), v = pi cos(pi x) sin(pi y).
    """

    variables = ("x", "y")
    outputs = ("u", "v")
    description = "first-order system for Poisson: v_x + u_yy = f, v = u_x"

    def __init__(self):
        self.domain = Box(self.variables, (-1.0, -1.0), (1.0, 1.0))
        self.residual_weight = 0.01

    def residual(self, x, d):
        source = -2 * PI**2 * torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])
        return {"poisson": d["v_x"] + d["u_yy"] - source, "flux": d["v"] - d["u_x"]}

    def conditions(self):
        return {"u": dirichlet(0.0, output="u"),
                "v": dirichlet(lambda x: self.exact(x)[:, 1], output="v")}

    def exact(self, x):
        u = torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])
        v = PI * torch.cos(PI * x[:, 0]) * torch.sin(PI * x[:, 1])
        return torch.stack([u, v], dim=1)  # (N, 2)


class MixedDerivative(Problem):
    r"""An elliptic equation with a cross term, u_xx + u_xy + u_yy = f on [0,1]^2.

    Exact u = sin(pi x) sin(pi y), so f = pi^2 (cos(pi x) cos(pi y) - 2 sin(pi x) sin(pi y)); u = 0 on
    x = 0, 1 and y = 0, and the Neumann condition du/dn = -pi sin(pi x) on y = 1.
    """

    variables = ("x", "y")
    outputs = ("u",)
    description = "u_xx + u_xy + u_yy = f with a Neumann face"

    def __init__(self):
        self.domain = Box.from_bounds(x=(0.0, 1.0), y=(0.0, 1.0))
        self.residual_weight = 0.01

    def residual(self, x, d):
        px, py = PI * x[:, 0], PI * x[:, 1]
        source = PI**2 * (torch.cos(px) * torch.cos(py) - 2 * torch.sin(px) * torch.sin(py))
        return d["u_xx"] + d["u_xy"] + d["u_yy"] - source

    def conditions(self):
        return {"walls": dirichlet(0.0, on=["x=0", "x=1", "y=0"]),
                "top": neumann(lambda x: -PI * torch.sin(PI * x[:, 0]), on="y=1")}

    def exact(self, x):
        return (torch.sin(PI * x[:, 0]) * torch.sin(PI * x[:, 1])).unsqueeze(-1)


class ThirdOrder(Problem):
    r"""A KdV-type equation u_t + u u_x + u_xxx = f on [-1,1] x [0,1] with exact u = e^-t sin(pi x).

    f = e^-t (-sin(pi x) + e^-t pi sin(pi x) cos(pi x) - pi^3 cos(pi x)); the initial value and the x = +-1
    boundary values come from the exact solution; a custom Condition also pins u_x on x = 1.
    """

    variables = ("x", "t")
    outputs = ("u",)
    description = "KdV-type: u_t + u u_x + u_xxx = f"

    def __init__(self):
        self.domain = Box.from_bounds(x=(-1.0, 1.0), t=(0.0, 1.0))

    def residual(self, x, d):
        decay, px = torch.exp(-x[:, 1]), PI * x[:, 0]
        source = decay * (-torch.sin(px) + decay * PI * torch.sin(px) * torch.cos(px) - PI**3 * torch.cos(px))
        return d["u_t"] + d["u"] * d["u_x"] + d["u_xxx"] - source

    def conditions(self):
        def slope(x, d):
            return d["u_x"] + PI * torch.exp(-x[:, 1])  # u_x(1, t) = -pi e^-t

        return {"initial": dirichlet(lambda x: torch.sin(PI * x[:, 0]), on="t=0"),
                "sides": dirichlet(0.0, on=["x=-1", "x=1"]),
                "slope": Condition(on="x=1", residual=slope, weight=0.5)}

    def exact(self, x):
        return (torch.exp(-x[:, 1]) * torch.sin(PI * x[:, 0])).unsqueeze(-1)


PROBLEMS = {"system": PoissonSystem, "mixed": MixedDerivative, "third": ThirdOrder}
FALLBACK = {"system": {}, "mixed": {"interior": ("u_xy",)}, "third": {"interior": ("u_xxx",)}}
TERMS = {"system": ("poisson", "flux", "u", "v"), "mixed": ("pde", "walls", "top"),
         "third": ("pde", "initial", "sides", "slope")}


def make_model(family: str, problem: Problem, seed: int = 0) -> torch.nn.Module:
    n_in, n_out = problem.domain.dim, len(problem.outputs)
    if family == "kan":
        model = KAN([n_in, 4, n_out], grid_size=4, grid_range=problem.domain.ranges, noise_scale=0.5, seed=seed)
    else:
        model = MLP([n_in, 8, 8, n_out], activation="tanh", input_range=problem.domain.ranges, seed=seed)
    return model.to(torch.float64)


def probe_points(problem: Problem) -> dict[str, torch.Tensor]:
    points = collocation(problem, Sampler(n_interior=48, n_boundary=24, seed=3))
    return {name: x.to(torch.float64) for name, x in points.items()}


@pytest.mark.parametrize("family", ["kan", "mlp"])
@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_loss_terms_and_gradients_match_autograd(kind, family):
    problem = PROBLEMS[kind]()
    model = make_model(family, problem)
    points = probe_points(problem)
    results = {}
    for engine in ("forward", "autograd"):
        model.zero_grad(set_to_none=True)
        terms = loss_terms(problem, model, points, engine=engine)
        sum(terms.values()).backward()
        results[engine] = ({k: v.detach() for k, v in terms.items()},
                           [p.grad.detach().clone() for p in model.parameters()])
    (fast_terms, fast_grads), (slow_terms, slow_grads) = results["forward"], results["autograd"]
    assert tuple(fast_terms) == TERMS[kind]
    for name in fast_terms:
        torch.testing.assert_close(fast_terms[name], slow_terms[name], **TOLERANCE, msg=f"loss term {name!r}")
        assert fast_terms[name] > 0
    for fast, slow in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast, slow, **TOLERANCE)


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_fast_path_where_it_applies_fallback_elsewhere(kind):
    problem = PROBLEMS[kind]()
    model = make_model("kan", problem)
    report = validate(problem, model, engine="forward")
    assert report.fast_path
    assert report.terms == TERMS[kind]
    assert report.autograd == FALLBACK[kind]
    assert report.used_autograd == bool(FALLBACK[kind])
    assert report.has_exact


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_residual_vanishes_on_the_exact_solution(kind):
    """The problems above are consistent: their exact solution, as a 'model', zeroes every loss term."""
    problem = PROBLEMS[kind]()

    class Exact(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.one = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x):
            return self.one * problem.exact(x)

    terms = loss_terms(problem, Exact(), probe_points(problem), engine="autograd")
    for name, value in terms.items():
        value = float(value.detach())
        assert value < 1e-20, f"{kind}: term {name!r} = {value:.3e} on the exact solution"


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_a_few_training_steps_lower_the_loss(kind, lbfgs):
    problem = PROBLEMS[kind]()
    model = make_model("kan", problem)
    sampler = Sampler(n_interior=64, n_boundary=24, seed=1)
    grid = torch.cartesian_prod(*[torch.linspace(lo, hi, 7, dtype=torch.float64) for lo, hi in problem.domain.ranges])
    evaluation = Evaluation(grid, problem.exact(grid))
    stages = [Stage("lbfgs", 2, 4), Stage("lbfgs", 1, 6)]  # grid extension with every output
    result = train(problem, model, stages, {"lbfgs": lbfgs(max_iter=3)}, sampler, evaluation, eval_every=1,
                   grid_update=None, progress=False)
    assert result.status == "completed" and result.metrics["steps"] == 3
    assert result.model.widths[-1] == len(problem.outputs) and result.model.grid_size == 6
    losses = [row["loss"] for row in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert math.isfinite(result.metrics["rel_l2"])
    assert {f"loss_{term}" for term in TERMS[kind]} <= set(result.history[-1])


class MixedOnAFace(MixedDerivative):
    """Poisson (no cross term) on MixedDerivative's square, plus a condition that reads u_xy on a face: that
    point set alone needs autograd."""

    def residual(self, x, d):
        return d.laplacian("u") + 2 * PI**2 * self.exact(x)[:, 0]

    def conditions(self):
        exact_xy = lambda x: PI**2 * torch.cos(PI * x[:, 0]) * torch.cos(PI * x[:, 1])  # noqa: E731
        return {**super().conditions(), "cross": Condition(on="y=1", residual=lambda x, d: d["u_xy"] - exact_xy(x))}


def test_history_loss_of_a_mixed_derivative_condition_is_its_true_value(lbfgs):
    """History rows re-evaluate the loss without a backward pass; a face term needing autograd must still get
    its graph there (it used to be evaluated without one, and its u_xy read as zero)."""
    problem = MixedOnAFace()
    model = make_model("kan", problem)
    report = validate(problem, model, engine="forward")
    assert report.autograd == {"cross": ("u_xy",)}
    result = train(problem, model, [Stage("lbfgs", 2, 4)], {"lbfgs": lbfgs(max_iter=3)},
                   Sampler(n_interior=64, n_boundary=24, seed=1), eval_every=1, grid_update=None,
                   progress=False, input_grad=tuple(report.autograd))
    points = collocation(problem, Sampler(n_interior=64, n_boundary=24, seed=1))
    points = {name: x.requires_grad_(name in report.autograd) for name, x in points.items()}
    terms = {name: float(value.detach()) for name, value in loss_terms(problem, result.model, points).items()}
    assert terms["cross"] > 1e-3  # u_xy is far from zero after two steps
    assert result.history[-1]["loss_cross"] == pytest.approx(terms["cross"], rel=1e-10)
    assert result.history[-1]["loss"] == pytest.approx(sum(terms.values()), rel=1e-10)
