"""Heat problems: exact solutions satisfy the equations and conditions; validation; tiny end-to-end runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module

from kanpde.app import ConfigError, build, run
from kanpde.derivatives import Fields
from kanpde.problems.heat import ForcedHeat, Heat

TINY = ["schedule.stages=[{optimizer:lbfgs,steps:2,grid_size:5},{optimizer:lbfgs,steps:1,grid_size:10}]",
        "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11", "model.hidden=[3]",
        "train.plot=false", "train.progress=false"]


class Exact(torch.nn.Module):
    """A 'network' that returns a problem's exact solution, so residuals must vanish."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem

    def forward(self, x):
        return self.problem.exact(x)


def interior(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return torch.stack([2 * unit[:, 0] - 1, unit[:, 1]], dim=1)


def compose_solve(overrides):
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        return compose("solve", overrides=overrides)


@pytest.mark.parametrize("problem", [ForcedHeat(hard=False), Heat(alpha=0.3, hard=False), Heat(alpha=2.0, hard=False)],
                         ids=["forced", "alpha=0.3", "alpha=2"])
def test_exact_solution_has_zero_residual_and_meets_the_conditions(problem):
    x = interior()
    fields = Fields(Exact(problem), x, problem.variables, problem.outputs, engine="autograd")
    torch.testing.assert_close(problem.residual(x, fields), torch.zeros(len(x), dtype=torch.float64),
                               rtol=0, atol=1e-11)
    conditions = problem.conditions()
    assert set(conditions) == {"initial", "boundary"}
    assert conditions["initial"].weight == 100.0 and conditions["boundary"].weight == 100.0
    s = torch.linspace(-1, 1, 7, dtype=torch.float64)
    on_faces = {"initial": torch.stack([s, torch.zeros_like(s)], 1),
                "boundary": torch.stack([torch.sign(s) + (s == 0), (s + 1) / 2], 1)}
    for name, condition in conditions.items():
        pts = on_faces[name]
        residual = condition.residual(pts, Fields(Exact(problem), pts, problem.variables, problem.outputs))
        torch.testing.assert_close(residual, torch.zeros(len(pts), dtype=torch.float64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("cls", [ForcedHeat, Heat])
def test_hard_variant_has_no_condition_losses_and_an_exact_initial_state(cls):
    problem = cls(hard=True)
    assert problem.conditions() == {}
    x = torch.stack([torch.linspace(-1, 1, 11, dtype=torch.float64), torch.zeros(11, dtype=torch.float64)], 1)
    u = problem.hard_constraint.apply_value(x, torch.randn(11, 1, dtype=torch.float64))
    torch.testing.assert_close(u, problem.exact(x), rtol=0, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, -0.1, math.nan, math.inf, "fast", True])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(ValueError, match="diffusivity alpha must be a finite number > 0"):
        Heat(alpha=alpha)


def test_bad_alpha_from_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match="alpha must be a finite number > 0"):
        build(compose_solve(["problem=heat_plain", "problem.alpha=-1"]), "heat_plain")


@pytest.mark.parametrize("settings, error, match", [({"hard": "yes"}, TypeError, "hard must be true or false"),
                                                    ({"initial_weight": -1.0}, ValueError, "initial_weight")])
def test_bad_settings(settings, error, match):
    with pytest.raises(error, match=match):
        ForcedHeat(**settings)


@pytest.mark.parametrize("name", ["heat", "heat_soft", "heat_plain"])
def test_tiny_run_end_to_end(name, tmp_path, reported_and_trained):
    cfg = compose_solve([f"problem={name}", *TINY])
    metrics = run(cfg, tmp_path, problem_name=name)
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    reported_and_trained(tmp_path, metrics)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["rel_l2"] == pytest.approx(metrics["rel_l2"])
    history = (tmp_path / "history.csv").read_text()
    if name == "heat_soft":
        assert "loss_initial" in history and "loss_boundary" in history
    else:
        assert "loss_initial" not in history
