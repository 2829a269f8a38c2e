"""Shared fixtures for the tests of kanpde's top-level modules (problem, derivatives, sampling, training,
results, configs and the CLI).

Nothing here is autouse (tests under ``tests/nn`` keep their own fixtures); helpers are handed out as
fixtures because ``tests/nn/conftest.py`` shadows a plain ``import conftest``. Budgets are tiny on purpose
(a shared 2-core machine); accuracy runs belong behind ``@pytest.mark.slow``.
"""

from __future__ import annotations

import csv
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# The CLI tests start fresh interpreters; one OpenMP thread keeps them fast on a shared machine.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                  "PYTHONWARNINGS": "ignore"}

# Hydra overrides that make `solve poisson` finish in a couple of seconds.
TINY_OVERRIDES = [
    "schedule.stages=[{optimizer:lbfgs,steps:2,grid_size:5}]",
    "sampler.n_interior=64",
    "sampler.n_boundary=32",
    "eval.points_per_side=11",
    "model.hidden=[3]",
]

RUN_FILES = ("metrics.json", "history.csv", "checkpoint.pt", "prediction.npz", "config.yaml",
             "prediction.png", "reference.png", "error.png", "history.png")

METRIC_KEYS = ("rel_l2", "mse", "max_abs", "parameters", "wall_time", "train_time", "steps", "dtype", "seed",
               "status", "environment")


def lbfgs_factory(max_iter: int = 5):
    """The L-BFGS factory of configs/optim/default.yaml, as ``f(parameters) -> optimizer``."""
    return functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=max_iter, history_size=50,
                             line_search_fn="strong_wolfe", tolerance_grad=1e-32, tolerance_change=1e-32)


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m kanpde ARGS`` in ``cwd``; returns the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "kanpde", *args], cwd=cwd, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=timeout)


def run_folders(root: Path, problem: str = "poisson") -> list[Path]:
    """Run folders the CLI wrote under ``root/results/runs/<problem>``."""
    base = root / "results" / "runs" / problem
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def check_reported_and_trained(folder: Path, metrics: dict) -> None:
    """A finished tiny run: its reported rel_l2 is the saved prediction's error against the reference, and
    training lowered the loss (a bound such as rel_l2 < 1 passed for a network that had not moved)."""
    prediction = np.load(folder / "prediction.npz")
    diff = prediction["predicted"] - prediction["reference"]
    assert metrics["rel_l2"] == pytest.approx(np.linalg.norm(diff) / np.linalg.norm(prediction["reference"]), rel=1e-10)
    with open(folder / "history.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.fixture
def reported_and_trained():
    """``reported_and_trained(folder, metrics)``: see :func:`check_reported_and_trained`."""
    return check_reported_and_trained


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Hydra overrides for a run of a couple of seconds (a fresh list per test)."""
    return list(TINY_OVERRIDES)


@pytest.fixture
def run_files() -> tuple[str, ...]:
    """Every file a finished run folder must hold."""
    return RUN_FILES


@pytest.fixture
def metric_keys() -> tuple[str, ...]:
    """Keys metrics.json must hold."""
    return METRIC_KEYS


@pytest.fixture
def lbfgs():
    """``lbfgs(max_iter=5)`` -> an L-BFGS factory as configs/optim/default.yaml builds it."""
    return lbfgs_factory


@pytest.fixture
def cli():
    """``cli(args, cwd)`` -> the finished ``python -m kanpde ARGS`` process."""
    return run_cli


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses started by hand (e.g. to send them signals)."""
    return dict(SUBPROCESS_ENV)


@pytest.fixture
def find_runs():
    """``find_runs(root, problem="poisson")`` -> run folders under ``root/results/runs/<problem>``."""
    return run_folders


@pytest.fixture
def float64_default():
    """torch's default dtype set to float64 for one test, restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch.float64
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def poisson():
    """The KAN paper's Poisson problem, imported the way an installed user would."""
    from kanpde.problems.poisson import KANPaperPoisson

    return KANPaperPoisson()
