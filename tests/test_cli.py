"""Tests of the command line (``python -m kanpde``) in fresh interpreters, each in its own folder.

Exit codes: 0 done, 1 a bug (with its traceback), 2 usage or configuration error, 3 diverged, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch


def test_solve_poisson_writes_a_run_folder(tmp_path, cli, tiny_overrides, find_runs, run_files, metric_keys):
    done = cli(["solve", "poisson", *tiny_overrides], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = find_runs(tmp_path)
    assert len(runs) == 1, list((tmp_path / "results").rglob("*"))
    folder = runs[0]
    assert folder.name.endswith("_kan_seed0")  # model and seed in the name: parallel runs never collide
    missing = [name for name in run_files if not (folder / name).is_file()]
    assert not missing, f"{folder} lacks {missing}"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metric_keys) <= set(metrics)
    assert metrics["status"] == "completed" and metrics["steps"] == 2 and metrics["problem"] == "poisson"
    assert metrics["dtype"] == "float64" and metrics["seed"] == 0
    payload = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert payload["meta"]["status"] == "completed"
    assert "sampler:\n" in (folder / "config.yaml").read_text()
    # nothing written outside the run folder (Hydra keeps its own records in .hydra/ inside it)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.parametrize("basis", ["chebyshev", "fourier", "rbf"])
def test_solve_with_another_basis_writes_a_checkpoint_that_loads(tmp_path, cli, tiny_overrides, find_runs, basis):
    from kanpde import load_checkpoint

    done = cli(["solve", "poisson", *tiny_overrides, f"model.basis={basis}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = find_runs(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    model = load_checkpoint(folder / "checkpoint.pt")
    model = model[0] if isinstance(model, tuple) else model
    assert model.basis == basis and all(layer.basis_name == basis for layer in model.layers)


def test_solve_mlp_model_override(tmp_path, cli, find_runs):
    done = cli(["solve", "poisson_sinsin", "model=mlp", "model.hidden=[4]",
                "schedule.stages=[{optimizer:lbfgs,steps:1,grid_size:null}]", "sampler.n_interior=32",
                "sampler.n_boundary=16", "eval.points_per_side=5", "train.plot=false"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = find_runs(tmp_path, "poisson_sinsin")
    assert folder.name.endswith("_mlp_seed0")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model"] == "mlp" and metrics["status"] == "completed"


def test_unknown_problem_exits_2_and_writes_nothing(tmp_path, cli):
    done = cli(["solve", "nosuchproblem"], tmp_path)
    assert done.returncode == 2
    assert "unknown problem 'nosuchproblem'" in done.stderr
    assert "poisson" in done.stderr and "poisson_sinsin" in done.stderr
    assert not (tmp_path / "results").exists()
    assert list(tmp_path.iterdir()) == []


def test_solve_without_a_problem_lists_the_problems(tmp_path, cli):
    done = cli(["solve"], tmp_path)
    assert done.returncode == 2
    assert "known problems:" in done.stderr and "poisson" in done.stderr
    assert not (tmp_path / "results").exists()


def test_list_prints_the_builtin_problems(tmp_path, cli):
    done = cli(["list"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "poisson" in lines and "poisson_sinsin" in lines
    assert "built-in" in lines["poisson"] and "sin(pi y^2)" in lines["poisson"]
    assert "cannot import" not in done.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("override, message", [
    ("model.grid_size=0", "grid_size must be an integer >= 1"),
    ("precision=float16", "precision must be one of ['float32', 'float64']"),
    ("model.grid_sise=3", "grid_sise"),
    ("model.basis=legendre", "unknown basis 'legendre'; choose one of bspline, chebyshev, fourier, rbf"),
    ("model.normalize=clamp", "unknown input normalisation 'clamp'; choose one of affine, tanh"),
])
def test_bad_override_exits_nonzero_with_a_message(tmp_path, cli, tiny_overrides, override, message):
    done = cli(["solve", "poisson", *tiny_overrides, override], tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert message in output, output[-3000:]
    assert "Traceback" not in output, "a configuration error must not end in a traceback"


def test_cfg_job_prints_the_config(tmp_path, cli):
    done = cli(["solve", "poisson", "--cfg", "job"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "_target_: kanpde.problems.poisson.KANPaperPoisson" in done.stdout
    assert "precision: float64" in done.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("order", ["flag_first", "flag_last"])
def test_hydra_flags_mix_with_overrides(tmp_path, cli, order):
    """`kanpde solve poisson --cfg job model.grid_size=7`: Hydra's flags may sit before or after overrides."""
    args = ["--cfg", "job", "model.grid_size=7"] if order == "flag_first" else ["model.grid_size=7", "--cfg", "job"]
    done = cli(["solve", "poisson", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grid_size: 7" in done.stdout


@pytest.mark.parametrize("args, expected", [
    (["solve", "--cfg", "job", "poisson"], "kanpde.problems.poisson.KANPaperPoisson"),  # a flag's value is no name
    (["solve", "+experiment=helmholtz", "--cfg", "job"], "kanpde.problems.helmholtz.Helmholtz"),  # it names one
    (["solve", "--cfg", "job", "+experiment=kan_paper_poisson"], "n_interior: 10000"),
])
def test_problem_name_is_read_past_flags_and_overrides(tmp_path, cli, args, expected):
    done = cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout


def test_multirun_right_after_the_problem(tmp_path, cli, tiny_overrides):
    """The documented sweep form `kanpde solve poisson -m seed=0,1 ...` runs one job per seed."""
    done = cli(["solve", "poisson", "-m", "seed=0,1", *tiny_overrides, "train.plot=false"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = sorted((tmp_path / "results" / "multirun").rglob("metrics.json"))
    assert len(metrics) == 2
    assert sorted(json.loads(p.read_text())["seed"] for p in metrics) == [0, 1]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_with_a_failed_job_exits_non_zero_and_names_it(tmp_path, cli, tiny_overrides, launcher):
    """One of two jobs diverges; launchers running jobs elsewhere (joblib) used to let the sweep exit 0."""
    extra = []
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
        extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]
    done = cli(["solve", "poisson", "-m", "optim.adam.lr=1e-3,1e12", *tiny_overrides, "train.plot=false",
                "schedule.stages=[{optimizer:adam,steps:20,grid_size:5}]", *extra], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "1 sweep job(s) did not finish" in output and "lr=1000000000000.0" in output
    assert ": diverged" in output
    assert len(sorted((tmp_path / "results" / "multirun").rglob("metrics.json"))) == 2


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_diverging_run_exits_3(tmp_path, cli, find_runs, precision):
    done = cli(["solve", "poisson", "optim.adam.lr=1e12", "schedule.stages=[{optimizer:adam,steps:20,grid_size:5}]",
                "model.hidden=[5]", "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11",
                "train.plot=false", f"precision={precision}"], tmp_path)
    (folder,) = find_runs(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert done.returncode == 3, (metrics["status"], done.stderr[-2000:])
    assert metrics["status"] == "diverged" and "learning rate" in metrics["message"]
    assert (folder / "checkpoint.pt").is_file()
    payload = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert payload["meta"]["status"] == "diverged"
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values())


@pytest.mark.parametrize("signum, code, message", [(signal.SIGINT, 130, "interrupted by the user (SIGINT)"),
                                                    (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_a_signal_saves_and_exits_128_plus_its_number(tmp_path, cli_env, find_runs, tiny_overrides, signum, code,
                                                      message):
    """SIGINT (Ctrl-C) or SIGTERM (SLURM, a closed terminal) during training: the run stops, saves metrics (status
    interrupted) and a resumable checkpoint of the last completed step, and exits 130 / 143. SIGTERM used to
    kill the process on the spot, leaving neither."""
    command = [sys.executable, "-m", "kanpde", "solve", "poisson", *tiny_overrides,
               "schedule.stages=[{optimizer:lbfgs,steps:100000,grid_size:5}]", "train.max_time=90"]
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 60
        # config.yaml is written by kanpde.app.run once everything is built, just before training starts
        while time.monotonic() < deadline and not any((f / "config.yaml").is_file() for f in find_runs(tmp_path)):
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.1)
        assert find_runs(tmp_path), "the run folder never appeared"
        time.sleep(3.5)  # well inside the training loop (setup and the first loss take ~1.5 s)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    (folder,) = find_runs(tmp_path)
    assert process.returncode == code, stderr[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == signal.Signals(signum).name
    assert message in metrics["message"]
    payload = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert payload["meta"]["status"] == "interrupted" and payload["meta"]["step"] == metrics["steps"]
    assert payload["resume"]["step"] in (metrics["steps"], metrics["steps"] - 1)  # resumable from there
    assert all(torch.isfinite(t).all() for t in payload["state_dict"].values())
    assert "Traceback" not in stderr


def test_a_model_too_large_for_levenberg_marquardt_is_refused_before_training(cli, tmp_path):
    done = cli(["solve", "poisson", "model=mlp_large", "train.plot=false"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    output = done.stdout + done.stderr  # Hydra's job logging goes to stdout
    assert "30,701 x 30,701 Gauss-Newton matrix" in output and "schedule=lbfgs" in output
    assert "Traceback" not in output
