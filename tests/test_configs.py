"""Every config in configs/ composes and builds; every experiment builds and smoke-runs (principle 10).

Configs are read through Hydra's compose API from the installed package ``kanpde.configs`` (the same
files ``python -m kanpde`` uses), so a yaml missing from the package data fails here.
"""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kanpde.app import ConfigError, build, run
from kanpde.nn import KAN, MLP, count_parameters
from kanpde.optim import AbstractOptimizer, make_optimizer
from kanpde.problem import Problem
from kanpde.results import load_checkpoint
from kanpde.sampling import Sampler
from kanpde.training import Stage

CONFIG_DIR = Path(str(resources.files("kanpde.configs")))
GROUPS = ("problem", "model", "sampler", "schedule", "optim")
TINY = ["sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11", "train.plot=false"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_solve(overrides: list[str]):
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        return compose(config_name="solve", overrides=overrides)


def test_config_groups_are_shipped():
    assert (CONFIG_DIR / "solve.yaml").is_file()
    for group in GROUPS:
        assert options(group), f"no options shipped for config group {group}"
    assert {"poisson", "poisson_sinsin"} <= set(options("problem"))
    assert {"kan", "mlp"} <= set(options("model"))


def test_default_config_builds():
    cfg = compose_solve([])
    assert cfg.precision == "float64" and cfg.seed == 0
    setup = build(cfg, "poisson")
    assert setup.problem.name == "poisson"
    assert isinstance(setup.model, KAN) and setup.model.widths == [2, 10, 1]
    assert next(setup.model.parameters()).dtype == torch.float64
    assert [stage.grid_size for stage in setup.stages] == [5, 10, 20]
    assert setup.evaluation.points.shape == (101 * 101, 2)


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_builds(group, option):
    # mlp_large is too large for the default (LM) schedule: build refuses it, so it is built with L-BFGS here
    cfg = compose_solve([f"{group}={option}", *(["schedule=lbfgs"] if option == "mlp_large" else [])])
    setup = build(cfg, option if group == "problem" else None)
    problem, model = setup.problem, setup.model
    assert isinstance(problem, Problem)
    assert isinstance(model, (KAN, MLP))
    assert model.widths[0] == problem.domain.dim and model.widths[-1] == len(problem.outputs)
    assert next(model.parameters()).dtype == torch.float64
    assert setup.stages and all(isinstance(stage, Stage) for stage in setup.stages)
    assert isinstance(setup.sampler, Sampler)
    for stage in setup.stages:
        assert stage.optimizer in setup.optimizers, f"stage uses {stage.optimizer!r}, not in optim={sorted(setup.optimizers)}"
    for name, factory in setup.optimizers.items():
        try:
            optimizer = make_optimizer(factory, model)
        except ValueError as error:  # a dense Gauss-Newton solve refused for a large model, before any work
            assert "Gauss-Newton matrix" in str(error) and count_parameters(model) > 6000, (name, error)
            continue
        assert isinstance(optimizer, AbstractOptimizer)
    if setup.evaluation is not None:
        with torch.no_grad():
            assert model(setup.evaluation.points[:5]).shape == (5, len(problem.outputs))
        assert setup.evaluation.values.shape[1] == len(problem.outputs)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment):
    cfg = compose_solve([f"+experiment={experiment}"])
    setup = build(cfg, cfg.problem.get("_target_", "").rsplit(".", 1)[-1].lower())
    assert setup.stages and isinstance(setup.model, (KAN, MLP))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_smoke_runs(tmp_path, experiment):
    """The experiment's own schedule (grid sizes and optimizers), one step per stage, few points."""
    cfg = compose_solve([f"+experiment={experiment}"])
    steps = [f"schedule.stages.{i}.steps=1" for i in range(len(cfg.schedule.stages))]
    cfg = compose_solve([f"+experiment={experiment}", *steps, *TINY])
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "completed"
    assert metrics["steps"] == len(cfg.schedule.stages)
    assert math.isfinite(metrics["rel_l2"])  # every experiment has an exact solution: a NaN must fail


def test_kan_paper_experiment_matches_the_paper():
    cfg = compose_solve(["+experiment=kan_paper_poisson"])
    assert cfg.problem._target_ == "kanpde.problems.poisson.KANPaperPoisson"
    assert cfg.problem.residual_weight == 0.01
    assert cfg.sampler.n_interior == 10000 and cfg.sampler.n_boundary == 800
    assert list(cfg.model.hidden) == [10]
    assert [s.grid_size for s in cfg.schedule.stages] == [5, 10, 20]


# ------------------------------------------------------------------------------------ end to end


def test_tiny_run_writes_every_file(tmp_path, run_files, metric_keys):
    overrides = ["problem=poisson", "schedule.stages=[{optimizer:lbfgs,steps:2,grid_size:3},{optimizer:lbfgs,steps:1,grid_size:6}]",
                 "model.hidden=[3]", "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11",
                 "eval.every=1", "seed=7"]
    cfg = compose_solve(overrides)
    metrics = run(cfg, tmp_path, problem_name="poisson")

    names = {p.name for p in tmp_path.iterdir()}
    missing = set(run_files) - names
    assert not missing, f"run folder lacks {sorted(missing)}"
    for name in run_files:
        assert (tmp_path / name).stat().st_size > 0, f"{name} is empty"

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert set(metric_keys) <= set(on_disk), f"metrics.json lacks {sorted(set(metric_keys) - set(on_disk))}"
    assert on_disk["status"] == "completed" and on_disk["steps"] == 3
    assert on_disk["dtype"] == "float64" and on_disk["seed"] == 7 and on_disk["problem"] == "poisson"
    assert on_disk["grid_size"] == 6
    assert 0 < on_disk["rel_l2"] < 10 and on_disk["mse"] > 0 and on_disk["max_abs"] > 0
    assert on_disk["train_time"] <= on_disk["wall_time"]
    assert {"python", "torch", "platform"} <= set(on_disk["environment"])

    with open(tmp_path / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [0, 1, 2, 3]
    assert [int(row["grid_size"]) for row in rows] == [3, 3, 3, 6]
    assert {"loss", "rel_l2", "mse", "loss_pde", "loss_boundary"} <= set(rows[0])
    assert float(rows[-1]["rel_l2"]) == pytest.approx(on_disk["rel_l2"], rel=1e-12)

    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["meta"]["status"] == "completed" and payload["meta"]["step"] == 3
    model, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(model, KAN) and model.grid_size == 6 and model.widths == [2, 3, 1]
    assert count_parameters(model) == on_disk["parameters"]

    data = np.load(tmp_path / "prediction.npz")
    assert data["points"].shape == (121, 2) and data["predicted"].shape == (121, 1)
    with torch.no_grad():
        predicted = model(torch.from_numpy(data["points"])).numpy()
    np.testing.assert_allclose(predicted, data["predicted"], rtol=0, atol=1e-14)
    reference = np.sin(np.pi * data["points"][:, 0]) * np.sin(np.pi * data["points"][:, 1] ** 2)
    np.testing.assert_allclose(data["reference"][:, 0], reference, rtol=0, atol=1e-14)
    rel_l2 = np.linalg.norm(data["predicted"] - data["reference"]) / np.linalg.norm(data["reference"])
    assert rel_l2 == pytest.approx(on_disk["rel_l2"], rel=1e-10)

    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.seed == 7 and saved.model.seed == 7 and saved.sampler.seed == 7  # interpolations resolved
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(cfg, resolve=True)


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("override, message", [
    ("precision=float16", r"precision must be one of \['float32', 'float64'\], got 'float16'"),
    ("model.grid_size=0", r"grid_size must be an integer >= 1, got 0"),
    ("sampler.method=grid", r"unknown sampler method 'grid'"),
    ("device=tpu", r"device must be auto, cpu or cuda\[:N\], got 'tpu'"),
    ("problem.residual_weight=-1", r"residual_weight must be a finite number >= 0"),
    ("schedule.stages.0.steps=-1", r"stage steps must be an integer >= 0"),
    ("optim.adam._target_=os.system", r"optimizer 'adam' must have a _target_ starting with one of"),
    ("model._target_=builtins.eval", r"the model config must have a _target_ starting with one of"),
    ("problem._target_=kanpde.nn.KAN", r"problem _target_ 'kanpde.nn.KAN' is not a subclass of kanpde.Problem"),
    ("problem._target_=problems.nosuch.Thing", r"cannot import problem class 'problems.nosuch.Thing'"),
])
def test_bad_values_raise_config_error(override, message):
    cfg = compose_solve([override])
    with pytest.raises(ConfigError, match=message):
        build(cfg, "poisson")


def test_unknown_problem_option_is_a_hydra_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"nosuchproblem"):
        compose_solve(["problem=nosuchproblem"])


def test_a_model_too_large_for_the_default_schedule_is_refused_at_build_time():
    with pytest.raises(ConfigError, match=r"30,701 x 30,701 Gauss-Newton matrix .*schedule=lbfgs"):
        build(compose_solve(["model=mlp_large"]))
