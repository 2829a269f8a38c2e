"""Inverse problems: unknown coefficients trained with the network, and observations as a loss term.

The Gauss-Newton products with unknowns and data are held to a reference that builds the residual vector by
nested autograd and each Jacobian row by its own backward pass (1e-10, float64); the data term is the plain
mean square of the misfit however the solver orders or chunks the points; every optimizer moves the unknown;
a stopped run resumes to the same identified value; bad declarations and data files give clear errors.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from kanpde import KAN, MLP, Box, Condition, Problem, Sampler, Stage, dirichlet, train
from kanpde.jacobian import ParameterIndex
from kanpde.objective import LeastSquares, _fields_factory, _named
from kanpde.observations import observations, read_observations
from kanpde.optim import LevenbergMarquardt
from kanpde.problems.burgers_inverse import BurgersInverse
from kanpde.problems.heat_inverse import HeatInverse
from kanpde.sampling import evaluation_grid
from kanpde.signals import Interrupted
from kanpde.training import Evaluation, GridUpdate, collocation
from kanpde.unknowns import Unknown

TOLERANCE = dict(rtol=1e-10, atol=1e-10)
LM = functools.partial(LevenbergMarquardt, ftol=0.0, xtol=0.0)
LBFGS = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=5, history_size=50, line_search_fn="strong_wolfe",
                          tolerance_grad=1e-32, tolerance_change=1e-32)
ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


class Decay(Problem):
    """u' = -k u on [0, 1], u(0) = 1, with k unknown (true 2) and observations of u = exp(-2 x)."""

    variables = ("x",)

    def __init__(self, n_observations: int = 20, stop_at: int | None = None):
        self.domain = Box(self.variables, (0.0,), (1.0,))
        self.k = Unknown(0.5, positive=True, true=2.0)
        # shuffled, so that the solver's cell order of the points is not the order of the data
        order = torch.randperm(n_observations, generator=torch.Generator().manual_seed(0))
        x = torch.linspace(0.05, 0.95, n_observations, dtype=torch.float64)[order].unsqueeze(1)
        self.data = observations(x, torch.exp(-2.0 * x), self.outputs, self.domain, self.outputs, weight=2.0)
        self.stop_at, self.calls = stop_at, 0

    def residual(self, x, d):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Interrupted(15)
        return d["u_x"] + self.k * d["u"]

    def conditions(self):
        return {"start": dirichlet(1.0, on="x=0"), "data": self.data}

    def exact(self, x):
        return torch.exp(-2.0 * x)


def reference_products(problem: Problem, model: torch.nn.Module, points: dict[str, torch.Tensor],
                       parameters: list[torch.Tensor]):
    """J^T J, J^T R and ||R||^2 with R by nested autograd (data in the points' own order), row by row."""
    entries = []
    groups = [("interior", problem.residual_weight, problem.residual, None)]
    groups += [(name, c.weight, c.residual, c.values) for name, c in problem.conditions().items()]
    for name, weight, residual, data in groups:
        x = points[name].detach().requires_grad_(True)
        fields = _fields_factory(problem, model, "autograd", None)(x, data)
        for _, value in _named(residual(x, fields), name):
            entries.append(value.reshape(-1) * math.sqrt(weight / len(x)))
    vector = torch.cat(entries)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(entry, parameters, retain_graph=True,
                                                                  allow_unused=True, materialize_grads=True)])
            for entry in vector]
    jacobian, vector = torch.stack(rows), vector.detach()
    return jacobian.T @ jacobian, jacobian.T @ vector, float(vector @ vector)


def small_kan(problem: Problem, hidden: int = 3, grid_size: int = 4) -> KAN:
    box = problem.domain
    return KAN([box.dim, hidden, 1], grid_size=grid_size, order=3, grid_range=box.ranges, seed=1).double()


CASES = {
    "decay": lambda: Decay(),
    "heat": lambda: HeatInverse(n_observations=30),
    "burgers": lambda: BurgersInverse(n_observations=30, reference_points=(32, 16)),
}


@pytest.mark.parametrize("case", [*sorted(CASES), "heat-mlp"])
@pytest.mark.parametrize("chunk", [16384, 7])
def test_gauss_newton_with_unknowns_and_data_equals_autograd(case, chunk):
    problem = CASES[case.removesuffix("-mlp")]()
    model = MLP([2, 6, 6, 1], activation="tanh", seed=1).double() if case.endswith("-mlp") else small_kan(problem)
    points = collocation(problem, Sampler("sobol", n_interior=40, n_boundary=16, seed=0))
    objective = LeastSquares(problem, model, points, jacobian_chunk=chunk)
    objective.ROWS_PER_CELL = 4  # small blocks: the cell order permutes the few points (the data among them)
    parameters = objective.parameters()
    assert len(parameters) == len(list(model.parameters())) + len(problem.unknowns)
    products = objective.gauss_newton(ParameterIndex(parameters))
    jtj, jtr, loss = reference_products(problem, model, points, parameters)
    torch.testing.assert_close(products.jtj, jtj, **TOLERANCE)
    torch.testing.assert_close(products.jtr, jtr, **TOLERANCE)
    assert products.loss == pytest.approx(loss, rel=1e-12)
    assert products.loss == pytest.approx(objective.loss(), rel=1e-12)
    # The unknowns ride on the fast structured rows (their columns by double backward), not the generic path.
    assert all(objective._structured.values()), objective._structured
    assert abs(float(jtr[-1])) > 0  # the unknown's column is not empty


def test_the_data_term_is_the_mean_square_misfit_whatever_the_point_order():
    problem = Decay(n_observations=50)
    model = small_kan(problem)
    points = collocation(problem, Sampler("sobol", n_interior=40, n_boundary=8, seed=0))
    x, y = problem.data.points, problem.data.values
    with torch.no_grad():
        expected = 2.0 * float(((model(x) - y) ** 2).mean())
    objective = LeastSquares(problem, model, points, jacobian_chunk=16)  # chunks of the cell-ordered points
    objective.ROWS_PER_CELL = 4  # blocks of 4: the cell order then permutes these 50 points (blocks of 128 would not)
    objective._in_cell_order("data")
    order = objective._order_cache["data"][4]
    assert not torch.equal(order, torch.arange(len(order)))  # the solver does reorder the observations
    assert objective.loss_terms()["data"] == pytest.approx(expected, rel=1e-12)
    index = ParameterIndex(objective.parameters())
    assert objective.gauss_newton(index).terms["data"] == pytest.approx(expected, rel=1e-12)
    objective._structured["data"] = True  # the trial keeps its forward pass on the structured path
    objective.jacobian_chunk = 16384
    objective.trial_loss(index)
    assert objective._trial_terms[2]["data"] == pytest.approx(expected, rel=1e-12)


def run_decay(optimizer: str, steps: int, stop_at: int | None = None, resume: dict | None = None):
    problem = Decay(stop_at=stop_at)
    model = small_kan(problem, hidden=3, grid_size=5)
    grid = evaluation_grid(problem.domain, 21)
    result = train(problem, model, [Stage(optimizer, steps)], {"lm": LM, "lbfgs": LBFGS, "adam": ADAM},
                   Sampler("sobol", n_interior=32, n_boundary=4, seed=0), Evaluation(grid, problem.exact(grid)),
                   grid_update=GridUpdate(), progress=False, resume=resume)
    return result, problem


@pytest.mark.parametrize("optimizer, steps, bound", [("lm", 20, 1e-4), ("lbfgs", 8, 1e-2), ("adam", 40, None)])
def test_every_optimizer_trains_the_unknown(optimizer, steps, bound, float64_default):
    result, problem = run_decay(optimizer, steps)
    report = result.metrics["unknowns"]["k"]
    assert report["initial"] == 0.5 and report["true"] == 2.0 and report["value"] == problem.unknowns["k"]
    values = [row["k"] for row in result.history]
    assert [row["step"] for row in result.history] == list(range(steps + 1))  # a row per step, whatever the optimizer
    assert values[0] == pytest.approx(0.5) and values[-1] != values[0]
    if bound is None:  # Adam's 40 small steps: only towards the truth
        assert abs(values[-1] - 2.0) < abs(values[0] - 2.0)
    else:
        assert report["rel_error"] < bound, report


def test_a_stopped_inverse_run_resumes_to_the_same_unknown(float64_default):
    torch.set_num_threads(1)
    reference, problem = run_decay("lm", 12)
    stopped, _ = run_decay("lm", 12, stop_at=problem.calls // 2)
    assert stopped.status == "interrupted"
    state = stopped.resume
    assert any(key.startswith("@unknowns.") for key in state["model_state"])
    resumed, _ = run_decay("lm", 12, resume=state)
    assert [row["k"] for row in resumed.history] == [row["k"] for row in reference.history]
    assert resumed.metrics["unknowns"]["k"]["value"] == reference.metrics["unknowns"]["k"]["value"]


@pytest.mark.parametrize("declare, message", [
    (lambda p: setattr(p, "k", Unknown(float("nan"))), "initial value must be a finite number"),
    (lambda p: setattr(p, "k", Unknown(0.0, positive=True)), "positive Unknown needs an initial value > 0"),
    (lambda p: setattr(p, "k", Unknown(1.0, true="two")), "true value must be a finite number"),
    (lambda p: setattr(p, "residual_weight", Unknown(1.0)), "class attribute"),
    (lambda p: setattr(p, "loss", Unknown(1.0)), "names a column the training history already has"),
    (lambda p: setattr(p, "k", Unknown(1.0, positive=True, true=-1.0)), "positive Unknown cannot have the true value"),
])
def test_bad_unknowns_are_refused(declare, message):
    problem = Decay()
    with pytest.raises(ValueError, match=message):
        declare(problem)


def test_an_unknown_reads_like_an_attribute_and_is_not_assigned():
    problem = Decay()
    value = problem.k
    assert isinstance(value, torch.Tensor) and value.requires_grad and float(value.detach()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="set by training"):
        problem.k = 3.0
    with pytest.raises(AttributeError, match="no attribute 'kk'"):
        problem.kk  # noqa: B018


# --------------------------------------------------------------------------------------------- observations


BOX = Box(("x", "t"), (-1.0, 0.0), (1.0, 1.0))


def make(points, values, outputs=("u",), **options):
    return observations(points, values, outputs, BOX, ("u", "v"), **options)


@pytest.mark.parametrize("points, values, outputs, message", [
    ([[0.0, 0.5]], [[1.0]], ("w",), r"observed outputs \['w'\] are not outputs"),
    ([[0.0, 0.5, 1.0]], [[1.0]], ("u",), "observation points have 3 coordinates"),
    ([[0.0, 0.5]], [[1.0, 2.0]], ("u",), "observed values have 2 columns for 1 outputs"),
    ([[0.0, 0.5], [0.1, 0.2]], [[1.0]], ("u",), "2 observation points but 1 observed values"),
    ([[0.0, float("nan")]], [[1.0]], ("u",), "1 of the observation points are NaN"),
    ([[0.0, 0.5]], [[float("inf")]], ("u",), "observed values are NaN or infinite"),
    ([[0.0, 0.5], [2.0, 0.5]], [[1.0], [2.0]], ("u",), "1 observation points lie outside the domain"),
])
def test_bad_observations_say_what_is_wrong(points, values, outputs, message):
    with pytest.raises(ValueError, match=message):
        make(points, values, outputs)


def test_noise_is_seeded_and_of_the_given_level():
    points = torch.rand(4000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([2.0, 1.0]) \
        - torch.tensor([1.0, 0.0])
    values = torch.sin(3 * points[:, :1])
    clean = make(points, values)
    noisy, again, other = (make(points, values, noise=0.05, seed=s) for s in (1, 1, 2))
    torch.testing.assert_close(clean.values, values.double())
    torch.testing.assert_close(noisy.values, again.values, rtol=0, atol=0)
    assert not torch.equal(noisy.values, other.values)
    spread = float((noisy.values - values).std() / values.std())
    assert spread == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="noise must be a fraction >= 0"):
        make(points, values, noise=-0.1)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_observation_files_round_trip(tmp_path, suffix):
    points = np.array([[-0.5, 0.1], [0.25, 0.7], [0.9, 0.3]])
    values = np.array([0.1, -0.2, 0.3])
    path = tmp_path / f"obs{suffix}"
    if suffix == ".csv":
        rows = "\n".join(f"{u},{x},{t}" for (x, t), u in zip(points, values))  # column order is free
        path.write_text("u,x,t\n" + rows + "\n")
    else:
        np.savez(path, x=points[:, 0], t=points[:, 1], u=values, extra=np.zeros(3))
    read_points, read_values, found = read_observations(path, ("x", "t"), ("u", "v"))
    assert found == ("u",)
    np.testing.assert_array_equal(read_points.numpy(), points)
    np.testing.assert_array_equal(read_values.numpy()[:, 0], values)


@pytest.mark.parametrize("content, message", [
    ("x,u\n0.1,0.2\n", r"no column for the variables \['t'\]"),
    ("x,t,w\n0.1,0.2,0.3\n", "no column for any output"),
    ("x,t,u\n0.1,0.2\n", "numbers per row|cannot read the rows"),
    ("x,t,u\n0.1,abc,0.3\n", "cannot read the rows as numbers"),
    ("x,t,u\n", "a header and no observations"),
    ("", "is empty"),
])
def test_bad_observation_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "obs.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_observations(path, ("x", "t"), ("u",))


def test_observation_file_paths_and_arrays_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_observations(tmp_path / "missing.csv", ("x", "t"), ("u",))
    with pytest.raises(ValueError, match="must be .npz or .csv"):
        read_observations(tmp_path / "obs.txt", ("x", "t"), ("u",))
    np.savez(tmp_path / "obs.npz", x=np.zeros((2, 2)), t=np.zeros(2), u=np.zeros(2))
    with pytest.raises(ValueError, match="each variable and output is a 1-D array"):
        read_observations(tmp_path / "obs.npz", ("x", "t"), ("u",))
    np.savez(tmp_path / "short.npz", x=np.zeros(3), t=np.zeros(2), u=np.zeros(3))
    with pytest.raises(ValueError, match="columns have different lengths"):
        read_observations(tmp_path / "short.npz", ("x", "t"), ("u",))


def test_an_inverse_run_folder_holds_the_identified_values(tmp_path):
    from test_configs import compose_solve

    from kanpde import load_checkpoint
    from kanpde.app import run

    cfg = compose_solve(["problem=heat_inverse", "problem.n_observations=50", "sampler.n_interior=64",
                         "eval.points_per_side=11", "train.plot=true", "model.hidden=[3]",
                         "schedule.stages=[{optimizer:lm,steps:4,grid_size:5}]"])
    metrics = run(cfg, tmp_path / "run", "heat_inverse")
    alpha = metrics["unknowns"]["alpha"]
    assert alpha["true"] == 0.1 and alpha["initial"] == 1.0 and alpha["value"] < 0.9  # it moved towards 0.1
    assert "unknowns.png" in metrics["files"] and (tmp_path / "run" / "unknowns.png").is_file()
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert meta["unknowns"] == {"alpha": pytest.approx(alpha["value"], rel=1e-12)}
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert "alpha" in header and "loss_data" in header


def test_a_problem_reads_its_observations_from_the_file_its_yaml_names(tmp_path):
    from test_configs import compose_solve

    from kanpde.app import ConfigError, build

    truth = HeatInverse(n_observations=25, data_seed=3)
    x, t = truth.data.points[:, 0].numpy(), truth.data.points[:, 1].numpy()
    np.savez(tmp_path / "heat.npz", x=x, t=t, u=truth.data.values[:, 0].numpy())
    setup = build(compose_solve(["problem=heat_inverse", f"problem.data={tmp_path / 'heat.npz'}",
                                 "eval.points_per_side=11"]), "heat_inverse")
    torch.testing.assert_close(setup.problem.data.points, truth.data.points)
    assert setup.problem.unknowns == {"alpha": pytest.approx(1.0)}
    with pytest.raises(ConfigError, match="observation file .*missing.csv not found"):
        build(compose_solve(["problem=heat_inverse", f"problem.data={tmp_path / 'missing.csv'}"]), "heat_inverse")


@pytest.mark.parametrize("override, message", [
    ("problem.alpha_initial=-1", "positive Unknown needs an initial value > 0"),
    ("problem.noise=-0.5", "noise must be a fraction >= 0"),
    ("problem.n_observations=0", "n_observations must be an integer >= 1"),
    ("problem.data_weight=-1", "data_weight must be a finite number >= 0"),
])
def test_bad_inverse_settings_are_config_errors(override, message):
    from test_configs import compose_solve

    from kanpde.app import ConfigError, build

    with pytest.raises(ConfigError, match=message):
        build(compose_solve(["problem=heat_inverse", override]), "heat_inverse")


def test_the_readme_example_identifies_its_coefficient(tmp_path, monkeypatch, float64_default):
    """The README's "Inverse problems" example, as printed there, on data made with k = 2."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Inverse problems", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    x = np.linspace(0.0, 1.0, 41)
    (tmp_path / "decay.csv").write_text("x,u\n" + "\n".join(f"{float(a)!r},{float(np.exp(-2 * a))!r}" for a in x) + "\n")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own example
    problem = namespace["DecayFromData"]()
    model = KAN([1, 3, 1], grid_size=5, grid_range=problem.domain.ranges, seed=0).double()
    result = train(problem, model, [Stage("lm", 30)], {"lm": LM}, Sampler("sobol", n_interior=32, seed=0),
                   progress=False)
    assert result.metrics["unknowns"]["k"]["value"] == pytest.approx(2.0, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("problem, noise, bound", [("burgers_inverse", 0.0, 0.01), ("burgers_inverse", 0.01, 0.05),
                                                   ("heat_inverse", 0.0, 0.01)])
def test_the_built_in_inverse_problems_identify_their_coefficients(tmp_path, problem, noise, bound):
    """The issue's bars with the defaults, seed 0 (`python -m kanpde.inverse_study` runs seeds 0-2): each
    coefficient within 1% from clean data, within 5% with 1% noise, in at most 5 minutes of training."""
    from test_configs import compose_solve

    from kanpde.app import run

    metrics = run(compose_solve([f"problem={problem}", f"problem.noise={noise}", "train.plot=false"]),
                  tmp_path / "run", problem)
    assert metrics["status"] == "completed" and metrics["train_time"] <= 300
    for name, unknown in metrics["unknowns"].items():
        assert unknown["rel_error"] <= bound, (name, unknown)


def test_an_unknown_declared_on_the_class_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"declare it on the instance, in __init__: self.k = Unknown"):
        class Wrong(Problem):  # noqa: F841
            k = Unknown(1.0)


def test_a_divergence_restores_the_unknowns_with_the_network(float64_default):
    """The loop's rollback covers the unknowns: after a divergence both are back at the last finite state.

    Adam applies its step before the loop sees the non-finite loss, and its momentum moves k even where the
    gradient is NaN-free, so k is restored only if the rollback covers it (else it would be the diverged step's)."""

    class Exploding(Decay):
        def residual(self, x, d):
            if self.calls >= 20:
                return d["u_x"] * float("nan")
            return super().residual(x, d)

    problem = Exploding()
    model = small_kan(problem, grid_size=5)
    result = train(problem, model, [Stage("adam", 40)], {"adam": ADAM}, Sampler("sobol", n_interior=32, seed=0),
                   progress=False)
    assert result.status == "diverged"
    restored = problem.unknowns["k"]
    # the last certified state: the parameters before the last finite step (its loss certifies them, not the step's
    # result), i.e. the second-last history row (rows are written per step for problems with unknowns)
    assert math.isfinite(restored) and restored == result.history[-2]["k"] and restored != 0.5, restored
    assert result.metrics["unknowns"]["k"]["value"] == restored


def test_observed_outputs_may_be_one_name_and_tensors_with_a_graph():
    points = torch.tensor([[0.0, 0.5]], requires_grad=True)
    # a name of several letters: a string taken as a sequence of outputs would be ("r", "h", "o")
    condition = observations(points, torch.tensor([[1.0]]), "rho", BOX, ("rho", "v"))
    assert condition.values.shape == (1, 1) and not condition.points.requires_grad


@pytest.mark.parametrize("condition, message", [
    (lambda: Condition(None, lambda x, d: d["u"]), "on=None needs the condition's own points"),
    (lambda: Condition(None, lambda x, d: d["u"], values=torch.zeros(2, 1)), "values were given without points"),
    (lambda: Condition("x=0", lambda x, d: d["u"], points=torch.zeros(2, 1)), "either faces .* or points"),
    (lambda: Condition(None, lambda x, d: d["u"], points=torch.full((2, 1), 3.0)), "outside the domain"),
    (lambda: Condition(None, lambda x, d: d["u"], n_points=5, points=torch.zeros(2, 1)), "n_points=5 but 2 points"),
])
def test_conditions_on_given_points_are_checked(condition, message):
    from kanpde.validation import InvalidProblem, validate

    class WithPoints(Problem):
        variables = ("x",)

        def __init__(self):
            self.domain = Box(self.variables, (0.0,), (1.0,))

        def residual(self, x, d):
            return d["u_xx"]

        def conditions(self):
            return {"given": condition()}

    with pytest.raises(InvalidProblem, match=message):
        validate(WithPoints(), small_kan(WithPoints()))


def test_unknowns_take_the_runs_dtype():
    from test_configs import compose_solve

    from kanpde.app import build

    setup = build(compose_solve(["problem=heat_inverse", "precision=float32", "eval.points_per_side=11"]),
                  "heat_inverse")
    assert setup.problem.alpha.dtype == torch.float32
    assert setup.problem.alpha.device == next(setup.model.parameters()).device
