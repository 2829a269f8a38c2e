"""Burgers: the Cole-Hopf reference (convergence, small nu, Basdevant's shock slope), validation, a tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from kanpde.app import ConfigError, build, run
from kanpde.derivatives import Fields
from kanpde.problems.burgers import Burgers
from kanpde.problems.burgers_reference import cole_hopf, default_nodes, reference_grid

NU = 0.01 / math.pi


def grid(n_x=64, n_t=25):
    return np.meshgrid(np.linspace(-1, 1, n_x), np.linspace(0, 1, n_t), indexing="ij")


@pytest.mark.parametrize("nu", [NU, 1e-3])
def test_reference_converges_in_the_number_of_nodes(nu):
    x, t = grid()
    nodes = default_nodes(nu)
    u = cole_hopf(x, t, nu, nodes)
    doubled = cole_hopf(x, t, nu, 2 * nodes)
    assert np.abs(u - doubled).max() < 1e-11
    too_few = cole_hopf(x, t, nu, nodes // 4)  # the check above would catch an unconverged count
    assert np.abs(too_few - doubled).max() > 1e-6


def test_reference_meets_the_initial_and_boundary_conditions():
    x = np.linspace(-1, 1, 41)
    np.testing.assert_allclose(cole_hopf(x, 0.0, NU), -np.sin(np.pi * x), atol=1e-14)
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(cole_hopf(1.0, t, NU), 0.0, atol=1e-12)
    np.testing.assert_allclose(cole_hopf(-1.0, t, NU), 0.0, atol=1e-12)


@pytest.mark.parametrize("nu", [1e-4, 1e-6])
def test_reference_is_finite_for_small_viscosity(nu):
    x, t = grid(33, 9)
    u, u_x = cole_hopf(x, t, nu, nodes=400, derivative=True)  # exp(1 / (2 pi nu)) would overflow outright
    assert np.isfinite(u).all() and np.isfinite(u_x).all()
    assert np.abs(u).max() <= 1 + 1e-12


def test_shock_slope_matches_basdevant():
    """max_t |u_x(0, t)| = 152.00516 at t = 1.60369 / pi (Basdevant et al. 1986, table 1)."""
    t = np.linspace(1.5 / math.pi, 1.7 / math.pi, 2001)
    _, u_x = cole_hopf(0.0, t, NU, derivative=True)
    peak = np.argmax(np.abs(u_x))
    assert abs(u_x[peak]) == pytest.approx(152.0052, rel=5e-5)  # 4 significant digits and more
    assert math.pi * t[peak] == pytest.approx(1.60369, abs=2e-4)
    _, exact_slope = cole_hopf(0.0, 1.60369 / math.pi, NU, derivative=True)
    assert float(exact_slope) == pytest.approx(-152.00516, abs=1e-4)


def test_analytic_slope_matches_finite_differences():
    x, t = np.linspace(-0.9, 0.9, 13), 0.3
    h = 1e-5
    _, u_x = cole_hopf(x, t, NU, derivative=True)
    central = (cole_hopf(x + h, t, NU) - cole_hopf(x - h, t, NU)) / (2 * h)
    np.testing.assert_allclose(u_x, central, rtol=1e-6, atol=1e-6)


def test_reference_satisfies_burgers_equation_away_from_the_shock():
    """u_t + u u_x - nu u_xx by finite differences of the reference, small where the solution is smooth."""
    h = 1e-4
    x, t = np.linspace(-0.9, -0.2, 8), np.linspace(0.1, 0.9, 5)[:, None]
    u = cole_hopf(x, t, NU)
    u_t = (cole_hopf(x, t + h, NU) - cole_hopf(x, t - h, NU)) / (2 * h)
    u_x = (cole_hopf(x + h, t, NU) - cole_hopf(x - h, t, NU)) / (2 * h)
    u_xx = (cole_hopf(x + h, t, NU) - 2 * u + cole_hopf(x - h, t, NU)) / h**2
    assert np.abs(u_t + u * u_x - NU * u_xx).max() < 1e-5


def test_reference_grid_is_cached_and_read_only():
    points, values = reference_grid(NU, 16, 5)
    assert points.shape == (80, 2) and values.shape == (80, 1)
    assert reference_grid(NU, 16, 5)[1] is values
    with pytest.raises(ValueError):
        values[0, 0] = 1.0
    problem = Burgers(reference_points=(16, 5))
    ref_points, ref_values = problem.reference()
    assert ref_points.dtype == torch.float64 and ref_values.shape == (80, 1)
    ref_values[0, 0] = 5.0  # the problem hands out copies: the cache stays intact
    assert values[0, 0] != 5.0


@pytest.mark.parametrize("nu", [0.0, -NU, math.nan, math.inf, "small", False])
def test_viscosity_must_be_positive(nu):
    with pytest.raises(ValueError, match="viscosity nu must be a finite number > 0"):
        Burgers(nu=nu)


def test_reference_rejects_bad_arguments():
    with pytest.raises(ValueError, match="viscosity nu"):
        cole_hopf(0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="Gauss-Hermite nodes"):
        cole_hopf(0.0, 0.5, NU, nodes=1)
    with pytest.raises(ValueError, match="times must be >= 0"):
        cole_hopf(0.0, -0.5, NU)
    with pytest.raises(ValueError, match="reference_points"):
        Burgers(reference_points=(256,))


def test_bad_nu_from_the_command_line_is_a_config_error():
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        cfg = compose("solve", overrides=["problem=burgers", "problem.nu=0"])
    with pytest.raises(ConfigError, match="viscosity nu must be a finite number > 0"):
        build(cfg, "burgers")


@pytest.mark.parametrize("hard", [True, False])
def test_residual_and_conditions(hard):
    problem = Burgers(hard=hard, stretch=0)
    assert (problem.hard_constraint is not None) == hard
    assert set(problem.conditions()) == (set() if hard else {"initial", "boundary"})

    class Travelling(torch.nn.Module):  # u = -sin(pi x) e^-t is not a solution: check the residual formula
        def forward(self, x):
            return (-torch.sin(math.pi * x[:, 0]) * torch.exp(-x[:, 1])).unsqueeze(-1)

    x = torch.rand(20, 2, dtype=torch.float64)
    fields = Fields(Travelling(), x, problem.variables, problem.outputs, engine="autograd")
    u = -torch.sin(math.pi * x[:, 0]) * torch.exp(-x[:, 1])
    u_x = -math.pi * torch.cos(math.pi * x[:, 0]) * torch.exp(-x[:, 1])
    expected = -u + u * u_x - NU * (-math.pi**2 * u)
    torch.testing.assert_close(problem.residual(x, fields), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("extra", [[], ["problem.hard=true"], ["problem.stretch=0", "problem.hard=true"],
                                   ["model=mlp", "model.hidden=[4]"]],
                         ids=["kan-soft-stretched", "kan-hard-stretched", "kan-hard-in-x", "mlp"])
def test_tiny_run_end_to_end(extra, tmp_path, reported_and_trained):
    overrides = ["problem=burgers", "schedule.stages=[{optimizer:lbfgs,steps:2,grid_size:5}]",
                 "sampler.n_interior=64", "sampler.n_boundary=32", "model.hidden=[3]", "train.plot=false",
                 "train.progress=false", "problem.reference_points=[32,11]", *extra]
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        cfg = compose("solve", overrides=overrides)
    metrics = run(cfg, tmp_path, problem_name="burgers")
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    reported_and_trained(tmp_path, metrics)
    prediction = np.load(tmp_path / "prediction.npz")
    assert len(prediction["points"]) == 32 * 11
    # saved (and plotted) in x even when the problem is solved in the stretched s
    assert prediction["variables"].tolist() == ["x", "t"]
    np.testing.assert_allclose(np.unique(prediction["points"][:, 0]), np.linspace(-1, 1, 32), atol=1e-13)
    stretched = "problem.stretch=0" not in extra
    assert prediction["solver_variables"].tolist() == (["s", "t"] if stretched else ["x", "t"])
    assert ("loss_initial" in (tmp_path / "history.csv").read_text()) == ("problem.hard=true" not in extra)


def test_stretched_problem_is_the_same_equation_in_s():
    """The residual in (s, t) of u(x(s), t) is the residual in (x, t) at x(s), times sqrt(dx/ds)."""
    plain, stretched = Burgers(stretch=0), Burgers(stretch=0.02)
    assert stretched.variables == ("s", "t") and plain.variables == ("x", "t")

    def smooth(x, t):  # any smooth function will do
        return torch.tanh(3 * x - t) * torch.exp(-t) + 0.1 * x**2

    class InX(torch.nn.Module):
        def forward(self, p):
            return smooth(p[:, 0], p[:, 1]).unsqueeze(-1)

    class InS(torch.nn.Module):
        def forward(self, p):
            return smooth(stretched.stretch.to_x(p[:, 0]), p[:, 1]).unsqueeze(-1)

    generator = torch.Generator().manual_seed(0)
    s = torch.rand(30, 2, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 1.0]) - torch.tensor([1.0, 0.0])
    x = torch.stack([stretched.stretch.to_x(s[:, 0]), s[:, 1]], 1)
    in_s = stretched.residual(s, Fields(InS(), s, stretched.variables, stretched.outputs, engine="autograd"))
    in_x = plain.residual(x, Fields(InX(), x, plain.variables, plain.outputs, engine="autograd"))
    weight = stretched.stretch.derivatives(s[:, 0])[0].rsqrt()  # sqrt(dx/ds): the change of variables
    torch.testing.assert_close(in_s, in_x * weight, rtol=1e-10, atol=1e-10)
    mean_square_in_x = (in_x**2 / stretched.stretch.derivatives(s[:, 0])[0]).mean()
    torch.testing.assert_close((in_s**2).mean(), mean_square_in_x)


def test_stretched_reference_and_constraint():
    plain, stretched = Burgers(stretch=0, reference_points=(16, 5)), Burgers(stretch=0.02, hard=True, reference_points=(16, 5))
    (x_points, x_values), (s_points, s_values) = plain.reference(), stretched.reference()
    torch.testing.assert_close(s_values, x_values)
    torch.testing.assert_close(stretched.stretch.to_x(s_points[:, 0]), x_points[:, 0], rtol=0, atol=1e-14)
    assert s_points[:, 0].min() == -1.0 and s_points[:, 0].max() == 1.0
    initial = s_points[s_points[:, 1] == 0]
    u0 = stretched.hard_constraint.apply_value(initial, torch.randn(len(initial), 1, dtype=torch.float64))
    torch.testing.assert_close(u0[:, 0], -torch.sin(math.pi * stretched.stretch.to_x(initial[:, 0])), rtol=0, atol=1e-14)
    assert set(Burgers(stretch=0.02, hard=False).conditions()) == {"initial", "boundary"}
    back, names = stretched.physical_points(s_points)
    assert names == ("x", "t")
    torch.testing.assert_close(back, x_points, rtol=0, atol=1e-14)


@pytest.mark.parametrize("stretch", [-0.1, math.inf, True])
def test_bad_stretch(stretch):
    with pytest.raises(ValueError, match="stretch must be a finite number >= 0"):
        Burgers(stretch=stretch)
