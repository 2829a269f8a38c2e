"""Residual-based adaptive sampling (RAR-D and RAD, Wu et al. 2023) and the loss recorded in the history.

Sampling tests use a synthetic residual magnitude so what is asserted is exact: with c = 0 every new point
comes from where the residual is non-zero. The training tests run tiny budgets on the KAN paper's Poisson.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kanpde.nn import KAN
from kanpde.problem import Box
from kanpde.sampling import ResidualAdaptive, Sampler
from kanpde.training import Stage, residual_magnitude, train

SQUARE = Box(("x", "y"), (-1.0, -1.0), (1.0, 1.0))


def right_half(points: torch.Tensor) -> np.ndarray:
    """A residual magnitude that vanishes on x < 0.5 and grows with x beyond it."""
    return np.clip(points[:, 0].numpy() - 0.5, 0.0, None)


def adaptive_sampler(seed: int = 0, **rule) -> Sampler:
    return Sampler("sobol", n_interior=128, n_boundary=32, seed=seed, adaptive=rule)


def test_rar_d_adds_points_only_where_the_residual_lives():
    sampler = adaptive_sampler(mode="add", k=2.0, c=0.0, n_new=40)
    start = sampler.interior(SQUARE)
    grown = sampler.adapt(SQUARE, start, right_half)
    assert grown.shape == (128 + 40, 2)
    assert torch.equal(grown[:128], start)  # RAR-D keeps the old points
    new = grown[128:]
    assert bool((new[:, 0] > 0.5).all()) and bool((new.abs() <= 1).all())
    assert len(torch.unique(new, dim=0)) == 40  # drawn without replacement


def test_rad_redraws_the_whole_set_with_a_floor_everywhere():
    sampler = adaptive_sampler(mode="replace", k=1.0, c=1.0)
    fresh = sampler.adapt(SQUARE, sampler.interior(SQUARE), right_half)
    assert fresh.shape == (128, 2)
    share_right = float((fresh[:, 0] > 0.5).double().mean())
    # Density 1 + eps/mean(eps) puts about 0.25 * (1 + 4) / 2 = 0.62 of the mass on x > 0.5 (a quarter of
    # the box, where eps/mean(eps) averages 4); uniform sampling would give 0.25.
    assert 0.45 < share_right < 0.8, share_right
    assert bool((fresh[:, 0] < 0.5).any())  # c > 0 keeps points everywhere


def test_adaptive_draws_are_reproducible_per_seed():
    draws = []
    for seed in (3, 3, 4):
        sampler = adaptive_sampler(seed, mode="add", n_new=20)
        draws.append(sampler.adapt(SQUARE, sampler.interior(SQUARE), right_half))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def test_max_points_caps_the_growth():
    sampler = adaptive_sampler(mode="add", n_new=40, max_points=150)
    points = sampler.interior(SQUARE)
    sizes = []
    for _ in range(3):
        points = sampler.adapt(SQUARE, points, right_half)
        sizes.append(len(points))
    assert sizes == [150, 150, 150]


@pytest.mark.parametrize("magnitude", [np.zeros(50), np.full(50, np.nan)], ids=["zero", "nan"])
def test_a_zero_residual_falls_back_to_uniform_choice(magnitude):
    """With no residual anywhere (or none that is finite) p ~ eps^k / mean + c is 0 / 0: the draw is then the
    uniform one, index for index (the test used to check only that 10 distinct indices came back)."""
    rule = ResidualAdaptive(k=2.0, c=0.0)
    chosen = rule.choose(magnitude, 10, seed=0)
    uniform = np.random.default_rng(0).choice(50, size=10, replace=False, p=np.full(50, 1 / 50))
    assert chosen.tolist() == uniform.tolist()
    weighted = rule.choose(np.r_[np.zeros(49), 1.0], 1, seed=0)  # and a residual at one point alone picks it
    assert weighted.tolist() == [49]


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "grow"}, "mode must be one of"),
    ({"every": -1}, "'every' must be an integer >= 0"),
    ({"k": 0.0, "c": 0.0}, "not both 0"),
    ({"k": -1.0}, "k >= 0"),
    ({"n_new": 0}, "n_new must be an integer >= 1"),
    ({"candidates": 0.5}, "candidates must be a multiple >= 1"),
    ({"max_points": 0}, "max_points must be an integer >= 1"),
])
def test_bad_adaptive_settings_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualAdaptive(**kwargs)


def test_adaptive_and_resampling_together_are_refused():
    with pytest.raises(ValueError, match="either resample_every or adaptive"):
        Sampler(resample_every=10, adaptive={"every": 10})


def test_residual_magnitude_is_the_pointwise_residual(poisson):
    model = KAN([2, 4, 1], grid_size=4, grid_range=poisson.domain.ranges, seed=0).double()
    x = Sampler("sobol", 64, 8, seed=0).interior(poisson.domain)
    magnitude = residual_magnitude(poisson, model, x, chunk_size=20)  # chunks of 20 cover 64 points
    from kanpde.derivatives import Fields
    fields = Fields(model, x.clone().requires_grad_(True), poisson.variables, poisson.outputs, "autograd")
    expected = poisson.residual(fields.x, fields).abs().detach()
    torch.testing.assert_close(magnitude, expected, rtol=1e-10, atol=1e-12)


def test_training_with_rar_d_grows_the_point_set(poisson, lbfgs):
    model = KAN([2, 4, 1], grid_size=3, grid_range=poisson.domain.ranges, seed=0).double()
    sampler = Sampler("sobol", 100, 32, seed=0, adaptive={"every": 3, "mode": "add", "n_new": 10,
                                                          "at_stage_start": True})
    result = train(poisson, model, [Stage("lbfgs", 4, 3), Stage("lbfgs", 3, 5)], {"lbfgs": lbfgs(3)}, sampler,
                   eval_every=1, grid_update=None)
    sizes = [row["n_interior"] for row in result.history]
    # adaptations before global steps 4 and 7 (every 3) and at the second stage's start (before step 5)
    assert sizes == [100, 100, 100, 100, 110, 120, 120, 130], sizes
    assert result.metrics["n_interior_final"] == 130
    assert result.status == "completed"


def test_history_loss_is_the_loss_at_the_accepted_parameters(poisson, lbfgs, monkeypatch):
    """An L-BFGS step's last closure call may be a rejected line-search trial; the history must not be.

    Seed 1's second step ends on such a trial (measured: last closure loss 1.438, accepted parameters 1.417).
    The history row is checked against the loss at the final parameters by the other derivative engine, and
    against the last closure value, which it must differ from (the test used to compare evaluate_terms with
    itself, at a step without a rejected trial)."""
    from kanpde.objective import LeastSquares, loss_terms
    from kanpde.training import collocation

    closure_losses = []
    backward = LeastSquares.backward

    def recorded(self):
        terms = backward(self)
        closure_losses.append(sum(terms.values()))
        return terms

    monkeypatch.setattr(LeastSquares, "backward", recorded)
    model = KAN([2, 4, 1], grid_size=3, grid_range=poisson.domain.ranges, seed=1).double()
    result = train(poisson, model, [Stage("lbfgs", 2, 3)], {"lbfgs": lbfgs(5)}, Sampler("sobol", 100, 32, seed=0),
                   eval_every=1, grid_update=None, progress=False)
    points = {k: v.double().requires_grad_(True)
              for k, v in collocation(poisson, Sampler("sobol", 100, 32, seed=0)).items()}
    accepted = sum(float(v.detach()) for v in loss_terms(poisson, result.model, points, "autograd").values())
    assert result.history[-1]["loss"] == pytest.approx(accepted, rel=1e-10)
    assert result.metrics["final_loss"] == pytest.approx(accepted, rel=1e-10)
    assert abs(closure_losses[-1] - accepted) > 1e-3 * accepted  # the step did end on a rejected trial
