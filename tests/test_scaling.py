"""Tests of kanpde.scaling and the scaling experiments: a tiny multirun sweep through the CLI, its
collation into runs.csv and scaling.png (also with missing and failed runs), rerun safety, and the power-law
fit against an exact rate.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kanpde import scaling

# 2 sizes x 2 families through the shared scaling experiment, a few steps on few points.
TINY_SWEEP = ["solve", "poisson", "+experiment=scaling_poisson", "model=kan,mlp", "model.hidden=[2],[3]", "seed=0",
              "schedule.stages.0.steps=2", "schedule.stages.1.steps=1", "schedule.stages.1.grid_size=5",
              "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11"]
SWEEP_DIR = ("results", "multirun", "scaling_poisson")


def compose_solve(overrides):
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        return compose(config_name="solve", overrides=overrides)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The tiny sweep's folder (made once; tests that damage it work on a copy)."""
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "kanpde", *TINY_SWEEP], cwd=root, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return root.joinpath(*SWEEP_DIR)


def test_tiny_sweep_collates_into_runs_csv_and_a_plot(sweep, tmp_path, capsys):
    runs = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("metrics.json"))
    assert len(runs) == 4 and {r.split("/")[0] for r in runs} == {"kan", "mlp"}, runs
    assert scaling.main([str(sweep), "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "runs.csv")
    assert list(rows[0]) == list(scaling.COLUMNS)
    assert sorted((r["family"], r["hidden"]) for r in rows) == [("kan", "[2]"), ("kan", "[3]"), ("mlp", "[2]"),
                                                                 ("mlp", "[3]")]
    for row in rows:
        assert row["status"] == "completed" and row["seed"] == "0" and row["steps"] == "3"
        assert int(row["parameters"]) > 0 and 0 < float(row["rel_l2"]) and 0 < float(row["mse"])
        assert (sweep / row["path"] / "metrics.json").is_file()
        assert row["grid_size"] == ("5" if row["family"] == "kan" else "")
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "4 runs: 4 finished" in out and "| kan | " in out and "| mlp | " in out


def test_collation_reports_missing_and_failed_runs(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    kan_runs = sorted(p.parent for p in (copy / "kan").rglob("metrics.json"))
    (kan_runs[0] / "metrics.json").unlink()  # missing: started (config written), never finished
    failed = kan_runs[1] / "metrics.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "diverged", "rel_l2": None}))
    assert scaling.main([str(copy)]) == 0
    rows = {r["path"]: r for r in read_rows(copy / "runs.csv")}
    assert len(rows) == 4
    gap_paths = {path.relative_to(copy).as_posix() for path in kan_runs}
    assert {rows[p]["status"] for p in gap_paths} == {"missing", "diverged"}
    out = capsys.readouterr().out
    assert "4 runs: 2 finished (0 stopped by train.max_time), 2 gaps." in out
    for path in gap_paths:
        assert path in out
    assert (copy / "scaling.png").is_file()  # the finished MLP runs are still drawn


def test_rerun_skips_finished_runs(sweep, tmp_path, cli):
    """Rerunning a sweep leaves finished runs alone (train.skip_if_done) and redoes the missing one."""
    root = tmp_path / "rerun"
    shutil.copytree(sweep.parents[2], root)
    folders = sorted(p.parent for p in (root.joinpath(*SWEEP_DIR)).rglob("metrics.json"))
    (folders[0] / "metrics.json").unlink()
    stamps = {f: (f / "metrics.json").stat().st_mtime_ns for f in folders[1:]}
    done = cli(TINY_SWEEP, root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folders[0] / "metrics.json").is_file()
    assert {f: (f / "metrics.json").stat().st_mtime_ns for f in folders[1:]} == stamps


def test_missing_or_empty_folder_is_a_usage_error(tmp_path, capsys):
    assert scaling.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().out
    assert scaling.main([str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().out


@pytest.mark.parametrize("rate", [-1.0, -2.5, -4.0])
def test_power_law_fit_recovers_the_exponent(rate):
    points = [scaling.Point("kan", f"[{n}]", 5, n, 2, {"rel_l2": 3.0 * n**rate, "mse": 0.5 * n ** (2 * rate)}, {}, {})
              for n in (10, 40, 160, 640)]
    slope, intercept, r = scaling.fit_power_law(points, "rel_l2")
    assert slope == pytest.approx(rate, abs=1e-12) and 10**intercept == pytest.approx(3.0) and r == pytest.approx(-1)
    assert scaling.fit_power_law(points, "mse")[0] == pytest.approx(2 * rate, abs=1e-12)
    assert all(math.isnan(v) for v in scaling.fit_power_law(points[:1], "rel_l2"))


def test_aggregate_takes_median_and_spread_over_seeds():
    def row(seed, rel_l2, status="completed"):
        return {"family": "mlp", "hidden": "[5,5]", "grid_size": "", "parameters": 51, "seed": seed,
                "rel_l2": rel_l2, "mse": rel_l2**2, "status": status}

    rows = [row(0, 1e-2), row(1, 4e-2), row(2, 2e-2, "time_limit"), row(3, 1e-9, "diverged"), row(4, math.nan)]
    (point,) = scaling.aggregate(rows)
    assert point.seeds == 3 and point.parameters == 51 and point.series == "MLP depth 2"
    assert (point.low["rel_l2"], point.median["rel_l2"], point.high["rel_l2"]) == (1e-2, 2e-2, 4e-2)


def test_scaling_experiments_share_the_budget_and_sweep_the_sizes():
    kan, mlp = (compose_solve([f"+experiment=scaling_poisson_{family}"]) for family in ("kan", "mlp"))
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        sweeps = {family: compose(config_name="solve", overrides=[f"+experiment=scaling_poisson_{family}"],
                                  return_hydra_config=True).hydra for family in ("kan", "mlp")}
    kan_plain, mlp_plain = (OmegaConf.to_container(cfg, resolve=True) for cfg in (kan, mlp))
    for key in ("problem", "sampler", "optim", "train", "eval", "seed", "precision", "threads"):
        assert kan_plain[key] == mlp_plain[key], key
    assert [s.steps for s in kan.schedule.stages] == [s.steps for s in mlp.schedule.stages]
    assert kan.model._target_.endswith("build_kan") and mlp.model._target_.endswith("build_mlp")
    assert kan.problem._target_.endswith("KANPaperPoisson") and kan.train.max_time > 0
    assert sweeps["kan"].sweep.dir == sweeps["mlp"].sweep.dir
    assert set(sweeps["kan"].sweeper.params) == {"seed", "model.hidden", "schedule.stages.1.grid_size"}
    assert set(sweeps["mlp"].sweeper.params) == {"seed", "model.hidden"}
