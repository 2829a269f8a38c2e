"""Tests of ``kanpde compare``: a KAN and an MLP on the same points and budget, the table files and plot,
and the refusal of comparisons that would not be fair.
"""

from __future__ import annotations

import csv

import pytest
from omegaconf import OmegaConf

from kanpde import compare

TINY = ["schedule.stages=[{optimizer:lbfgs,steps:3,grid_size:5},{optimizer:lbfgs,steps:2,grid_size:10}]",
        "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11", "eval.every=1",
        "train.plot=false", "threads=1"]


def test_compare_writes_the_table_and_overlay(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compare.main(["poisson", *TINY, "--kan", "model.hidden=[3]", "--mlp", "model.hidden=[8,8]"]) == 0
    stdout = capsys.readouterr().out
    (out,) = (tmp_path / "results" / "compare" / "poisson").iterdir()
    for name in ("compare.csv", "compare.md", "compare.png", "kan/metrics.json", "mlp/metrics.json",
                 "kan/history.csv", "mlp/history.csv"):
        assert (out / name).is_file(), name
    with open(out / "compare.csv", newline="") as handle:
        rows = {row["family"]: row for row in csv.DictReader(handle)}
    assert rows["kan"]["widths"] == "[2,3,1]" and rows["mlp"]["widths"] == "[2,8,8,1]"
    assert rows["kan"]["grid_size"] == "10" and rows["mlp"]["grid_size"] == ""
    for row in rows.values():
        assert row["status"] == "completed" and row["steps"] == "5"
        assert int(row["parameters"]) > 0 and int(row["loss_evaluations"]) >= 5
        assert float(row["rel_l2"]) > 0 and float(row["mse"]) > 0
        assert float(row["time_per_step"]) == pytest.approx(float(row["train_time"]) / 5)
    # same collocation points: identical problem, sampler and seed in both resolved configs
    kan, mlp = (OmegaConf.load(out / family / "config.yaml") for family in ("kan", "mlp"))
    assert kan.sampler == mlp.sampler and kan.problem == mlp.problem and kan.seed == mlp.seed
    assert "| kan | [2,3,1] |" in stdout and "| mlp | [2,8,8,1] |" in stdout
    assert "time/step" in (out / "compare.md").read_text()


def test_check_same_budget_names_what_differs():
    configs = compare.compose_pair("poisson", ["train.max_time=5"], {"mlp": ["model.seed=3"]})
    with pytest.raises(compare.UnfairComparison, match="model.seed"):
        compare.check_same_budget(configs)
    configs["mlp"].train.max_time = 7
    with pytest.raises(compare.UnfairComparison, match="train"):
        compare.check_same_budget(configs)
    compare.check_same_budget(compare.compose_pair("poisson", ["seed=4"], {"kan": ["model.hidden=[4]"]}))


@pytest.mark.parametrize("argv, message", [
    (["nosuchproblem"], "unknown problem 'nosuchproblem'"),
    (["poisson", "model=mlp"], "set by compare itself"),
    (["poisson", "--mlp", "train.max_time=3"], "takes model overrides only"),
    (["poisson", "model.no_such_key=1"], "invalid configuration"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert compare.main(argv) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "results").exists()
