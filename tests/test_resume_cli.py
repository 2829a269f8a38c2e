"""Resume end to end: ``python -m kanpde solve`` killed with SIGTERM in the middle of a stage, then rerun with
``resume=auto``, ends with the metrics of an uninterrupted run (one thread, float64); a sweep killed part-way
and rerun with the same command finishes only its missing jobs.

The problem is the KAN paper's Poisson problem with a pause in its residual (a user problem in the test's
folder): the numbers are Poisson's, and each step lasts long enough to be interrupted at a chosen step.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

SLOW_POISSON = textwrap.dedent('''\
    """The KAN paper's Poisson problem, 20 ms slower per residual evaluation (for interrupt tests)."""

    import time

    from kanpde.problems.poisson import KANPaperPoisson


    class SlowPoisson(KANPaperPoisson):
        def residual(self, x, d):
            time.sleep(0.02)
            return super().residual(x, d)
    ''')

SLOW_POISSON_YAML = "_target_: problems.slow_poisson.SlowPoisson\nresidual_weight: 0.01\nboundary_weight: 1.0\n"

BASE = ["threads=1", "precision=float64", "train.plot=false", "train.checkpoint_every=1", "sampler.n_interior=64",
        "sampler.n_boundary=32", "eval.points_per_side=11", "model.hidden=[3]"]
SCHEDULES = {  # the schedules' own stages and grids, fewer steps
    "lbfgs": ["schedule=lbfgs", "schedule.stages.0.steps=6", "schedule.stages.1.steps=6", "schedule.stages.2.steps=3"],
    "lm": ["schedule=default", "schedule.stages.0.steps=6", "schedule.stages.1.steps=6", "schedule.stages.2.steps=3",
           "optim.lm.ftol=0.0", "optim.lm.xtol=0.0"],  # no early convergence: the kill lands where it is aimed
}
METRICS = ("rel_l2", "mse", "max_abs", "final_loss", "steps", "loss_evaluations", "parameters", "grid_size",
           "n_interior_final")


def user_folder(root: Path) -> Path:
    (root / "problems").mkdir(parents=True)
    (root / "problems" / "slow_poisson.py").write_text(SLOW_POISSON)
    (root / "configs" / "problem").mkdir(parents=True)
    (root / "configs" / "problem" / "slow_poisson.yaml").write_text(SLOW_POISSON_YAML)
    return root


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["meta"]["step"])
    except Exception:  # noqa: BLE001 -- not written yet (the rename is atomic, but the file may not exist)
        return -1


def kill_when(command, cwd, env, pattern: str, step: int, timeout: float = 120):
    """Start ``command``; SIGTERM it once a checkpoint matching ``pattern`` under ``cwd`` reaches ``step``."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(checkpoint_step(p) >= step for p in cwd.glob(pattern)):
                break
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.005)
        else:
            raise AssertionError("no checkpoint reached the step to interrupt at")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


def history_rows(folder: Path) -> list[dict]:
    with open(folder / "history.csv") as handle:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]


def finished_runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "results" / "runs" / "slow_poisson").glob("*/metrics.json"))


@pytest.mark.slow  # five fresh interpreters: ~50 s on a loaded 2-core machine; tests/test_resume.py runs the
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))  # same resume path in process by default
def test_sigterm_mid_stage_then_resume_auto_equals_an_uninterrupted_run(tmp_path, cli, cli_env, schedule):
    args = ["solve", "slow_poisson", *BASE, *SCHEDULES[schedule]]
    reference_root, root = user_folder(tmp_path / "reference"), user_folder(tmp_path / "stopped")
    done = cli(args, reference_root)
    assert done.returncode == 0, done.stderr[-3000:]
    (reference,) = finished_runs(reference_root)

    code, stderr = kill_when([sys.executable, "-m", "kanpde", *args, "resume=auto"], root, cli_env,
                             "results/runs/slow_poisson/*/checkpoint.pt", step=8)  # stage 2 of 3, its 2nd step
    assert code == 143, stderr[-3000:]
    (folder,) = finished_runs(root)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM", metrics
    assert "stopped by SIGTERM" in metrics["message"] and "Traceback" not in stderr
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["resume"]
    assert state["stage"] == 1 and 0 < state["step_in_stage"] < 6, (state["stage"], state["step_in_stage"])

    done = cli([*args, "resume=auto"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {folder}" in done.stdout + done.stderr
    resumed = json.loads((folder / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_at_step"] == state["step"]
    for key in METRICS:
        assert resumed[key] == pytest.approx(expected[key], rel=1e-10, abs=0), key
    assert history_rows(folder) == history_rows(reference)

    # a finished run is reported, not retrained
    stamp = (folder / "metrics.json").stat().st_mtime_ns
    done = cli([*args, "resume=auto"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not retrained" in done.stdout + done.stderr
    assert (folder / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow  # ~35 s: three interpreters and four jobs
def test_a_sweep_killed_part_way_finishes_only_its_missing_jobs(tmp_path, cli, cli_env):
    """Basic launcher, three seeds: SIGTERM during the second job stops the sweep (143); the same command with
    resume=auto then leaves the first job alone, resumes the second and runs the third."""
    root = user_folder(tmp_path)
    args = ["solve", "slow_poisson", "-m", "seed=0,1,2", "hydra.sweep.dir=sweep",
            "hydra.sweep.subdir=${hydra.job.num}_seed${seed}", "resume=auto", *BASE, "schedule=lbfgs",
            "schedule.stages=[{optimizer:lbfgs,steps:6,grid_size:5}]"]
    code, stderr = kill_when([sys.executable, "-m", "kanpde", *args], root, cli_env, "sweep/1_*/checkpoint.pt", step=3)
    assert code == 143, stderr[-3000:]
    jobs = {int(p.name.split("_")[0]): p for p in (root / "sweep").iterdir() if p.is_dir()}
    assert sorted(jobs) == [0, 1], "the sweep went on after SIGTERM"
    statuses = {n: json.loads((jobs[n] / "metrics.json").read_text())["status"] for n in jobs}
    assert statuses == {0: "completed", 1: "interrupted"}
    first = (jobs[0] / "metrics.json").stat().st_mtime_ns

    done = cli(args, root)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = {int(p.name.split("_")[0]): p for p in (root / "sweep").iterdir() if p.is_dir()}
    metrics = {n: json.loads((jobs[n] / "metrics.json").read_text()) for n in jobs}
    assert sorted(metrics) == [0, 1, 2] and {m["status"] for m in metrics.values()} == {"completed"}
    assert (jobs[0] / "metrics.json").stat().st_mtime_ns == first  # reported, not retrained
    assert metrics[1]["resumed_at_step"] >= 3 and "resumed_at_step" not in metrics[2]
    assert metrics[1]["steps"] == metrics[2]["steps"] == 6
