"""Tests of ``kanpde bench``: the quick configuration end to end, its files and fields, and the pieces.

The benchmark itself is not a timed test; these check that it runs, writes what it promises and
computes its ratios and thresholds correctly.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from kanpde.bench import run as bench
from kanpde.bench import accuracy as bench_accuracy, report as bench_report, step as bench_step


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "kanpde", "bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, done


def test_quick_bench_writes_json_and_markdown(quick_run):
    out, done = quick_run
    assert {"step_time.json", "step_time.md", "README.md"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "step_time.json").read_text())
    assert info["kind"] == "kanpde-bench-step-time" and info["quick"] is True
    machine = info["machine"]
    assert machine["torch"] == torch.__version__ and machine["threads"] == 1 and machine["cores"] >= 1
    assert info["unavailable"]["pykan"] == "excluded by --quick"
    step = info["step_time"]
    assert step["sizes"] == list(bench.QUICK_SIZES) and step["dtypes"] == ["float64"]
    variants = {v["id"] for v in step["variants"]}
    assert "kan[2,10,1]-g5/forward" in variants and "mlp[2,100,100,100,100,1]-tanh/autograd" in variants
    for record in step["measurements"]:
        assert record["status"] == "ok" and record["dtype"] == "float64"
        assert len(record["wall_s"]) == step["repeats"] and record["median_s"] > 0 and math.isfinite(record["loss"])
    assert {(r["variant"], r["n"]) for r in step["measurements"]} == {(v, n) for v in variants for n in step["sizes"]}


def test_quick_bench_losses_agree_across_derivative_engines(quick_run):
    out, _ = quick_run
    step = json.loads((out / "step_time.json").read_text())["step_time"]
    for n in step["sizes"]:
        losses = {r["variant"].split("/")[1]: r["loss"] for r in step["measurements"]
                  if r["n"] == n and r["variant"].startswith("kan[2,10,1]-g5/")}
        for mode in ("trainer", "autograd", "autograd-recursive"):
            assert losses[mode] == pytest.approx(losses["forward"], rel=1e-9), mode
    chunked = [r for r in step["measurements"] if r["variant"].endswith("/trainer-chunked")]
    assert chunked and all(r["chunk_gradient_rel_diff"] < 1e-10 for r in chunked if r["n"] > r["chunk"])


def test_quick_bench_ratios_memory_and_profile(quick_run):
    out, _ = quick_run
    step = json.loads((out / "step_time.json").read_text())["step_time"]
    names = {r["name"] for r in step["ratios"]}
    assert {"nested autograd / forward", "MLP nested autograd / KAN forward", "trainer / forward"} <= names
    assert all(r["wall"] > 0 and r["cpu"] > 0 for r in step["ratios"])
    memory = step["memory"]
    assert memory and all(m["status"] == "ok" and m["step_mb"] >= 0 and m["peak_mb"] > 0 for m in memory)
    assert step["profiles"] and step["profiles"][0]["top"][0]["self_ms_per_step"] > 0
    markdown = (out / "step_time.md").read_text()
    for text in ("## Targets (issue 7)", "median step time (ms)", "memory of one step", "## Profile", "torch 2."):
        assert text in markdown
    assert "## Targets (issue 7)" in (out / "README.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats must be positive"),
    (["--sizes", "0"], "--sizes must be positive"),
    (["--dtypes", "float16"], "invalid choice"),
    (["--tta-methods", "jax"], "invalid choice"),
])
def test_bad_arguments_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        bench.parse_args(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def test_filter_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="matches no variant"):
        bench.main(["--quick", "--filter", "no-such-variant", "--no-memory", "--out", str(tmp_path)])


def test_step_ratios_are_ratios_of_medians():
    def record(variant, seconds):
        return {"variant": variant, "dtype": "float64", "n": 100, "status": "ok", "median_s": seconds,
                "median_cpu_s": seconds / 2}

    kan = "kan[2,10,1]-g20"
    measurements = [record(f"{kan}/forward", 0.1), record(f"{kan}/pykan", 2.0), record(f"{kan}/trainer", 0.15),
                    record(f"{bench_report.MLP_MODEL}/autograd", 0.6)]
    ratios = {r["name"]: r for r in bench_report.step_ratios(measurements) if r["model"] == kan}
    assert ratios["pykan / kanpde forward"]["wall"] == pytest.approx(20.0)
    assert ratios["MLP nested autograd / KAN forward"]["cpu"] == pytest.approx(6.0)
    assert ratios["pykan / kanpde trainer"]["wall"] == pytest.approx(2.0 / 0.15)
    step = {"sizes": [100], "ratios": bench_report.step_ratios(measurements), "variants": []}
    rows = bench_report.targets(step, None)
    assert rows[0]["value"] == pytest.approx(20.0) and rows[0]["met"] is True and rows[0]["n"] == 100


def test_summarize_reports_thresholds_and_not_reached():
    curve = [[0.0, 1, 1.0], [1.0, 10, 5e-3], [2.0, 20, 2e-4], [3.0, 30, 1.5e-4]]
    summary = bench_accuracy.summarize("kanpde-kan", "poisson_sinsin", {"status": "completed", "curve": curve}, 60.0)
    assert summary["reached"]["1e-02"] == {"time_s": 1.0, "evaluations": 10}
    assert summary["reached"]["1e-03"] == {"time_s": 2.0, "evaluations": 20}
    assert summary["reached"]["1e-04"] is None and summary["reached"]["1e-05"] is None
    assert summary["final_rel_l2"] == 1.5e-4 and summary["best_rel_l2"] == 1.5e-4 and summary["train_time_s"] == 3.0


def test_deepxde_comparison_uses_deepxde_final_error():
    deepxde = {"final_rel_l2": 3e-4, "train_time_s": 45.0}
    kan = {"curve": [[0.0, 1, 1.0], [5.0, 50, 4e-4], [9.0, 90, 2e-4]], "best_rel_l2": 2e-4, "train_time_s": 9.0}
    result = bench.deepxde_comparison(deepxde, kan)
    assert result["kanpde_kan_s"] == 9.0 and result["speedup"] == pytest.approx(5.0) and result["met"] is True
    slow = bench.deepxde_comparison(deepxde, {**kan, "curve": kan["curve"][:2], "best_rel_l2": 4e-4})
    assert slow["met"] is False and slow["speedup"] is None and "did not reach" in slow["text"]


def test_shared_points_match_the_tutorial_setup():
    points = bench_accuracy.shared_points(bench_accuracy.make_problem("poisson_sinsin"))
    assert points["interior"].shape == (441, 2) and points["interior"].abs().max() < 1
    assert points["boundary"].shape == (84, 2) and torch.all(points["boundary"].abs().amax(dim=1) == 1)
    assert points["test"].shape == (101**2, 2) and points["exact"].shape == (101**2,)
    with pytest.raises(ValueError, match="choose from"):
        bench_accuracy.make_problem("burgers")


def test_kanpde_time_to_accuracy_run_records_a_curve():
    run = bench_accuracy.run_kanpde("poisson_sinsin", "kanpde-kan", cap=0.5)
    summary = bench_accuracy.summarize("kanpde-kan", "poisson_sinsin", run, 0.5)
    assert summary["status"] == "time_limit" and summary["loss_evaluations"] >= 1
    times = [point[0] for point in summary["curve"]]
    assert times == sorted(times) and summary["final_rel_l2"] < 1.5


def test_memory_probe_skips_sizes_over_the_limit(monkeypatch):
    """A step of 2 MB at 200 points extrapolates to 4 MB at 400, over a 1 MB limit: 400 and 800 are skipped.
    The resident-set readings are fixed here: a real step may fit in memory already resident (0 MB), from which
    nothing extrapolates, and the test used to pass without checking anything then."""
    readings = {"VmRSS": 1000, "VmHWM": 1000 + 2048}  # KiB: 2 MB above the baseline
    monkeypatch.setattr(bench_step, "_status_kib", lambda field: readings[field])
    monkeypatch.setattr(bench_step, "_reset_high_water_mark", lambda: True)
    variant = bench_step.Variant("kan", (2, 3, 1), 5, "forward")
    result = bench_step.probe_memory(variant, torch.float64, [200, 400, 800], chunk=100, max_gb=1 / 1024,
                                     max_seconds=60)
    first, second, third = result["rows"]
    assert first["status"] == "ok" and first["step_mb"] == 2.0
    assert second["status"] == "skipped" and second["estimated_mb"] == 4.0 and "--max-step-gb" in second["note"]
    assert third["status"] == "skipped"


def test_memory_probe_skips_sizes_over_the_time_limit():
    variant = bench_step.Variant("kan", (2, 3, 1), 5, "forward")
    result = bench_step.probe_memory(variant, torch.float64, [200, 400], chunk=100, max_gb=1e6, max_seconds=0.0)
    first, second = result["rows"]
    assert first["status"] == "ok" and first["seconds"] >= 0
    assert second["status"] == "skipped" and "--max-step-seconds" in second["note"]


def test_the_accuracy_report_survives_a_failed_run(tmp_path):
    """A peer's subprocess that failed leaves no final error: the report shows a dash (it raised on
    f"{None:.2e}"), and the JSON is written before the Markdown is formatted."""
    failed = {"method": "deepxde-mlp", "problem": "poisson_sinsin", "status": None, "reached": {"1e-02": None},
              "final_rel_l2": None, "best_rel_l2": None, "train_time_s": None, "loss_evaluations": None,
              "recipe": "DeepXDE"}
    good = {**bench_accuracy.summarize("kanpde-kan", "poisson_sinsin",
                                       {"status": "completed", "curve": [[0.0, 1, 1.0], [1.0, 9, 5e-3]]}, 60.0)}
    info = {"time_to_accuracy": {"setup": "setup", "cap_s": 60.0, "thresholds": [1e-2], "problems": ["poisson_sinsin"],
                                 "runs": [good, failed]},
            "created": "now", "machine": bench_report.machine_info(1)}
    text = bench_report.accuracy_markdown(info, "kanpde bench")
    failed_row = next(line for line in text.splitlines() if line.startswith("| deepxde-mlp"))
    assert "| — | — | — | — | failed |" in failed_row
    assert "| 5.00e-03 | 5.00e-03 | 1.0 s | 9 |" in text

    def broken():
        raise KeyError("a formatting bug")

    with pytest.raises(KeyError):
        bench.write(tmp_path, "time_to_accuracy", info, broken)
    assert json.loads((tmp_path / "time_to_accuracy.json").read_text())["time_to_accuracy"]["cap_s"] == 60.0


def test_lm_iteration_cost_reports_its_parts():
    from kanpde.bench import lm as bench_lm

    result = bench_lm.iteration_cost(200, 40, "kan", (3,), 5, warmup=1, repeats=2)
    parts = result["ms"]
    assert result["parameters"] == 9 * (5 + 5 + 2) and result["n_points"] == 240
    assert set(parts) == {"iteration", "jacobian rows (backward + rows)", "J^T J (blockwise)",
                          "trial loss (forward kept for the next Jacobian)", "solve (Cholesky) and rest"}
    assert all(value > 0 for value in parts.values())
    table = bench_lm.markdown([result], {"command": "test", "torch": "x", "threads": 1, "machine": "m"})
    assert "| 240 | KAN [2, 3, 1] grid 5 order 5 | 108 |" in table


def test_basis_variants_have_their_own_rows_and_agree_across_engines(tmp_path):
    variants = [v for v in bench_step.default_variants() if v.basis != "bspline"]
    assert {v.basis for v in variants} == {"chebyshev", "fourier", "rbf"}
    assert {v.model_id for v in variants} == {f"kan[2,10,1]-g20-{b}" for b in ("chebyshev", "fourier", "rbf")}
    assert bench_step.Variant.from_dict({"family": "kan", "widths": [2, 3, 1], "grid_size": 5, "mode": "forward",
                                         "basis": "rbf"}).model_label == "KAN [2,3,1] G=5 rbf"
    small = [bench_step.Variant("kan", (2, 3, 1), 5, mode, "chebyshev") for mode in ("forward", "trainer", "autograd")]
    results = bench_step.time_group(small, torch.float64, 200, repeats=1, warmup=1, chunk=100,
                                    checkpoint_dir=str(tmp_path))
    losses = [results[v.id]["loss"] for v in small]
    assert losses[1] == pytest.approx(losses[0], rel=1e-12) and losses[2] == pytest.approx(losses[0], rel=1e-10)
    assert results[small[0].id]["parameters"] == 9 * (6 + 2)  # 9 edges, degree 5: 6 coefficients, w_base, w_spline


def test_lm_iteration_cost_of_a_global_basis(tmp_path):
    from kanpde.bench import lm as bench_lm

    result = bench_lm.iteration_cost(200, 40, "kan", (3,), 5, warmup=1, repeats=2, basis="chebyshev")
    assert result["basis"] == "chebyshev" and result["parameters"] == 9 * (6 + 2)
    assert result["ms"]["iteration"] > 0
    assert "KAN [2, 3, 1] grid 5 chebyshev" in bench_lm.markdown(
        [result], {"command": "c", "torch": "t", "threads": 1, "machine": "m"})
