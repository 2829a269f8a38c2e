"""A problem config picks its own defaults for the other groups: ``configs/problem/helmholtz.yaml`` chooses
the quintic KAN (``model/kan_quintic``) and its schedule (``schedule/helmholtz``), the command line still
wins, other problems keep the global defaults, and ``solve helmholtz`` runs end to end.

Configs are composed from the installed package ``kanpde.configs``, as ``python -m kanpde`` does.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kanpde.app import build, run
from kanpde.nn import KAN, MLP

CONFIG_DIR = Path(str(resources.files("kanpde.configs")))


def compose_solve(overrides: list[str], hydra: bool = False):
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        return compose(config_name="solve", overrides=overrides, return_hydra_config=hydra)


def stages(name: str) -> list[dict]:
    """The stages of configs/schedule/NAME.yaml."""
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "schedule" / f"{name}.yaml").stages)


def test_the_problem_config_picks_its_model_and_schedule():
    cfg = compose_solve(["problem=helmholtz"], hydra=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.problem, choices.model, choices.schedule) == ("helmholtz", "kan_quintic", "helmholtz")
    assert cfg.model._target_ == "kanpde.nn.build_kan" and cfg.model.order == 5
    assert list(cfg.model.hidden) == [10] and cfg.model.grid_size == 5  # the rest is kan.yaml's
    assert OmegaConf.to_container(cfg.schedule.stages) == stages("helmholtz")
    assert [s["grid_size"] for s in stages("helmholtz")][-1] == 30
    assert cfg.problem.hard is True
    setup = build(cfg, "helmholtz")
    assert isinstance(setup.model, KAN) and setup.model.widths == [2, 10, 1]
    assert setup.problem.hard and setup.problem.conditions() == {}


@pytest.mark.parametrize("override, model_target, order, schedule", [
    ("model=mlp", "kanpde.nn.build_mlp", None, "helmholtz"),
    ("model=kan", "kanpde.nn.build_kan", 5, "helmholtz"),
    ("model.order=3", "kanpde.nn.build_kan", 3, "helmholtz"),
    ("schedule=default", "kanpde.nn.build_kan", 5, "default"),
    ("schedule=adam_lbfgs", "kanpde.nn.build_kan", 5, "adam_lbfgs"),
])
def test_the_command_line_still_wins(override, model_target, order, schedule):
    cfg = compose_solve(["problem=helmholtz", override])
    assert cfg.model._target_ == model_target and cfg.model.get("order") == order
    assert OmegaConf.to_container(cfg.schedule.stages) == stages(schedule)
    setup = build(cfg, "helmholtz")
    assert isinstance(setup.model, MLP if override == "model=mlp" else KAN)


def test_a_problem_field_and_a_stage_override_the_choices():
    cfg = compose_solve(["problem=helmholtz", "problem.hard=false", "schedule.stages.3.steps=7"])
    assert cfg.problem.hard is False and cfg.schedule.stages[3].steps == 7 and cfg.model.order == 5
    assert set(build(cfg, "helmholtz").problem.conditions()) == {"boundary"}


def test_other_problems_keep_the_global_defaults():
    cfg = compose_solve(["problem=poisson"], hydra=True)
    assert (cfg.hydra.runtime.choices.model, cfg.hydra.runtime.choices.schedule) == ("kan", "default")
    assert cfg.model.order == 5 and OmegaConf.to_container(cfg.schedule.stages) == stages("default")


def test_the_experiment_alias_is_the_problem_default():
    plain, alias = compose_solve(["problem=helmholtz"]), compose_solve(["+experiment=helmholtz"])
    assert OmegaConf.to_container(alias) == OmegaConf.to_container(plain)


def test_tiny_solve_helmholtz_end_to_end(tmp_path):
    """The problem's own model and schedule (grids 5 -> 10 -> 20 -> 30), one step per stage, few points."""
    steps = [f"schedule.stages.{i}.steps=1" for i in range(len(stages("helmholtz")))]
    overrides = ["problem=helmholtz", *steps, "sampler.n_interior=64", "eval.points_per_side=11",
                 "train.plot=false", "train.progress=false"]
    cfg = compose_solve(overrides)
    metrics = run(cfg, tmp_path, problem_name="helmholtz")
    assert metrics["status"] == "completed" and metrics["steps"] == len(steps)
    assert metrics["problem"] == "helmholtz" and metrics["grid_size"] == 30
    assert metrics["parameters"] == 30 * (30 + 5 + 2)  # 30 edges: grid + order coefficients and 2 scales
    assert math.isfinite(metrics["rel_l2"])  # 4 steps on 64 points: finite, not accurate
    assert "order: 5" in (tmp_path / "config.yaml").read_text()


def test_cli_composes_with_overrides(cli, tmp_path):
    for args in (["solve", "helmholtz", "model=mlp", "--cfg", "job"],
                 ["solve", "helmholtz", "schedule=default", "--cfg", "job"]):
        done = cli(args, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "kanpde.problems.helmholtz.Helmholtz" in done.stdout
