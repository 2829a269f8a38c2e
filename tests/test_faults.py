"""The fault table (README, "When things go wrong"): each row's fault, what the user sees, what is kept.

Defects found in review, each with a test that fails on the code before the fix: mixed derivatives read as
0 under no_grad (history losses, adaptive sampling through the public ``train()``), a failed checkpoint write
ending the run, library bugs reported as configuration errors.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hydra import compose, initialize_config_module

from kanpde.nn import KAN
from kanpde.objective import loss_terms, residual_magnitude
from kanpde.optim import LevenbergMarquardt
from kanpde.problems.poisson import SinSinPoisson
from kanpde.sampling import Sampler
from kanpde.training import Stage, collocation, train


class MixedPoisson(SinSinPoisson):
    """pykan's Poisson problem plus a mixed derivative in the residual (read by autograd, not the jet)."""

    def residual(self, x, d):
        return super().residual(x, d) + 10.0 * d["u_xy"]


def compose_solve(overrides):
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        return compose(config_name="solve", overrides=overrides)


def test_history_losses_read_mixed_derivatives_without_input_grad(float64_default):
    """train() called as a library user would (no input_grad): the recorded loss is the true loss. It used to
    be computed under no_grad, where u_xy came back as 0."""
    problem = MixedPoisson()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0)
    initial = copy.deepcopy(model)
    result = train(problem, model, [Stage("lm", 1)], {"lm": LevenbergMarquardt}, Sampler("sobol", 64, 32, seed=0),
                   progress=False, grid_update=None)
    points = {k: v.requires_grad_(True) for k, v in collocation(problem, Sampler("sobol", 64, 32, seed=0)).items()}
    expected = sum(float(v.detach()) for v in loss_terms(problem, initial, points).values())
    without_mixed = sum(float(v.detach()) for v in loss_terms(SinSinPoisson(), initial, points).values())
    assert abs(expected - without_mixed) > 1e-3 * expected  # u_xy matters here (measured: 0.9868 against 0.9815)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-12)


def test_residual_magnitude_reads_mixed_derivatives_without_a_graph(float64_default):
    """Residual-based adaptive sampling asks for magnitudes without a graph; u_xy must not be 0 there."""
    problem = MixedPoisson()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0)
    x = collocation(problem, Sampler("sobol", 64, 32, seed=0))["interior"]
    fast = residual_magnitude(problem, model, x, needs_graph=False)
    exact = residual_magnitude(problem, model, x, needs_graph=True)
    torch.testing.assert_close(fast, exact, rtol=1e-12, atol=0)


def test_a_failed_final_checkpoint_still_writes_metrics(tmp_path, monkeypatch):
    """A full disk or a read-only checkpoint: metrics.json is written and names the failure."""
    from kanpde import app, results

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "save_checkpoint", full_disk)
    monkeypatch.setattr(app, "save_checkpoint", full_disk)
    cfg = compose_solve(["problem=poisson_sinsin", "schedule.stages=[{optimizer:lm,steps:2,grid_size:3}]",
                         "sampler.n_interior=32", "sampler.n_boundary=16", "eval.points_per_side=5",
                         "model.hidden=[2]", "train.plot=false", "train.progress=false"])
    metrics = app.run(cfg, tmp_path / "run", "poisson_sinsin")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == written["status"] == "completed"
    assert any("No space left" in e for e in written["checkpoint_errors"])
    assert "checkpoint.pt" not in written["files"]


def test_a_bug_inside_kanpde_is_not_reported_as_a_config_error(monkeypatch):
    """An IndexError while building the model is a bug: it propagates (traceback, exit 1), not ConfigError."""
    import kanpde.nn
    from kanpde import app

    def broken(*args, **kwargs):
        raise IndexError("list index out of range (a bug)")

    monkeypatch.setattr(kanpde.nn, "build_kan", broken)  # the model config's _target_
    cfg = compose_solve(["problem=poisson_sinsin", "model.hidden=[2]"])
    with pytest.raises(IndexError, match="a bug"):
        app.build(cfg, "poisson_sinsin")


def test_a_bad_setting_is_still_a_config_error():
    from kanpde import app

    cfg = compose_solve(["problem=poisson_sinsin", "model.grid_size=0"])
    with pytest.raises(app.ConfigError, match="grid_size must be an integer >= 1"):
        app.build(cfg, "poisson_sinsin")


# ------------------------------------------------------------------------------------- the test grid


@pytest.mark.parametrize("dim, side", [(1, 10201), (2, 101), (3, 21), (4, 10)])
def test_the_test_grid_is_a_total_point_budget(dim, side):
    from kanpde.sampling import grid_side

    assert grid_side(10201, dim) == side  # 2-D keeps its 101 x 101 grid; 3-D gets 9,261 points, not 101^3


def test_a_3d_problem_gets_a_grid_sized_by_dimension():
    from kanpde.app import make_evaluation
    from kanpde.problems.poisson3d import Poisson3D

    evaluation = make_evaluation(Poisson3D())
    assert evaluation.points.shape == (21**3, 3)
    assert make_evaluation(Poisson3D(), points_per_side=5).points.shape == (125, 3)  # per side, when asked


@pytest.mark.parametrize("n_points", [1, 0, 2.5, True])
def test_bad_test_grid_budget(n_points):
    from kanpde.sampling import grid_side

    with pytest.raises(ValueError, match=r"eval.n_points must be an integer >= 2"):
        grid_side(n_points, 2)


@pytest.mark.parametrize("side", [1, 0, 2.5])
def test_bad_points_per_side(side):
    from kanpde.app import make_evaluation

    with pytest.raises(ValueError, match=r"eval.points_per_side must be an integer >= 2 or null"):
        make_evaluation(SinSinPoisson(), points_per_side=side)


# ------------------------------------------------------------------------------------- settings schema


@pytest.mark.parametrize("override, message", [
    ("+train.max_tme=5", r"setting train.max_tme: no such key in train; known: \['max_time'"),
    ("train.max_time=abc", r"setting train.max_time: Value 'abc' of type 'str' could not be converted to Float"),
    ("seed=1.5", r"setting seed: Value '1.5' of type 'float' could not be converted to Integer"),
    ("train.plot=maybe", r"setting train.plot: Value 'maybe' is not a valid bool"),
    ("+eval.n_point=3", r"setting eval.n_point: no such key in eval; known: \['n_points'"),
    ("+colour=red", r"unknown setting 'colour'; the settings are \["),
    ("train.checkpoint_every=-1", r"setting train.checkpoint_every must be >= 0 \(steps between checkpoints"),
    ("train.checkpoint_seconds=0", r"setting train.checkpoint_seconds must be > 0"),
    ("eval.every=0", r"setting eval.every must be >= 1"),
    ("resume=5", r"resume=5: no run folder there"),
])
def test_unknown_keys_and_wrong_types_name_the_key(override, message, tmp_path):
    from kanpde import app

    cfg = compose_solve(["problem=poisson_sinsin", override])
    with pytest.raises(app.ConfigError, match=message):
        app.run(cfg, tmp_path / "run", "poisson_sinsin")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_every_shipped_config_meets_the_schema():
    from kanpde.settings import check_settings

    for experiment in ("helmholtz", "kan_paper_poisson", "scaling_poisson_kan", "scaling_poisson_mlp"):
        check_settings(compose_solve([f"+experiment={experiment}"]))
    check_settings(compose_solve(["grid_update=null", "resume=auto", "train.max_time=5", "threads=1"]))


# ------------------------------------------------------------------------------------- spline order


def test_a_spline_order_too_low_for_the_residual_is_refused():
    """Linear splines have no second derivative: `solve poisson model.order=1` trained to rel_l2 1.17."""
    from kanpde import app

    cfg = compose_solve(["problem=poisson", "model.order=1"])
    with pytest.raises(app.ConfigError, match=r"model.order=1: B-splines of order 1 have no derivative of order 2"
                                               r".*use model.order >= 2"):
        app.build(cfg, "poisson")
    assert app.build(compose_solve(["problem=poisson", "model.order=2", "model.hidden=[2]"]), "poisson")


def test_the_validation_report_knows_the_derivative_order():
    from kanpde.validation import validate

    problem = MixedPoisson()
    model = KAN([2, 2, 1], grid_range=problem.domain.ranges).to(torch.float64)
    assert validate(problem, model).derivative_order == 2


# ------------------------------------------------------------------------------------- run folders


def test_two_processes_never_share_a_run_folder(tmp_path):
    """A folder another live process trains in is refused; a lock left by a killed process is taken over."""
    import subprocess
    import sys

    from kanpde.resume import FolderInUse, folder_lock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run.lock").write_text(str(other.pid))
        with pytest.raises(FolderInUse, match=rf"in use by another kanpde process \(pid {other.pid}\)"):
            with folder_lock(tmp_path):
                pass
    finally:
        other.kill()
        other.wait()
    with folder_lock(tmp_path):  # its process is gone: a stale lock
        assert (tmp_path / "run.lock").read_text() == str(__import__("os").getpid())
    assert not (tmp_path / "run.lock").exists()


def test_resume_of_a_folder_in_use_is_a_config_error(tmp_path):
    import subprocess
    import sys

    from kanpde import app

    cfg = compose_solve(["problem=poisson_sinsin", "schedule.stages=[{optimizer:lm,steps:1,grid_size:3}]",
                         "sampler.n_interior=16", "sampler.n_boundary=8", "eval.points_per_side=5",
                         "model.hidden=[2]", "train.plot=false", "train.progress=false"])
    folder = tmp_path / "run"
    app.run(cfg, folder, "poisson_sinsin")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["status"] = "interrupted"  # as if stopped: resumable
    (folder / "metrics.json").write_text(json.dumps(metrics))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (folder / "run.lock").write_text(str(other.pid))
        cfg.resume = str(folder)
        with pytest.raises(app.ConfigError, match="in use by another kanpde process"):
            app.run(cfg, tmp_path / "new", "poisson_sinsin")
    finally:
        other.kill()
        other.wait()


def test_resume_names_the_keys_that_differ(tmp_path):
    from kanpde import app

    base = ["problem=poisson_sinsin", "schedule.stages=[{optimizer:lm,steps:1,grid_size:3}]", "sampler.n_interior=16",
            "sampler.n_boundary=8", "eval.points_per_side=5", "model.hidden=[2]", "train.plot=false",
            "train.progress=false"]
    folder = tmp_path / "run"
    app.run(compose_solve(base), folder, "poisson_sinsin")
    changed = compose_solve([*base, f"resume={folder}", "model.grid_size=4", "seed=3", "train.max_time=9"])
    with pytest.raises(app.ConfigError, match=r"that run had other settings.*\(model.grid_size: 5 -> 4; "
                                               r"model.seed: 0 -> 3; sampler.seed: 0 -> 3; seed: 0 -> 3\)"):
        app.run(changed, tmp_path / "new", "poisson_sinsin")
    with pytest.raises(app.ConfigError, match=r"resume=.*nowhere: no run folder there"):
        app.run(compose_solve([*base, f"resume={tmp_path / 'nowhere'}"]), tmp_path / "new", "poisson_sinsin")
    # the same settings (a new time budget is allowed): a finished run is reported, not retrained
    stamp = (folder / "metrics.json").stat().st_mtime_ns
    again = app.run(compose_solve([*base, f"resume={folder}", "train.max_time=9"]), tmp_path / "new", "poisson_sinsin")
    assert again["status"] == "completed" and (folder / "metrics.json").stat().st_mtime_ns == stamp


def test_resume_auto_without_an_earlier_run_starts_afresh(tmp_path):
    from kanpde import app

    cfg = compose_solve(["problem=poisson_sinsin", "schedule.stages=[{optimizer:lm,steps:1,grid_size:3}]",
                         "sampler.n_interior=16", "sampler.n_boundary=8", "eval.points_per_side=5",
                         "model.hidden=[2]", "train.plot=false", "train.progress=false", "resume=auto"])
    metrics = app.run(cfg, tmp_path / "runs" / "first", "poisson_sinsin")
    assert metrics["status"] == "completed" and "resumed_at_step" not in metrics


# ------------------------------------------------------------------------------------- the command line


def test_output_piped_into_head_ends_quietly(tmp_path, cli_env):
    """`kanpde list | head -3`: the reader goes away before kanpde has written; no BrokenPipeError traceback."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "kanpde", "list"], cwd=tmp_path, env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # like head after its lines: nobody reads what follows
    stderr = process.stderr.read()
    process.wait(timeout=120)
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert process.returncode == 0


def test_collocation_points_outside_the_spline_grid_are_reported(caplog, float64_default):
    """A KAN on the default grid [-1, 1]^2 for a problem on [0, 2]^2: three quarters of the points see no spline."""
    from kanpde.problem import Box

    class Shifted(SinSinPoisson):
        def __init__(self):
            super().__init__()
            self.domain = Box(self.variables, (0.0, 0.0), (2.0, 2.0))

    problem = Shifted()
    with caplog.at_level("WARNING", logger="kanpde"):
        train(problem, KAN([2, 2, 1]), [Stage("lm", 0)], {"lm": LevenbergMarquardt}, Sampler("sobol", 64, 32),
              progress=False)
    (message,) = [r.getMessage() for r in caplog.records if "outside the KAN's input grid" in r.getMessage()]
    assert "grid_range=problem.domain.ranges" in message and "(-1.0, 1.0)" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="kanpde"):
        train(problem, KAN([2, 2, 1], grid_range=problem.domain.ranges), [Stage("lm", 0)], {"lm": LevenbergMarquardt},
              Sampler("sobol", 64, 32), progress=False)
    assert not [r for r in caplog.records if "outside" in r.getMessage()]


def test_cuda_without_a_gpu_is_a_config_error(monkeypatch):
    from kanpde import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(app.ConfigError, match="device=cuda was asked for but torch sees no CUDA device; use device="):
        app.build(compose_solve(["problem=poisson_sinsin", "device=cuda"]), "poisson_sinsin")
    assert app.build(compose_solve(["problem=poisson_sinsin", "device=auto", "model.hidden=[2]"]),
                     "poisson_sinsin").device.type == "cpu"


def test_a_bug_in_the_users_problem_exits_1_with_its_traceback(tmp_path, cli):
    """The old broad `except Exception` reported it as "invalid problem settings", exit 2, no traceback."""
    (tmp_path / "problems").mkdir()
    (tmp_path / "problems" / "buggy.py").write_text(
        "from kanpde.problems.poisson import SinSinPoisson\n\n\n"
        "class Buggy(SinSinPoisson):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.scale = [1.0][3]\n")
    (tmp_path / "configs" / "problem").mkdir(parents=True)
    (tmp_path / "configs" / "problem" / "buggy.yaml").write_text("_target_: problems.buggy.Buggy\n")
    done = cli(["solve", "buggy", "train.plot=false"], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "self.scale = [1.0][3]" in output and "IndexError: list index out of range" in output
    assert "invalid configuration" not in output  # what the CLI prints for a ConfigError
