"""kanpde explain: the formula evaluates to the network it was read from, the report is measured and
honest, and runs that cannot be explained get a clear message (exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sympy
import torch

from kanpde import KAN
from kanpde.explain import formula_from_network
from kanpde.nn.kan import _least_squares
from kanpde.symbolic import library_with

LIBRARY = library_with(names=["0", "x", "x^2", "sin", "cos", "exp"])


def polynomial_kan() -> KAN:
    """A KAN [2, 2, 1] whose edges are exactly polynomials (cubic splines reproduce them, w_base = 0):
    u = (x + 2 y)^2 - 0.5 (x - y + 0.3)^2."""
    model = KAN([2, 2, 1], grid_size=4, order=3, grid_range=(-1.0, 1.0), seed=0).double()
    targets = [[lambda t: t, lambda t: t], [lambda t: 2 * t, lambda t: -t + 0.3]], [[lambda t: t**2], [lambda t: -0.5 * t**2]]
    with torch.no_grad():
        h = torch.linspace(-1, 1, 200, dtype=torch.float64).unsqueeze(1).repeat(1, 2)
        for layer, table in zip(model.layers, targets):
            if layer is model.layers[1]:
                h = model.layers[0](torch.rand(400, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
                # grid range [-4, 4] (4 intervals of 2), k = 3 knots beyond each end: covers the activations
                layer.knots.copy_(torch.linspace(-10, 10, layer.knots.shape[1], dtype=torch.float64).repeat(2, 1))
            layer.scale_base.zero_()
            layer.scale_spline.fill_(1.0)
            (basis,) = layer.basis(h)  # (N, in, M)
            for i in range(layer.n_in):
                for j in range(layer.n_out):
                    target = table[i][j](h[:, i]).reshape(1, -1, 1)
                    layer.coef[i, j] = _least_squares(basis[:, i].unsqueeze(0), target, ridge=0.0)[0, :, 0]
    return model


def test_the_formula_read_from_a_network_evaluates_to_it():
    model = polynomial_kan()
    x = torch.rand(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    formula, table, _, _ = formula_from_network(model, x, LIBRARY)
    assert [edge["chosen"] for edge in table] == ["x", "x", "x", "x", "x^2", "x^2"]
    torch.testing.assert_close(formula(x), model(x), rtol=0, atol=1e-9)  # before any fine-tuning
    (expression,) = formula.to_sympy(["x", "y"])
    s, t = sympy.symbols("x y", real=True)
    difference = sympy.expand(expression - ((s + 2 * t) ** 2 - 0.5 * (s - t + 0.3) ** 2))
    assert all(abs(float(c)) < 1e-8 for c in sympy.Poly(difference, s, t).coeffs())


def test_forced_edges_and_the_threshold_decide_the_functions():
    model = polynomial_kan()
    x = torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    _, table, _, _ = formula_from_network(model, x, LIBRARY, force={"1.0.0": "exp"}, threshold=0.6)
    chosen = {edge["edge"]: edge["chosen"] for edge in table}
    assert chosen["1.0.0"] == "exp"
    low = [edge["edge"] for edge in table if edge["importance"] < 0.6 and not edge["forced"]]
    assert low and all(chosen[key] == "0" for key in low)


def tiny_run(cli, tmp_path, tiny_overrides, model="kan"):
    overrides = [o for o in tiny_overrides if not o.startswith("model.hidden")]
    hidden = "model.hidden=[2]" if model == "kan" else "model.hidden=[4]"
    done = cli(["solve", "poisson_sinsin", f"model={model}", hidden, *overrides, "train.plot=false",
                f"hydra.run.dir={tmp_path / model}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path / model


def test_explain_writes_a_measured_honest_report(cli, tmp_path, tiny_overrides):
    run = tiny_run(cli, tmp_path, tiny_overrides)
    done = cli(["explain", str(run), "--functions", "0,x,sin", "--steps", "3"], tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((run / "formula.json").read_text())
    assert (run / "formula.md").is_file() and (run / "explain" / "network.png").is_file()
    assert len(report["edges"]) == 6 and report["network"]["rel_l2"] is not None
    # the reported error of the rounded formula is the error of the printed expression
    from omegaconf import OmegaConf

    from kanpde.problems.poisson import SinSinPoisson
    from kanpde.sampling import evaluation_grid, grid_side

    problem = SinSinPoisson()
    settings = OmegaConf.load(run / "config.yaml").eval
    grid = evaluation_grid(problem.domain, settings.get("points_per_side") or grid_side(settings.n_points, 2))
    expression = sympy.sympify(report["rounded"]["expressions"][0], locals={"x": sympy.Symbol("x", real=True),
                                                                           "y": sympy.Symbol("y", real=True)})
    values = sympy.lambdify(sympy.symbols("x y", real=True), expression, "numpy")(grid[:, 0].numpy(), grid[:, 1].numpy())
    exact = problem.exact(grid)[:, 0].numpy()
    rel_l2 = np.linalg.norm(np.broadcast_to(values, exact.shape) - exact) / np.linalg.norm(exact)
    assert rel_l2 == pytest.approx(report["rounded"]["rel_l2"], rel=1e-6)
    best = min(report["formula"]["rel_l2"], report["rounded"]["rel_l2"])
    if best > report["network"]["rel_l2"]:  # a two-step network is no formula: the verdict must say so
        assert report["verdict"].startswith("no formula as good as the network")
    else:
        assert "at least as good as the network" in report["verdict"]


def run_folder(folder, model) -> str:
    """A run folder as `kanpde solve poisson_sinsin` writes it (config.yaml, checkpoint.pt), without training."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from kanpde.results import save_checkpoint

    with initialize_config_module(config_module="kanpde.configs", version_base="1.3"):
        cfg = compose(config_name="solve", overrides=["problem=poisson_sinsin"])
    folder.mkdir()
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    save_checkpoint(folder / "checkpoint.pt", model)
    return str(folder)


def test_runs_that_cannot_be_explained_get_a_clear_message(tmp_path, capsys):
    from kanpde import MLP
    from kanpde.explain import main

    def fails(*argv) -> str:
        assert main(list(argv)) == 2
        return capsys.readouterr().err

    mlp = run_folder(tmp_path / "mlp", MLP([2, 4, 1], input_range=[(-1, 1), (-1, 1)]).double())
    assert "trained a MLP" in (message := fails(mlp)) and "model=kan" in message
    (tmp_path / "mlp" / "checkpoint.pt").unlink()
    assert "holds no checkpoint.pt" in fails(mlp)
    (tmp_path / "mlp" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "cannot read" in fails(mlp)
    assert "not a run folder" in fails(str(tmp_path / "nowhere"))
    kan = run_folder(tmp_path / "kan", KAN([2, 2, 1], grid_range=[(-1, 1), (-1, 1)]).double())
    assert "cannot force edge '3.0.0'" in fails(kan, "--force", "3.0.0=sin")
    assert "cannot force edge 1.0.0 to 'sinh'" in fails(kan, "--force", "1.0.0=sinh")
    assert "--force wants L.I.J=NAME" in fails(kan, "--force", "1.0.0")
    assert "unknown symbolic functions ['sinh']" in fails(kan, "--functions", "sin,sinh")
    assert "threshold must lie in [0, 1)" in fails(kan, "--threshold", "1.5")


@pytest.mark.slow
@pytest.mark.parametrize("problem, experiment, seed, exact, bound", [
    # measured (README, "Reading the network"): seeds 1 and 2 reach the exact form on sinsin; seed 0's pruned
    # network settles in an inexact representation, and explain says so
    ("poisson_sinsin", "explain_sinsin", 1, "sin(pi*x)*sin(pi*y)", 1e-10),
    ("poisson", "explain_poisson", 0, "sin(pi*x)*sin(pi*y**2)", 1e-8),
])
def test_explain_hands_back_the_exact_solution(cli, tmp_path, problem, experiment, seed, exact, bound):
    """The issue's bar: train [2, 10, 1], sparsify, prune, explain (about 10 minutes)."""
    run = tmp_path / "run"
    done = cli(["solve", problem, f"+experiment={experiment}", f"seed={seed}", "train.plot=false",
                f"hydra.run.dir={run}"], tmp_path, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    done = cli(["explain", str(run)], tmp_path, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((run / "formula.json").read_text())
    symbols = {"x": sympy.Symbol("x", real=True), "y": sympy.Symbol("y", real=True)}
    rounded = sympy.sympify(report["rounded"]["expressions"][0], locals=symbols)
    assert sympy.simplify(rounded - sympy.sympify(exact, locals=symbols)) == 0
    assert min(report["formula"]["rel_l2"], report["rounded"]["rel_l2"]) <= bound
    assert math.isfinite(report["network"]["rel_l2"])
