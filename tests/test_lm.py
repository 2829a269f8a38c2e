"""Levenberg-Marquardt: the optimizer on its own (it sees residual products, not a model), and in training."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from kanpde import KAN, MLP, Box, Problem, Sampler, Stage, dirichlet, train
from kanpde.app import make_evaluation
from kanpde.jacobian import ParameterIndex
from kanpde.objective import GaussNewton
from kanpde.optim import LevenbergMarquardt, TorchOptimizer, make_optimizer
from kanpde.problems.poisson import SinSinPoisson


class Residuals:
    """An objective from a residual function of a parameter vector: R(theta) and its Jacobian by autograd."""

    def __init__(self, function, theta):
        self.function, self.theta, self.evaluations = function, theta, 0

    def gauss_newton(self, index: ParameterIndex) -> GaussNewton:
        self.evaluations += 1
        jacobian = torch.autograd.functional.jacobian(self.function, self.theta.detach())
        residual = self.function(self.theta.detach())
        return GaussNewton(torch.triu(jacobian.T @ jacobian), jacobian.T @ residual, {"r": float(residual @ residual)})

    def loss(self) -> float:
        self.evaluations += 1
        residual = self.function(self.theta.detach())
        return float(residual @ residual)

    def trial_loss(self, index) -> float:
        return self.loss()


def rosenbrock(theta):
    return torch.stack([10 * (theta[1] - theta[0] ** 2), 1 - theta[0]])


def test_rosenbrock_residuals_converge_to_the_minimum_with_monotone_loss():
    theta = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    objective = Residuals(rosenbrock, theta)
    optimizer = LevenbergMarquardt([theta])
    losses, reason = [], ""
    for _ in range(100):
        report = optimizer.step(objective)
        losses.append(report.loss)
        if report.converged:
            reason = report.converged
            break
    torch.testing.assert_close(theta.detach(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-9)
    assert reason, "the optimizer never reported convergence"
    assert all(b <= a for a, b in zip(losses, losses[1:])), "an accepted step raised the loss"
    assert len(losses) < 60


def test_a_linear_least_squares_problem_is_solved_in_a_few_steps():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(30, 5, dtype=torch.float64, generator=generator)
    b = torch.randn(30, dtype=torch.float64, generator=generator)
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    objective = Residuals(lambda t: a @ t - b, theta)
    optimizer = LevenbergMarquardt([theta], damping=1e-9)
    for _ in range(3):
        optimizer.step(objective)
    solution = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(theta.detach(), solution, rtol=1e-8, atol=1e-10)


class Rejecting(Residuals):
    """Every trial looks worse than the start: LM must undo each one and say that it found no descent."""

    def gauss_newton(self, index):
        products = super().gauss_newton(index)
        self.before = products.loss
        return products

    def trial_loss(self, index) -> float:
        return self.before + 1.0


def test_rejected_steps_restore_the_parameters_exactly():
    theta = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    start = theta.detach().clone()
    optimizer = LevenbergMarquardt([theta], damping=1e-3, max_trials=4)
    report = optimizer.step(Rejecting(rosenbrock, theta))
    assert torch.equal(theta.detach(), start)
    assert report.info["trials"] == 4 and "no step lowered the loss" in report.converged
    assert optimizer.damping == pytest.approx(1e-3 * 2 * 4 * 8 * 16)  # nu doubles after every rejection


def test_the_lbfgs_closure_hands_back_the_loss_in_the_parameters_dtype(float64_default):
    """L-BFGS's line search compares closure losses: a float32 loss would round a float64 run's 1e-12."""
    torch.set_default_dtype(torch.float32)  # as after `import torch`: the CLI sets the model's dtype only
    problem = SinSinPoisson()
    model = KAN([2, 2, 1], grid_range=problem.domain.ranges).double()
    seen = []

    class Spy(torch.optim.LBFGS):
        def step(self, closure):
            seen.append(closure())
            return super().step(closure)

    train(problem, model, [Stage("spy", 1)], {"spy": functools.partial(Spy, max_iter=2)},
          Sampler("uniform", 16, 8, seed=0), progress=False)
    assert seen and all(loss.dtype == torch.float64 for loss in seen)


@pytest.mark.parametrize("kwargs, message", [
    ({"damping": 0.0}, "damping must be a finite number > 0"),
    ({"damping": math.nan}, "damping must be a finite number > 0"),
    ({"max_trials": 0}, "max_trials must be an integer >= 1"),
    ({"xtol": -1.0}, "xtol must be a finite number >= 0"),
    ({"max_damping": math.inf}, "max_damping must be a finite number > 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    theta = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        LevenbergMarquardt([theta], **kwargs)


def test_no_trainable_parameters_is_refused():
    with pytest.raises(ValueError, match="no parameters that require grad"):
        LevenbergMarquardt([torch.zeros(3)])


def test_a_model_too_large_for_a_dense_solve_is_refused_before_training(float64_default):
    problem = SinSinPoisson()
    model = MLP([2, 100, 100, 100, 100, 1], input_range=problem.domain.ranges)
    lm = functools.partial(LevenbergMarquardt)
    with pytest.raises(ValueError, match=r"30,701 parameters needs a 30,701 x 30,701 Gauss-Newton matrix \(7\.0 GiB\)"):
        train(problem, model, [Stage("lbfgs", 1), Stage("lm", 1)], {"lm": lm, "lbfgs": torch.optim.LBFGS},
              Sampler("uniform", 16, 8, seed=0), progress=False)


def test_the_size_check_looks_at_the_grid_a_later_stage_extends_to(float64_default):
    problem = SinSinPoisson()
    model = KAN([2, 5, 1], grid_size=3, grid_range=problem.domain.ranges)
    lm = functools.partial(LevenbergMarquardt, max_parameters=200)  # 15 edges x (3 + 5): 120 now, 435 at grid 24
    with pytest.raises(ValueError, match="435 parameters"):
        train(problem, model, [Stage("lm", 1, grid_size=3), Stage("lm", 1, grid_size=24)], {"lm": lm},
              Sampler("uniform", 16, 8, seed=0), progress=False)


def test_make_optimizer_wraps_torch_optimizers_and_refuses_other_objects():
    model = KAN([2, 2, 1])
    assert isinstance(make_optimizer(torch.optim.Adam, model), TorchOptimizer)
    assert isinstance(make_optimizer(LevenbergMarquardt, model), LevenbergMarquardt)
    with pytest.raises(TypeError, match="expected a torch.optim.Optimizer or a kanpde.optim.AbstractOptimizer"):
        make_optimizer(lambda parameters: object(), model)


def test_lm_training_lowers_the_error_at_every_grid_extension(float64_default):
    """sin(pi x) sin(pi y) with a [2, 5, 1] quintic KAN on 400 points: LM on grids 3 -> 6 -> 12; a history
    row per iteration with the damping; the loss never rises within a stage (rejected steps are undone)."""
    problem = SinSinPoisson()
    model = KAN([2, 5, 1], grid_size=3, order=5, grid_range=problem.domain.ranges, seed=0)
    stages = [Stage("lm", 15, 3), Stage("lm", 15, 6), Stage("lm", 15, 12)]
    result = train(problem, model, stages, {"lm": LevenbergMarquardt}, Sampler("sobol", 400, 160, seed=0),
                   make_evaluation(problem, 31), grid_update=None, progress=False)
    assert result.status == "completed"
    history = result.history
    assert all("lambda" in row and "step_norm" in row for row in history[1:])
    ends = [[row for row in history if row["stage"] == s][-1]["rel_l2"] for s in range(3)]
    assert ends[0] > ends[1] > ends[2], ends
    assert ends[2] < 1e-3, ends  # measured 1.0e-4
    for stage in range(3):
        losses = [row["loss"] for row in history if row["stage"] == stage]
        assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:]))


class Zero(Problem):
    """u_xx + u_yy = 0 with u = 0 on the boundary: the zero function, which LM reaches to round-off."""

    def __init__(self):
        self.domain = Box(("x", "y"), (-1, -1), (1, 1))

    def residual(self, x, d):
        return d.laplacian("u")

    def conditions(self):
        return {"boundary": dirichlet(0.0)}


def test_a_converged_stage_ends_early_and_training_goes_on(float64_default):
    problem = Zero()
    model = MLP([2, 4, 1], seed=0)
    result = train(problem, model, [Stage("lm", 200), Stage("lm", 5)], {"lm": LevenbergMarquardt},
                   Sampler("uniform", 64, 32, seed=0), progress=False)
    assert result.status == "completed"
    assert result.metrics["steps"] < 205
    assert result.metrics["final_loss"] < 1e-20
    assert {row["stage"] for row in result.history} == {0, 1}


def test_lm_runs_in_float32_too():
    problem = SinSinPoisson()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0).float()
    result = train(problem, model, [Stage("lm", 8, 3)], {"lm": LevenbergMarquardt}, Sampler("sobol", 128, 64, seed=0),
                   grid_update=None, progress=False)
    losses = [row["loss"] for row in result.history]
    assert result.status == "completed" and next(result.model.parameters()).dtype == torch.float32
    assert losses[-1] < 0.5 * losses[0], losses
