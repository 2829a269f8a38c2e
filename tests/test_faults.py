"""The fault table (README, "When things go wrong"): each row's fault, what the user sees, what is kept.

Defects found in review, each with a test that fails on the code before the fix: mixed derivatives read as
0 under no_grad (history losses, adaptive sampling through the public ``train()``), a failed checkpoint write
ending the run, library bugs reported as configuration errors.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hydra import compose, initialize_config_module

from kanpde.nn import KAN
from kanpde.objective import loss_terms, residual_magnitude
from kanpde.optim import LevenbergMarquardt
from kanpde.problems.poisson import SinSinPoisson
from kanpde.sampling import Sampler
from kanpde.training import Stage, collocation, train


class MixedPoisson(SinSinPoisson):
    """pykan's Poisson problem plus a mixed derivative in the residual (read by autograd, not the jet)."""

    def residual(self, x, d):
        return super().residual(x, d) + 10.0 * d["u_xy"]


def compose_solve(overrides):
    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        return compose(config_name="solve", overrides=overrides)


def test_history_losses_read_mixed_derivatives_without_input_grad(float64_default):
    """train() called as a library user would (no input_grad): the recorded loss is the true loss. It used to
    be computed under no_grad, where u_xy came back as 0."""
    problem = MixedPoisson()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0)
    initial = copy.deepcopy(model)
    result = train(problem, model, [Stage("lm", 1)], {"lm": LevenbergMarquardt}, Sampler("sobol", 64, 32, seed=0),
                   progress=False, grid_update=None)
    points = {k: v.requires_grad_(True) for k, v in collocation(problem, Sampler("sobol", 64, 32, seed=0)).items()}
    expected = sum(float(v.detach()) for v in loss_terms(problem, initial, points).values())
    without_mixed = sum(float(v.detach()) for v in loss_terms(SinSinPoisson(), initial, points).values())
    assert abs(expected - without_mixed) > 1e-3 * expected  # u_xy matters here (measured: 0.9868 against 0.9815)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-12)


def test_residual_magnitude_reads_mixed_derivatives_without_a_graph(float64_default):
    """Residual-based adaptive sampling asks for magnitudes without a graph; u_xy must not be 0 there."""
    problem = MixedPoisson()
    model = KAN([2, 3, 1], grid_size=3, grid_range=problem.domain.ranges, seed=0)
    x = collocation(problem, Sampler("sobol", 64, 32, seed=0))["interior"]
    fast = residual_magnitude(problem, model, x, needs_graph=False)
    exact = residual_magnitude(problem, model, x, needs_graph=True)
    torch.testing.assert_close(fast, exact, rtol=1e-12, atol=0)


def test_a_failed_final_checkpoint_still_writes_metrics(tmp_path, monkeypatch):
    """A full disk or a read-only checkpoint: metrics.json is written and names the failure."""
    from kanpde import app, results

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "save_checkpoint", full_disk)
    monkeypatch.setattr(app, "save_checkpoint", full_disk)
    cfg = compose_solve(["problem=poisson_sinsin", "schedule.stages=[{optimizer:lm,steps:2,grid_size:3}]",
                         "sampler.n_interior=32", "sampler.n_boundary=16", "eval.points_per_side=5",
                         "model.hidden=[2]", "train.plot=false", "train.progress=false"])
    metrics = app.run(cfg, tmp_path / "run", "poisson_sinsin")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == written["status"] == "completed"
    assert any("No space left" in e for e in written["checkpoint_errors"])
    assert "checkpoint.pt" not in written["files"]


def test_a_bug_inside_kanpde_is_not_reported_as_a_config_error(monkeypatch):
    """An IndexError while building the model is a bug: it propagates (traceback, exit 1), not ConfigError."""
    import kanpde.nn
    from kanpde import app

    def broken(*args, **kwargs):
        raise IndexError("list index out of range (a bug)")

    monkeypatch.setattr(kanpde.nn, "build_kan", broken)  # the model config's _target_
    cfg = compose_solve(["problem=poisson_sinsin", "model.hidden=[2]"])
    with pytest.raises(IndexError, match="a bug"):
        app.build(cfg, "poisson_sinsin")


def test_a_bad_setting_is_still_a_config_error():
    from kanpde import app

    cfg = compose_solve(["problem=poisson_sinsin", "model.grid_size=0"])
    with pytest.raises(app.ConfigError, match="grid_size must be an integer >= 1"):
        app.build(cfg, "poisson_sinsin")
