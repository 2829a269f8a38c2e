"""``kanpde explain RUN_DIR``: read a trained KAN as functions, and hand back its solution as a formula.

Steps, on the run's own problem and collocation points:
1. edge importance (:mod:`kanpde.prune`) and a diagram of every edge function (``explain/network.png``);
2. per edge, symbolic candidates y ~ c f(a x + b) + d (:mod:`kanpde.symbolic`); edges below the importance
   threshold become constants, the others take their best-scoring candidate (or the function a user forces);
3. the resulting :class:`~kanpde.formula.FormulaKAN` is fine-tuned on the PDE loss by Levenberg-Marquardt,
   through the same training loop as the network;
4. the formula, simplified by sympy, and a copy with its constants rounded to simple numbers (p/q, p/q pi),
   are each measured against the exact or reference solution (rel_l2) and on the PDE loss, beside the
   network itself. ``formula.json`` and ``formula.md`` say which is better; a formula worse than the network
   is reported as such and the network stays the answer.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import sympy
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kanpde.formula import FormulaKAN, round_constants, within
from kanpde.nn import KAN
from kanpde.objective import LeastSquares
from kanpde.optim import LevenbergMarquardt
from kanpde.plots import network_diagram
from kanpde.prune import edge_activations, edge_scores
from kanpde.results import json_safe
from kanpde.symbolic import Candidate, SymbolicFunction, fit_edge, library_with
from kanpde.training import Stage, collocation, train

log = logging.getLogger("kanpde")

EXIT_USAGE = 2


class ExplainError(ValueError):
    """The run folder cannot be explained; the message says why and what to do."""


def load_run(run_dir: str | Path):
    """(config, problem, KAN) of a run folder, checked."""
    from kanpde.app import ConfigError, add_user_paths, build_problem
    from kanpde.results import CHECKPOINT, load_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExplainError(f"{run_dir} is not a run folder (no config.yaml); give the folder `kanpde solve` wrote")
    if not (run_dir / CHECKPOINT).is_file():
        raise ExplainError(f"{run_dir} holds no {CHECKPOINT}: the run ended before its first checkpoint; "
                           "rerun `kanpde solve` to the end of a stage")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    try:
        model, _ = load_checkpoint(run_dir / CHECKPOINT)
    except Exception as error:  # a truncated or foreign file
        raise ExplainError(f"cannot read {run_dir / CHECKPOINT}: {error}") from None
    if not isinstance(model, KAN):
        raise ExplainError(f"{run_dir} trained a {type(model).__name__}: only a KAN's edges are functions one can "
                           "read; explain a run of model=kan")
    add_user_paths()
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    try:
        problem = build_problem(cfg, metrics.get("problem"))
    except ConfigError as error:
        raise ExplainError(f"cannot rebuild the run's problem: {error}") from None
    return cfg, problem, model.to(torch.float64)


def explain(run_dir: str | Path, *, threshold: float = 0.05, functions=None,
            extra: Mapping[str, SymbolicFunction] | None = None, force: Mapping[str, str] | None = None,
            steps: int = 100, complexity_weight: float = 0.5, tolerance: float = 1e-6,
            simplify_seconds: float = 120.0) -> dict:
    """Explain the KAN of ``run_dir``; writes ``explain/`` and ``formula.json``/``formula.md`` there.

    Args:
        threshold: edges whose relative importance is below this become constants.
        functions: names from the default library to try (all by default); ``extra`` adds your own.
        force: ``{"layer.in.out": name}`` fixes those edges to a function, e.g. ``{"1.0.0": "sin"}``.
        steps: Levenberg-Marquardt iterations fine-tuning the formula's constants on the PDE loss.
        complexity_weight: score per unit of complexity when ranking candidates (see :func:`fit_edge`).
        tolerance: relative tolerance for recognising a constant as p/q or p/q pi when rounding.
        simplify_seconds: time allowed to sympy for each simplification (a large formula can take hours);
            past it the formula is reported unsimplified.
    Returns what ``formula.json`` holds.
    """
    if not 0.0 <= threshold < 1.0:
        raise ExplainError(f"threshold must lie in [0, 1) (relative edge importance), got {threshold!r}")
    if int(steps) != steps or steps < 0:
        raise ExplainError(f"steps must be an integer >= 0, got {steps!r}")
    try:
        library = library_with(extra, functions)
    except ValueError as error:
        raise ExplainError(str(error)) from None
    run_dir = Path(run_dir)
    cfg, problem, model = load_run(run_dir)
    forced = _parse_force(force or {}, model, library)
    start = time.perf_counter()
    sampler = instantiate(cfg.sampler)
    points = {k: v.to(torch.float64) for k, v in collocation(problem, sampler).items()}
    samples = torch.cat(list(points.values()))
    evaluation = _evaluation(cfg, problem)
    constraint = getattr(problem, "hard_constraint", None)

    formula, table, activations, scores = formula_from_network(model, samples, library, threshold=threshold,
                                                               force=forced, complexity_weight=complexity_weight)
    folder = run_dir / "explain"
    folder.mkdir(exist_ok=True)
    network_diagram(folder / "network.png", activations, scores, problem.variables, problem.outputs,
                    formula.functions)
    fit_time = time.perf_counter() - start
    before = _measure(problem, formula, points, evaluation, constraint)
    tick = time.perf_counter()
    if steps > 0 and len(formula.constants):
        result = train(problem, formula, [Stage("lm", int(steps))], {"lm": functools.partial(LevenbergMarquardt)},
                       sampler, evaluation, engine="forward", grid_update=None, progress=False)
        formula = result.model
    tune_time = time.perf_counter() - tick
    network = _measure(problem, model, points, evaluation, constraint)
    fitted = _measure(problem, formula, points, evaluation, constraint)
    expressions = formula.to_sympy(problem.variables)
    simplified = [within(simplify_seconds, sympy.simplify, e) for e in expressions]
    complete = all(e is not None for e in simplified)
    simplified = [e if s is None else s for e, s in zip(expressions, simplified)]
    rounded = [within(simplify_seconds, round_constants, e, tolerance) for e in expressions]
    complete = complete and all(r is not None for r in rounded)
    rounded = [round_constants(e, tolerance, simplify=False) if r is None else r for e, r in zip(expressions, rounded)]
    if not complete:
        log.warning("sympy did not simplify the formula within %g s: it is reported as fitted", simplify_seconds)
    rounded_model = ExpressionModel(rounded, problem.variables)
    rounded_metrics = _measure(problem, rounded_model, points, evaluation, constraint, engine="autograd")
    report = {
        "run": str(run_dir), "problem": problem.name, "widths": model.widths, "threshold": threshold,
        "network": network,
        "formula": {"expressions": [str(e) for e in simplified], "latex": [sympy.latex(e) for e in simplified],
                    "constants": len(formula.constants), "simplified": complete, "before_fine_tuning": before,
                    **fitted},
        "rounded": {"expressions": [str(e) for e in rounded], "latex": [sympy.latex(e) for e in rounded],
                    "tolerance": tolerance, **rounded_metrics},
        "edges": table, "fine_tuning_steps": int(steps), "fit_time": fit_time, "fine_tune_time": tune_time,
        "constraint": None if constraint is None else "the solution is the problem's hard_constraint applied "
                                                       "to these expressions (the network's output)",
    }
    report["verdict"] = _verdict(report)
    (run_dir / "formula.json").write_text(json.dumps(json_safe(report), indent=2))
    (run_dir / "formula.md").write_text(_markdown(report))
    log.info("%s", report["verdict"])
    return report


def formula_from_network(model: KAN, samples: torch.Tensor, library: Mapping[str, SymbolicFunction], *,
                         threshold: float = 0.05, force: Mapping[str, str] | None = None,
                         complexity_weight: float = 0.5):
    """Each edge of ``model`` replaced by its best symbolic fit over its inputs at ``samples`` (N, d).

    Returns (formula, table, activations, scores): the :class:`FormulaKAN`, one dict per edge (importance,
    chosen function, best candidates), and the per-layer edge inputs/outputs and importances as arrays.
    Edges less important than ``threshold`` become constants; ``force`` maps ``"layer.in.out"`` to a function.
    """
    force = dict(force or {})
    with torch.no_grad():
        activations = [(h.cpu().numpy(), phi.cpu().numpy()) for h, phi in edge_activations(model, samples)]
        scores = [s.cpu().numpy() for s in edge_scores(model, samples)]
    edges, table = [], []
    for layer, ((h, phi), score) in enumerate(zip(activations, scores)):
        rows = []
        for i in range(phi.shape[1]):
            row = []
            for j in range(phi.shape[2]):
                key = f"{layer}.{i}.{j}"
                if score[i, j] < threshold and key not in force:
                    candidates = [Candidate("0", 1.0, 0.0, 0.0, float(phi[:, i, j].mean()), 0.0, 0.0, 0.0)]
                else:
                    names = {force[key]: library[force[key]]} if key in force else library
                    candidates = fit_edge(h[:, i], phi[:, i, j], names, complexity_weight=complexity_weight)
                row.append(candidates[0])
                table.append({"edge": key, "importance": float(score[i, j]), "forced": key in force,
                              "chosen": candidates[0].function, "candidates": [c.as_dict() for c in candidates[:5]]})
            rows.append(row)
        edges.append(rows)
    return FormulaKAN(model.widths, edges, library), table, activations, scores


class ExpressionModel(torch.nn.Module):
    """sympy expressions in ``variables`` evaluated with torch (derivatives by autograd): (N, d) -> (N, out)."""

    def __init__(self, expressions, variables):
        super().__init__()
        symbols = sympy.symbols(list(variables), real=True)
        self.functions = [sympy.lambdify(symbols, e, modules="torch") for e in expressions]
        self.register_buffer("anchor", torch.zeros((), dtype=torch.float64))  # gives the model a dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = []
        for function in self.functions:
            value = function(*x.unbind(dim=1))
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            columns.append(value.expand(len(x)) + 0 * x[:, 0])  # constants still depend on x for autograd
        return torch.stack(columns, dim=1)


def _measure(problem, model, points, evaluation, constraint, engine: str = "forward") -> dict:
    """rel_l2, mse, max_abs against the solution (when known) and the PDE loss at the collocation points."""
    needs_grad = engine == "autograd"
    sets = {k: v.detach().requires_grad_(needs_grad) for k, v in points.items()}
    objective = LeastSquares(problem, model, sets, engine=engine)
    try:
        loss = float(objective.loss())
    except (RuntimeError, ValueError) as error:  # e.g. a rounded formula that is constant: no graph
        log.warning("PDE loss of %s not measured: %s", type(model).__name__, error)
        loss = math.nan
    measured = {"pde_loss": loss}
    if evaluation is not None:
        measured.update(evaluation.errors(model, constraint))
    return measured


def _evaluation(cfg, problem):
    from kanpde.app import make_evaluation

    evaluation = make_evaluation(problem, cfg.eval.get("points_per_side"), cfg.eval.get("n_points", 10201))
    if evaluation is None:
        return None
    return type(evaluation)(evaluation.points.to(torch.float64), evaluation.values.to(torch.float64))


def _parse_force(force: Mapping[str, str], model: KAN, library) -> dict[str, str]:
    parsed = {}
    for key, name in force.items():
        try:
            layer, i, j = (int(part) for part in str(key).split("."))
            valid = 0 <= layer < len(model.layers) and 0 <= i < model.widths[layer] and 0 <= j < model.widths[layer + 1]
        except ValueError:
            valid = False
        if not valid:
            raise ExplainError(f"cannot force edge {key!r}: name edges 'layer.in.out' within widths {model.widths}")
        if name not in library:
            raise ExplainError(f"cannot force edge {key} to {name!r}: not in the library {sorted(library)}")
        parsed[f"{layer}.{i}.{j}"] = name
    return parsed


def _better(candidate: dict, network: dict) -> bool:
    key = "rel_l2" if "rel_l2" in network else "pde_loss"
    value, reference = candidate.get(key, math.nan), network.get(key, math.nan)
    return math.isfinite(value) and value <= reference


def _verdict(report: dict) -> str:
    network, fitted, rounded = report["network"], report["formula"], report["rounded"]
    key = "rel_l2" if "rel_l2" in network else "pde_loss"
    best = "rounded" if _better(rounded, fitted) or not math.isfinite(fitted.get(key, math.nan)) else "formula"
    chosen = report[best]
    if _better(chosen, network):
        return (f"the {'rounded ' if best == 'rounded' else ''}formula {chosen['expressions']} is at least as good "
                f"as the network: {key} {chosen[key]:.3e} against the network's {network[key]:.3e}")
    which = "rounded" if best == "rounded" else "fine-tuned"
    return (f"no formula as good as the network was found: best {key} {chosen.get(key, math.nan):.3e} (the "
            f"{which} formula) against the network's {network[key]:.3e}; keep the spline network")


def _markdown(report: dict) -> str:
    lines = [f"# Formula for {report['problem']} ({report['run']})", "", report["verdict"], "",
             "| | expression | rel_l2 | mse | PDE loss |", "|---|---|---|---|---|"]
    for name in ("network", "formula", "rounded"):
        entry = report[name]
        text = "; ".join(f"`{e}`" for e in entry.get("expressions", [])) or f"KAN {report['widths']}"
        lines.append(f"| {name} | {text} | {_fmt(entry.get('rel_l2'))} | {_fmt(entry.get('mse'))} | "
                     f"{_fmt(entry.get('pde_loss'))} |")
    lines += ["", "LaTeX (rounded): " + "; ".join(f"${e}$" for e in report["rounded"]["latex"]), "",
              "| edge | importance | chosen | best candidates (1 - r^2) |", "|---|---|---|---|"]
    for edge in report["edges"]:
        best = ", ".join(f"{c['function']} ({1 - c['r2']:.1e})" for c in edge["candidates"][:3])
        lines.append(f"| {edge['edge']} | {edge['importance']:.3f} | {edge['chosen']}"
                     f"{' (forced)' if edge['forced'] else ''} | {best} |")
    if report["constraint"]:
        lines += ["", f"Note: {report['constraint']}."]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3e}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kanpde explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run folder written by `kanpde solve` (with checkpoint.pt)")
    parser.add_argument("--threshold", type=float, default=0.05, help="edges less important than this become constants")
    parser.add_argument("--functions", default=None, help="comma-separated library functions to try (default: all)")
    parser.add_argument("--force", action="append", default=[], metavar="L.I.J=NAME",
                        help="fix an edge to a function, e.g. --force 1.0.0=sin (repeatable)")
    parser.add_argument("--steps", type=int, default=100, help="Levenberg-Marquardt steps fine-tuning the constants")
    parser.add_argument("--complexity-weight", type=float, default=0.5, help="score per unit of complexity")
    args = parser.parse_args(argv)
    force = {}
    for item in args.force:
        key, _, name = item.partition("=")
        if not name:
            print(f"kanpde explain: --force wants L.I.J=NAME, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        force[key] = name
    functions = args.functions.split(",") if args.functions else None
    try:
        report = explain(args.run_dir, threshold=args.threshold, functions=functions, force=force, steps=args.steps,
                         complexity_weight=args.complexity_weight)
    except ExplainError as error:
        print(f"kanpde explain: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(report["verdict"])
    print(f"written: {Path(args.run_dir) / 'formula.md'}, formula.json, explain/network.png")
    return 0
