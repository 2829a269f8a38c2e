"""kanpde.windows: each stage trains on points drawn in its time window (Stage.time_window), and its residual
square is weighted by exp(-c t) (Stage.time_decay)."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hydra import compose, initialize_config_module

from kanpde.app import ConfigError, build, run
from kanpde.derivatives import Fields
from kanpde.nn import KAN
from kanpde.optim import LevenbergMarquardt
from kanpde.problems.heat import ForcedHeat
from kanpde.problems.poisson import KANPaperPoisson
from kanpde.sampling import Sampler
from kanpde.objective import residual_terms
from kanpde.training import Stage, train
from kanpde.windows import time_decay, window_domain

LM = {"lm": functools.partial(LevenbergMarquardt)}


def tiny_kan(problem):
    return KAN([2, 3, 1], grid_size=3, order=3, grid_range=problem.domain.ranges).double()


def stage_points(stages, problem=None, sampler=None):
    """Train on ``stages`` and return the point sets of each stage, as the stage-end checkpoints saw them."""
    problem = problem or ForcedHeat(hard=False)
    sampler = sampler or Sampler("sobol", n_interior=64, n_boundary=32, seed=0)
    seen = []

    def checkpoint(model, step, state):
        if state["step_in_stage"] == 0:  # the snapshot taken after a stage, before the next one begins
            seen.append({k: v.clone() for k, v in state["points"].items()})

    result = train(problem, tiny_kan(problem), stages, LM, sampler, checkpoint=checkpoint, checkpoint_seconds=None)
    assert result.status == "completed"
    return seen, result


def test_each_stage_draws_its_points_in_its_window():
    stages = [Stage("lm", 2, time_window=0.25), Stage("lm", 2, grid_size=5, time_window=0.5), Stage("lm", 2)]
    seen, result = stage_points(stages)
    assert len(seen) == 3
    for points, window in zip(seen, (0.25, 0.5, 1.0)):
        interior = points["interior"]
        assert len(interior) == 64  # the sampler's count in each window: early windows are sampled densely
        assert float(interior[:, 1].max()) <= window and float(interior[:, 1].max()) > 0.8 * window
        assert float(points["boundary"][:, 1].max()) <= window  # conditions on x = +-1 follow the window
        assert float(points["initial"][:, 1].abs().max()) == 0.0
    assert result.metrics["n_interior_final"] == 64


def test_a_stage_keeps_the_points_of_an_equal_window():
    seen, _ = stage_points([Stage("lm", 1, time_window=0.5), Stage("lm", 1, time_window=0.5)])
    assert torch.equal(seen[0]["interior"], seen[1]["interior"])


def test_window_domain_cuts_time_only():
    problem = ForcedHeat(hard=False)
    assert window_domain(problem, 0.3).ranges == [(-1.0, 1.0), (0.0, 0.3)]
    assert window_domain(problem, None) is problem.domain


@pytest.mark.parametrize("window, match", [("soon", "time_window must be a finite number"),
                                           (float("inf"), "time_window must be a finite number"),
                                           (True, "time_window must be a finite number")])
def test_bad_window_values(window, match):
    with pytest.raises(ValueError, match=match):
        Stage("lm", 1, time_window=window)


@pytest.mark.parametrize("window", [0.0, -0.5, 1.5])
def test_window_outside_the_time_range(window):
    with pytest.raises(ValueError, match=r"must lie in \(t_0, t_1\] = \(0, 1\]"):
        stage_points([Stage("lm", 1, time_window=window)])


def test_window_needs_a_time_variable():
    with pytest.raises(ValueError, match="cuts the variable 't', but kanpaperpoisson's variables are"):
        stage_points([Stage("lm", 1, time_window=0.5)], problem=KANPaperPoisson())


@pytest.mark.parametrize("sampler", [Sampler("sobol", n_interior=64, n_boundary=32, resample_every=5),
                                     Sampler("sobol", n_interior=64, n_boundary=32,
                                             adaptive={"every": 5, "mode": "add", "n_new": 8})])
def test_window_refuses_samplers_that_redraw_the_whole_domain(sampler):
    with pytest.raises(ValueError, match="set them to 0 / null with time windows"):
        stage_points([Stage("lm", 1, time_window=0.5)], sampler=sampler)


def test_bad_window_in_a_config_is_a_config_error():
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        cfg = compose("solve", overrides=["problem=heat_soft", "schedule.stages=[{optimizer:lm,steps:1,time_window:x}]"])
    with pytest.raises(ConfigError, match="time_window must be a finite number"):
        build(cfg, "heat_soft")


# ------------------------------------------------------------------------------------ time decay


def test_time_decay_weights_the_residual_square_by_exp_minus_c_t():
    problem = ForcedHeat(hard=False)
    model = tiny_kan(problem)
    points = Sampler("sobol", n_interior=64, n_boundary=32, seed=0).interior(problem.domain)
    plain = residual_terms(problem, model, points)["pde"]
    fields = Fields(model, points, problem.variables, problem.outputs, domain=problem.domain)
    expected = (problem.residual(points, fields).detach() ** 2 * torch.exp(-3.0 * points[:, 1])).mean()
    weighted = residual_terms(problem, model, points, scale=time_decay(problem, 3.0))["pde"]
    torch.testing.assert_close(weighted.detach(), expected)
    assert time_decay(problem, 0.0) is None
    torch.testing.assert_close(residual_terms(problem, model, points, scale=None)["pde"], plain)


def test_time_decay_weights_every_equation_of_a_dict_residual():
    class Two(ForcedHeat):
        def residual(self, x, d):
            return {"a": d["u_t"], "b": 2 * d["u_t"]}

    problem = Two(hard=False)
    model = tiny_kan(problem)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    fields = Fields(model, x, problem.variables, problem.outputs, domain=problem.domain)
    u_t = fields["u_t"].detach()
    terms = residual_terms(problem, model, x, scale=time_decay(problem, 2.0))
    weights = torch.tensor([1.0, math.exp(-2.0)], dtype=torch.float64)
    torch.testing.assert_close(terms["b"].detach(), (4 * u_t**2 * weights).mean())
    torch.testing.assert_close(terms["a"].detach(), (u_t**2 * weights).mean())


def test_training_with_time_decay_records_the_weighted_loss_and_leaves_the_problem_alone():
    problem = ForcedHeat(hard=False)
    _, result = stage_points([Stage("lm", 2, time_decay=5.0), Stage("lm", 1)], problem=problem)
    assert "residual" not in vars(problem)
    first = result.history[0]  # step 0, before training: the initial network's loss under the first stage's decay
    model = tiny_kan(problem)
    sampler = Sampler("sobol", n_interior=64, n_boundary=32, seed=0)
    interior = sampler.interior(problem.domain)
    weighted = float(residual_terms(problem, model, interior, scale=time_decay(problem, 5.0))["pde"].detach())
    plain = float(residual_terms(problem, model, interior)["pde"].detach())
    assert first["loss_pde"] == pytest.approx(weighted, rel=1e-10)
    assert abs(weighted - plain) > 1e-3 * plain  # the decay does change the term


@pytest.mark.parametrize("rate", [-1.0, float("nan"), "fast", True])
def test_bad_time_decay(rate):
    with pytest.raises(ValueError, match="time_decay must be a finite number >= 0"):
        Stage("lm", 1, time_decay=rate)


def test_time_decay_needs_a_time_variable():
    with pytest.raises(ValueError, match="time_decay weights the residual along the variable 't'"):
        stage_points([Stage("lm", 1, time_decay=1.0)], problem=KANPaperPoisson())


def test_a_time_schedule_on_a_problem_without_time_is_a_config_error(tmp_path):
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        cfg = compose("solve", overrides=["problem=poisson", "schedule=allen_cahn", "sampler.n_interior=64",
                                          "sampler.n_boundary=32", "eval.points_per_side=11"])
    with pytest.raises(ConfigError, match="time_decay weights the residual along the variable 't'"):
        run(cfg, tmp_path, "poisson")
    assert not (tmp_path / "metrics.json").exists()


def test_time_windows_must_grow():
    from kanpde.windows import check_windows

    from kanpde.problems.allen_cahn import AllenCahn

    problem = AllenCahn(reference_points=(16, 5), reference_modes=16)
    stages = [Stage("lm", 1, time_window=0.5), Stage("lm", 1, time_window=0.25)]
    with pytest.raises(ValueError, match="time windows must grow"):
        check_windows(problem, stages, Sampler())


def test_a_run_with_time_windows_and_decay_resumes_exactly(float64_default):
    """Stopped mid-way through the second window and resumed from its saved state: the same history and network."""
    from kanpde.signals import Interrupted

    class Stoppable(ForcedHeat):
        def __init__(self, stop_at=None):
            super().__init__(hard=False)
            self.stop_at, self.calls = stop_at, 0

        def residual(self, x, d):
            self.calls += 1
            if self.calls == self.stop_at:
                raise Interrupted(15)
            return super().residual(x, d)

    stages = [Stage("lm", 3, time_window=0.5, time_decay=2.0),
              Stage("lm", 5, grid_size=5, time_window=1.0, time_decay=1.0)]

    def run(stop_at=None, resume=None):
        problem = Stoppable(stop_at)
        result = train(problem, tiny_kan(problem), stages, LM, Sampler("sobol", n_interior=64, n_boundary=32, seed=0),
                       progress=False, resume=resume)
        return result, problem.calls

    torch.set_num_threads(1)
    reference, calls = run()
    for fraction in (0.85, 0.9, 0.8, 0.95):  # residual calls per step vary: find a stop inside the second window
        stopped, _ = run(stop_at=int(calls * fraction))
        if stopped.resume is not None and stopped.resume["stage"] == 1 and stopped.resume["step_in_stage"] > 0:
            break
    else:
        raise AssertionError("no stop landed inside the second window")
    resumed, _ = run(resume=stopped.resume)
    strip = [{k: v for k, v in row.items() if k != "time"} for row in reference.history]
    assert [{k: v for k, v in row.items() if k != "time"} for row in resumed.history] == strip
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
