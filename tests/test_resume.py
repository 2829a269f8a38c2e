"""Exact resume in process: a run stopped mid-stage (the same code path as SIGTERM: an ``Interrupted`` raised
inside a step) and continued from its saved state repeats the uninterrupted run exactly.

The subprocess versions (a real SIGTERM, then ``resume=auto``) are in tests/test_resume_cli.py.
"""

from __future__ import annotations

import functools
import io
import math
import signal

import numpy as np
import pytest
import torch

from kanpde.nn import KAN
from kanpde.optim import LevenbergMarquardt
from kanpde.problems.poisson import SinSinPoisson
from kanpde.resume import CheckpointError, config_drift, flatten, read_checkpoint, rng_state, set_rng_state
from kanpde.sampling import Sampler, evaluation_grid
from kanpde.signals import Interrupted
from kanpde.training import Evaluation, GridUpdate, Stage, train


class Stoppable(SinSinPoisson):
    """pykan's Poisson problem; its ``stop_at``-th residual call raises SIGTERM's exception (mid-step)."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.stop_at, self.calls = stop_at, 0

    def residual(self, x, d):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Interrupted(signal.SIGTERM)
        return super().residual(x, d)


LBFGS = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=5, history_size=50, line_search_fn="strong_wolfe",
                          tolerance_grad=1e-32, tolerance_change=1e-32)
ADAM = functools.partial(torch.optim.Adam, lr=1e-2)
LM = functools.partial(LevenbergMarquardt, ftol=0.0, xtol=0.0)  # no early stop: every step runs

SCHEDULES = {
    "lbfgs": ([Stage("lbfgs", 6, 3), Stage("lbfgs", 6, 5)], {}),
    "lm": ([Stage("lm", 6, 3), Stage("lm", 6, 5)], {}),
    "adam_lbfgs": ([Stage("adam", 8, 3), Stage("lbfgs", 4, 5)], {}),
    "lm_adaptive": ([Stage("lm", 6, 3), Stage("lm", 6, 5)], {"adaptive": {"every": 2, "n_new": 16}}),
    # a sparsity stage, then pruning at the second stage's start: the pruned KAN is rebuilt from its spec
    "lbfgs_prune": ([Stage("lbfgs", 6, 3, sparsity=1e-2), Stage("lbfgs", 6, 5, prune=0.5)], {}),
}


def run(schedule: str, stop_at: int | None = None, resume: dict | None = None):
    stages, sampler_options = SCHEDULES[schedule]
    problem = Stoppable(stop_at)
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0).to(torch.float64)
    points = evaluation_grid(problem.domain, 11)
    evaluation = Evaluation(points, problem.exact(points))
    sampler = Sampler("sobol", n_interior=64, n_boundary=32, seed=0, **sampler_options)
    result = train(problem, model, stages, {"lbfgs": LBFGS, "adam": ADAM, "lm": LM}, sampler, evaluation,
                   grid_update=GridUpdate(), eval_every=2, progress=False, resume=resume)
    return result, problem.calls


def through_a_file(state: dict) -> dict:
    """The state as a checkpoint holds it: saved, and loaded back with weights_only=True."""
    buffer = io.BytesIO()
    torch.save({"model_spec": state["model_spec"], "state_dict": state["model_state"], "resume": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["resume"]


def stop_in_the_second_stage(schedule: str, calls: int):
    """A run stopped in the middle of a step of the second stage, and its state read back from a file."""
    for fraction in (0.7, 0.8, 0.9, 0.6):  # residual calls per step differ between optimizers
        stopped, _ = run(schedule, stop_at=int(calls * fraction))
        state = through_a_file(stopped.resume)
        if state["stage"] == 1 and state["step_in_stage"] > 0:
            return stopped, state
    raise AssertionError(f"no stop landed inside the second stage of {schedule}")


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_a_resumed_run_repeats_the_uninterrupted_one(schedule, float64_default):
    torch.set_num_threads(1)
    reference, calls = run(schedule)
    assert reference.status == "completed"
    stopped, state = stop_in_the_second_stage(schedule, calls)
    assert stopped.status == "interrupted" and stopped.metrics["signal"] == "SIGTERM"
    assert "stopped by SIGTERM" in stopped.message
    assert state["stage"] == 1 and 0 < state["step_in_stage"] < 6 and not state["stage_done"], \
        (state["stage"], state["step_in_stage"])
    assert state["model_spec"]["grid_size"] == 5  # the extended KAN: rebuilt on resume, not re-extended
    if schedule == "lbfgs_prune":
        assert state["model_spec"]["widths"] != [2, 3, 1], "nothing was pruned: the test would not test it"
    resumed, _ = run(schedule, resume=state)
    assert resumed.status == "completed" and resumed.metrics["resumed_at_step"] == state["step"]
    assert without_time(resumed.history) == without_time(reference.history)  # exactly, row by row
    for key in ("rel_l2", "mse", "max_abs", "final_loss", "steps", "loss_evaluations", "n_interior_final",
                "parameters", "grid_size"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-10, abs=0), key
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_the_adaptive_points_are_part_of_the_state(float64_default):
    reference, calls = run("lm_adaptive")
    stopped, state = stop_in_the_second_stage("lm_adaptive", calls)
    grown = state["points"]["interior"]
    assert len(grown) > 64 and len(grown) % 16 == 0  # points were added before the stop, and are kept
    assert reference.metrics["n_interior_final"] > len(grown)


def test_a_stop_between_stages_resumes_at_the_next_stage(float64_default):
    """A stop during the grid extension: the state is the end of the first stage, on its grid."""
    reference, _ = run("lbfgs")
    _, calls_first_stage = run("lbfgs", stop_at=10**9)  # count calls of a whole run...
    stages, _ = SCHEDULES["lbfgs"]
    one_stage = Stoppable()
    model = KAN([2, 3, 1], grid_size=3, grid_range=one_stage.domain.ranges, seed=0).to(torch.float64)
    train(one_stage, model, stages[:1], {"lbfgs": LBFGS}, Sampler("sobol", n_interior=64, n_boundary=32, seed=0),
          grid_update=GridUpdate(), eval_every=2, progress=False)
    # ...and stop at the first residual call of the second stage (the extension's first step)
    stopped, _ = run("lbfgs", stop_at=one_stage.calls + 1 + 1)  # + the evaluation of the first stage's record
    state = stopped.resume
    assert state["stage"] in (0, 1)
    resumed, _ = run("lbfgs", resume=through_a_file(state))
    assert without_time(resumed.history) == without_time(reference.history)


def test_rng_states_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert __import__("random").random() == expected[2]


def test_config_drift_names_the_differing_keys():
    old = {"model": {"grid_size": 5, "hidden": [10]}, "seed": 0, "resume": None, "train": {"max_time": 10}}
    new = {"model": {"grid_size": 7, "hidden": [10]}, "seed": 1, "resume": "auto", "train": {"max_time": 99}}
    assert config_drift(old, new) == ["model.grid_size", "seed"]  # resume and max_time may change
    assert flatten({"a": {"b": [1, 2]}}) == {"a.b": [1, 2]}


def test_resume_rejects_a_model_of_another_kind(float64_default):
    _, state = stop_in_the_second_stage("lm", run("lm")[1])
    problem = Stoppable()
    other = KAN([2, 3, 1], grid_size=3, order=5, grid_range=problem.domain.ranges).to(torch.float64)
    with pytest.raises(CheckpointError, match=r"holds a kan with order=3, the model given has order=5"):
        train(problem, other, SCHEDULES["lm"][0], {"lm": LM}, Sampler("sobol", 64, 32), resume=state,
              progress=False)


@pytest.mark.parametrize("value, message", [(-1, "checkpoint_every must be an integer >= 0"),
                                            (1.5, "checkpoint_every must be an integer >= 0")])
def test_bad_checkpoint_every(value, message):
    problem = SinSinPoisson()
    model = KAN([2, 2, 1], grid_range=problem.domain.ranges)
    with pytest.raises(ValueError, match=message):
        train(problem, model, [Stage("lm", 1)], {"lm": LM}, Sampler("sobol", 16, 8), checkpoint_every=value)


def test_bad_checkpoint_seconds():
    problem = SinSinPoisson()
    model = KAN([2, 2, 1], grid_range=problem.domain.ranges)
    with pytest.raises(ValueError, match="checkpoint_seconds must be a number > 0 or None"):
        train(problem, model, [Stage("lm", 1)], {"lm": LM}, Sampler("sobol", 16, 8), checkpoint_seconds=0)


# ----------------------------------------------------------------------------------------- checkpoint files


def test_a_truncated_checkpoint_is_refused_with_a_message(tmp_path, float64_default):
    from kanpde.results import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, KAN([2, 2, 1]), status="running", step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is corrupt or truncated.*resume=null"):
        read_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        read_checkpoint(path)


class Payload:
    """An arbitrary object: unpickling it could run code."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model_spec": {}, "state_dict": {}, "meta": Payload()}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data.*never runs code"):
        read_checkpoint(path)
    assert "this would run on load" not in capsys.readouterr().out


def test_a_checkpoint_of_something_else_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="is not a kanpde checkpoint"):
        read_checkpoint(path)


def test_a_failing_checkpoint_write_costs_the_checkpoint_not_the_run(float64_default):
    def full_disk(model, step, state):
        raise OSError(28, "No space left on device")

    problem = SinSinPoisson()
    model = KAN([2, 2, 1], grid_size=3, grid_range=problem.domain.ranges)
    result = train(problem, model, [Stage("lm", 3, 3), Stage("lm", 2, 4)], {"lm": LM},
                   Sampler("sobol", 32, 16), checkpoint=full_disk, progress=False)
    assert result.status == "completed" and result.metrics["steps"] == 5
    assert len(result.metrics["checkpoint_errors"]) == 2 and "No space left" in result.metrics["checkpoint_errors"][0]
    assert "2 checkpoint write(s) failed" in result.message
    assert math.isfinite(result.metrics["final_loss"])


def test_a_periodic_checkpoint_resumes_exactly(float64_default):
    """A run killed outright (SIGKILL, out of memory) leaves only its last periodic checkpoint: resuming from it
    repeats the rest of the run."""
    saved = []
    stages, _ = SCHEDULES["lm"]
    problem = Stoppable()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0).to(torch.float64)
    points = evaluation_grid(problem.domain, 11)
    reference = train(problem, model, stages, {"lm": LM}, Sampler("sobol", n_interior=64, n_boundary=32, seed=0),
                      Evaluation(points, problem.exact(points)), eval_every=2, progress=False, checkpoint_every=4,
                      checkpoint=lambda model, step, state: saved.append((step, through_a_file(state))))
    assert [step for step, _ in saved] == [4, 6, 8, 12, 12]  # every 4 steps, and at each stage end
    step, state = saved[2]  # step 8: the second stage's second step
    assert (state["stage"], state["step_in_stage"]) == (1, 2)
    resumed, _ = run("lm", resume=state)
    assert without_time(resumed.history) == without_time(reference.history)
