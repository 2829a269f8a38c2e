"""kanpde.bases_study: collation of the basis study's runs into a table and a plot (training is not rerun here)."""

from __future__ import annotations

import csv
import json

import pytest

from kanpde import bases_study


def fake_run(root, problem, model, seed, rel_l2, status="completed"):
    folder = root / problem / f"{model}_seed{seed}"
    folder.mkdir(parents=True)
    kan = model != "mlp"
    order, basis = 5, ("bspline" if model == "mlp" else model)
    (folder / "config.yaml").write_text(f"model:\n  hidden: [10]\n  order: {order}\n  basis: {basis}\n" if kan
                                        else "model:\n  hidden: [20, 20, 20]\n")
    per_edge = {"bspline": 20 + 5, "chebyshev": 21, "fourier": 40, "rbf": 27}.get(model, 0) + 2
    metrics = {"status": status, "rel_l2": rel_l2, "mse": rel_l2**2, "parameters": 30 * per_edge if kan else 921,
               "grid_size": 20 if kan else None, "steps": 100, "train_time": 12.5, "wall_time": 20.0,
               "dtype": "float64", "seed": seed, "model": "kan" if kan else "mlp"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "load.json").write_text(json.dumps({"load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 1.5, 1.0]}))
    with (folder / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "grid_size", "time", "rel_l2"])
        grids = (5, 10, 20) if kan else ("", "", "")
        for step, (grid, t) in enumerate(zip(grids, (1.0, 5.0, 12.5))):
            writer.writerow([step, grid, t, rel_l2 * 10 ** (2 - step)])


def test_collate_writes_table_csv_json_and_plot(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "poisson", "chebyshev", 0, 1e-6)
    fake_run(runs, "poisson", "chebyshev", 1, 3e-6, status="time_limit")
    fake_run(runs, "poisson", "mlp", 0, 2e-4)
    rows, curves = bases_study.collate(runs, ["poisson"], ["chebyshev", "mlp"], [0, 1])
    by_key = {(r["model"], r["seed"]): r for r in rows}  # the study's model name, not metrics.json's family
    assert set(by_key) == {("chebyshev", 0), ("chebyshev", 1), ("mlp", 0), ("mlp", 1)}
    assert by_key[("mlp", 1)]["status"] == "missing"
    assert by_key[("chebyshev", 0)]["load_before"] == [1.0, 1.0, 1.0]
    # parameters at each grid follow the basis: Chebyshev degree G has G + 1 coefficients (+ 2 weights) per edge
    params, errors = zip(*sorted(curves[("poisson", "chebyshev", 0)]["params"]))
    assert params == (30 * 8, 30 * 13, 30 * 23) and errors == pytest.approx((1e-4, 1e-5, 1e-6), rel=1e-12)
    assert curves[("poisson", "mlp", 0)]["params"] == [(921, 2e-4)]
    summary = {s["model"]: s for s in bases_study.summary_rows(rows)}
    assert summary["chebyshev"]["rel_l2"] == pytest.approx(2e-6) and summary["chebyshev"]["time_limited"] == 1
    assert summary["mlp"]["runs"] == 1
    out = tmp_path / "out"
    bases_study.write(out, rows, curves, ["poisson"], ["chebyshev", "mlp"], "cmd")
    table = (out / "bases.md").read_text()
    assert "| poisson | chebyshev | 2 | 2.00e-06 | 3.00e-06 | 690 | 12.5 | 1 |" in table
    assert (out / "bases.png").stat().st_size > 10_000
    assert json.loads((out / "runs.json").read_text())["rows"][0]["dtype"] == "float64"


def test_collate_only_exits_non_zero_and_names_missing_runs(tmp_path, capsys):
    fake_run(tmp_path / "runs", "poisson", "rbf", 0, 1e-5)
    code = bases_study.main(["--collate-only", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                             "--problems", "poisson", "--models", "rbf", "--seeds", "0", "1"])
    assert code == 1 and "poisson/rbf_seed1" in capsys.readouterr().err


def test_unknown_model_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        bases_study.main(["--models", "legendre", "--collate-only"])
    assert "invalid choice: 'legendre'" in capsys.readouterr().err
