"""The 2-D heat problem in (x, y, t): the exact solution solves it and meets its conditions; the hard ansatz;
bad settings; a tiny run whose test grid is sized by eval.n_points in three variables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test_configs import compose_solve
from test_heat import Exact  # a 'network' returning the exact solution

from kanpde.app import ConfigError, build, run
from kanpde.derivatives import Fields
from kanpde.problems.heat2d import Heat2D

TINY = ["schedule.stages=[{optimizer:lm,steps:2,grid_size:3},{optimizer:lm,steps:1,grid_size:4}]",
        "sampler.n_interior=64", "sampler.n_boundary=48", "eval.n_points=1000", "model.hidden=[3]",
        "train.progress=false"]


def cube_points(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    return torch.stack([2 * unit[:, 0] - 1, 2 * unit[:, 1] - 1, unit[:, 2]], dim=1)


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_exact_solution_solves_the_equation_and_meets_the_conditions(alpha):
    problem = Heat2D(alpha=alpha, hard=False)
    x = cube_points()
    residual = problem.residual(x, Fields(Exact(problem), x, problem.variables, problem.outputs, engine="autograd"))
    torch.testing.assert_close(residual, torch.zeros(len(x), dtype=torch.float64), rtol=0, atol=1e-12)
    conditions = problem.conditions()
    assert set(conditions) == {"initial", "boundary"}
    faces = {"initial": x * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
             "boundary": torch.cat([x[:50] * torch.tensor([0.0, 1.0, 1.0]) + torch.tensor([1.0, 0.0, 0.0]),
                                    x[50:100] * torch.tensor([1.0, 0.0, 1.0]) - torch.tensor([0.0, 1.0, 0.0])])}
    for name, condition in conditions.items():
        pts = faces[name]
        value = condition.residual(pts, Fields(Exact(problem), pts, problem.variables, problem.outputs))
        torch.testing.assert_close(value, torch.zeros(len(pts), dtype=torch.float64), rtol=0, atol=1e-14)


def test_hard_ansatz_meets_initial_and_boundary_values_exactly():
    problem = Heat2D()
    assert problem.conditions() == {}
    x = cube_points(50)
    on = torch.cat([x * torch.tensor([1.0, 1.0, 0.0]), x * torch.tensor([0.0, 1.0, 1.0]) - torch.tensor([1.0, 0, 0])])
    u = problem.hard_constraint.apply_value(on, torch.randn(len(on), 1, dtype=torch.float64))
    torch.testing.assert_close(u, problem.exact(on), rtol=0, atol=1e-15)


@pytest.mark.parametrize("settings, error, match", [
    ({"alpha": 0.0}, ValueError, "diffusivity alpha must be a finite number > 0"),
    ({"alpha": math.nan}, ValueError, "diffusivity alpha must be a finite number > 0"),
    ({"hard": "yes"}, TypeError, "hard must be true or false"),
    ({"boundary_weight": -1.0}, ValueError, "boundary_weight must be a finite number >= 0"),
])
def test_bad_settings(settings, error, match):
    with pytest.raises(error, match=match):
        Heat2D(**settings)


def test_bad_alpha_from_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match="alpha must be a finite number > 0"):
        build(compose_solve(["problem=heat2d", "problem.alpha=-1"]), "heat2d")


def test_tiny_run_on_a_three_variable_grid(tmp_path, reported_and_trained):
    """With the condition losses, so that points are drawn on the initial face and the four sides in 3-D (the
    hard ansatz is covered above)."""
    metrics = run(compose_solve(["problem=heat2d", "problem.hard=false", *TINY]), tmp_path, problem_name="heat2d")
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    reported_and_trained(tmp_path, metrics)
    prediction = np.load(tmp_path / "prediction.npz")
    assert prediction["points"].shape == (10**3, 3)  # floor(1000^(1/3)) = 10 per side
    assert "rel_l2_u" not in metrics  # one output: the combined keys only
    assert {"loss_initial", "loss_boundary"} <= set((tmp_path / "history.csv").read_text().splitlines()[0].split(","))
