"""Kovasznay flow: the exact solution solves the equations and meets the conditions; per-output metrics and plots
of a tiny run; bad settings; and (slow) the issue's bar, rel_l2 of u and v <= 1e-4 within 5 minutes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from test_configs import compose_solve
from test_heat import Exact  # a 'network' returning the exact solution

from kanpde.app import ConfigError, build, run
from kanpde.derivatives import Fields
from kanpde.problems.kovasznay import Kovasznay

TINY = ["schedule.stages=[{optimizer:lm,steps:2,grid_size:3},{optimizer:lm,steps:1,grid_size:4}]",
        "sampler.n_interior=64", "sampler.n_boundary=32", "eval.points_per_side=11", "model.hidden=[3]",
        "train.progress=false"]


def points_in(box, n=300, seed=0):
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, box.dim, generator=generator, dtype=torch.float64)
    lower, upper = torch.tensor(box.lower, dtype=torch.float64), torch.tensor(box.upper, dtype=torch.float64)
    return lower + (upper - lower) * unit


@pytest.mark.parametrize("reynolds", [20.0, 5.0, 100.0])
def test_exact_solution_solves_navier_stokes(reynolds):
    """Autograd on the exact formula: momentum and continuity residuals are zero to ~1e-10 (the velocity is
    O(3) and its second derivatives O(100) on this domain)."""
    problem = Kovasznay(reynolds=reynolds)
    x = points_in(problem.domain)
    residuals = problem.residual(x, Fields(Exact(problem), x, problem.variables, problem.outputs, engine="autograd"))
    assert set(residuals) == {"momentum_x", "momentum_y", "continuity"}
    for name, value in residuals.items():
        torch.testing.assert_close(value, torch.zeros_like(value), rtol=0, atol=1e-10, msg=name)


def test_reynolds_20_matches_deepxde_and_the_domain():
    problem = Kovasznay()
    nu = 1 / 20  # DeepXDE writes lambda = 1 / (2 nu) - sqrt(1 / (4 nu^2) + 4 pi^2)
    assert problem.decay == pytest.approx(1 / (2 * nu) - math.sqrt(1 / (4 * nu**2) + 4 * math.pi**2), rel=1e-14)
    assert problem.decay == pytest.approx(-1.8101, abs=1e-4)
    assert problem.domain.lower == (-0.5, -0.5) and problem.domain.upper == (1.0, 1.5)
    assert problem.outputs == ("u", "v", "p")


def test_conditions_hold_the_exact_solution_and_p_only_on_the_outflow():
    problem = Kovasznay()
    conditions = problem.conditions()
    assert set(conditions) == {"u", "v", "p"}
    assert conditions["u"].on == conditions["v"].on == "boundary" and conditions["p"].on == "x=1"
    s = torch.linspace(0, 1, 9, dtype=torch.float64)
    faces = {"x=-0.5": torch.stack([torch.full_like(s, -0.5), -0.5 + 2 * s], 1),
             "x=1": torch.stack([torch.ones_like(s), -0.5 + 2 * s], 1),
             "y=-0.5": torch.stack([-0.5 + 1.5 * s, torch.full_like(s, -0.5)], 1),
             "y=1.5": torch.stack([-0.5 + 1.5 * s, torch.full_like(s, 1.5)], 1)}
    wrong = lambda x: problem.exact(x) + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # noqa: E731
    for face, pts in faces.items():
        for name, condition in conditions.items():
            if name == "p" and face != "x=1":
                continue
            fields = Fields(Exact(problem), pts, problem.variables, problem.outputs)
            torch.testing.assert_close(condition.residual(pts, fields), torch.zeros(len(pts), dtype=torch.float64),
                                       rtol=0, atol=1e-14)
    # p shifted by a constant violates only the pressure condition: that is what fixes p's level
    pts = faces["x=1"]
    shifted = type("Shifted", (torch.nn.Module,), {"forward": lambda self, x: wrong(x)})()
    fields = Fields(shifted, pts, problem.variables, problem.outputs)
    torch.testing.assert_close(conditions["p"].residual(pts, fields), torch.full((len(pts),), 1.0, dtype=torch.float64))
    torch.testing.assert_close(conditions["u"].residual(pts, fields), torch.zeros(len(pts), dtype=torch.float64),
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("settings, match", [
    ({"reynolds": 0.0}, "Reynolds number must be a finite number > 0"),
    ({"reynolds": -20.0}, "Reynolds number must be a finite number > 0"),
    ({"reynolds": math.inf}, "Reynolds number must be a finite number > 0"),
    ({"reynolds": "20"}, "Reynolds number must be a finite number > 0"),
    ({"reynolds": True}, "Reynolds number must be a finite number > 0"),
    ({"velocity_weight": -1.0}, "velocity_weight must be a finite number >= 0"),
    ({"pressure_weight": math.nan}, "pressure_weight must be a finite number >= 0"),
])
def test_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        Kovasznay(**settings)


def test_bad_reynolds_from_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match="Reynolds number must be a finite number > 0"):
        build(compose_solve(["problem=kovasznay", "problem.reynolds=0"]), "kovasznay")


def test_tiny_run_reports_and_plots_each_output(tmp_path, reported_and_trained):
    metrics = run(compose_solve(["problem=kovasznay", *TINY]), tmp_path, problem_name="kovasznay")
    assert metrics["status"] == "completed" and metrics["steps"] == 3
    reported_and_trained(tmp_path, metrics)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    prediction = np.load(tmp_path / "prediction.npz")
    assert list(prediction["outputs"]) == ["u", "v", "p"] and prediction["predicted"].shape == (121, 3)
    for column, name in enumerate(("u", "v", "p")):
        diff = prediction["predicted"][:, column] - prediction["reference"][:, column]
        assert saved[f"rel_l2_{name}"] == pytest.approx(
            np.linalg.norm(diff) / np.linalg.norm(prediction["reference"][:, column]), rel=1e-10)
        assert saved[f"mse_{name}"] == pytest.approx(np.mean(diff**2), rel=1e-10)
        assert saved[f"max_abs_{name}"] == pytest.approx(np.abs(diff).max(), rel=1e-10)
        # one figure per output: model, reference and error side by side
        assert f"solution_{name}.png" in saved["files"] and (tmp_path / f"solution_{name}.png").stat().st_size > 10_000
    assert {"rel_l2", "mse", "max_abs"} <= set(saved)  # the combined figures stay
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss_momentum_x", "loss_momentum_y", "loss_continuity", "loss_u", "loss_v", "loss_p",
            "rel_l2_u", "rel_l2_v", "rel_l2_p"} <= set(header)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_solve_meets_the_bar(cli, tmp_path, seed):
    """The issue's bar with `python -m kanpde solve kovasznay` (its yaml's defaults): rel_l2 of u and v <= 1e-4
    within 5 minutes of training (measured: 2e-6 to 2e-5 in 70-105 s each on a loaded machine,
    results/kovasznay/README.md)."""
    folder = tmp_path / "run"
    done = cli(["solve", "kovasznay", f"seed={seed}", "threads=1", "train.plot=false", f"hydra.run.dir={folder}"],
               tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["rel_l2_u"] <= 1e-4 and metrics["rel_l2_v"] <= 1e-4, metrics
    assert metrics["rel_l2_p"] <= 1e-3
    assert metrics["train_time"] <= 300
