"""The edge-basis study: every KAN basis and the MLP baseline on Poisson, Helmholtz and Burgers, two seeds.

``python -m kanpde.bases_study --out results/bases`` runs each job as its own ``python -m kanpde solve``
process (one after another, one thread each, so timings do not share the CPU with each other) under
``configs/experiment/bases_study.yaml`` (the per-run budget), with each problem's own points and schedule,
then collates:

* ``runs.csv`` / ``runs.json``: one row per run (problem, model, basis, seed, dtype, parameters, rel_l2,
  mse, steps, training and wall time, status, load average before and after);
* ``bases.md``: the median over seeds per problem and model, and every run;
* ``bases.png``: per problem, rel_l2 against parameters (the last history row at each grid size) and
  against training time (every history row), one colour per model.

Runs live in ``--runs`` (default ``results/multirun/bases``); finished ones are left alone on a rerun
(``train.skip_if_done``), so an interrupted study resumes. ``--collate-only`` skips training.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBLEMS = ("poisson", "helmholtz", "burgers")
MODELS = ("bspline", "chebyshev", "fourier", "rbf", "mlp")  # KAN bases, then the MLP baseline
EXTRA_MODELS = ("chebyshev_tanh",)  # Chebyshev behind a tanh squash instead of the affine range map (--models)
SEEDS = (0, 1)
COLUMNS = ("problem", "model", "seed", "dtype", "parameters", "grid_size", "rel_l2", "mse", "steps", "train_time",
           "wall_time", "status", "load_before", "load_after", "path")
COLORS = {"bspline": "tab:blue", "chebyshev": "tab:green", "fourier": "tab:red", "rbf": "tab:purple",
          "mlp": "tab:orange", "chebyshev_tanh": "tab:olive"}
FINISHED = ("completed", "time_limit")


def overrides(model: str) -> list[str]:
    """The command-line overrides selecting ``model`` (a KAN basis or ``mlp``)."""
    if model == "mlp":
        return ["model=mlp"]
    basis, _, normalize = model.partition("_")
    return [f"model.basis={basis}"] + ([f"model.normalize={normalize}"] if normalize else [])


def run_jobs(runs: Path, problems, models, seeds, log=print) -> None:
    """Train every (problem, model, seed) not yet finished in ``runs``, one process at a time."""
    for problem in problems:
        for model in models:
            for seed in seeds:
                folder = runs / problem / f"{model}_seed{seed}"
                metrics = _read_json(folder / "metrics.json")
                if metrics and metrics.get("status") in FINISHED:
                    continue
                command = [sys.executable, "-m", "kanpde", "solve", problem, "+experiment=bases_study",
                           *overrides(model), f"seed={seed}", f"hydra.run.dir={folder}"]
                run_recorded(command, folder, f"{problem} {model} seed {seed}", log)


def run_recorded(command: list[str], folder: Path, label: str, log=print) -> int:
    """Run ``command`` with one OpenMP thread into ``folder``, recording ``load.json`` (load average before and
    after, seconds, command, exit code) and, when it fails, ``stderr.txt``; returns the exit code."""
    folder.mkdir(parents=True, exist_ok=True)
    load_before, tick = _load(), time.perf_counter()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - tick
    (folder / "load.json").write_text(json.dumps({
        "load_before": load_before, "load_after": _load(), "command_s": seconds,
        "command": " ".join(command[1:]), "returncode": done.returncode}))
    log(f"{label}: exit {done.returncode} after {seconds:.0f} s (load {load_before} -> {_load()})")
    if done.returncode != 0:
        (folder / "stderr.txt").write_text(done.stderr[-20000:])
    return done.returncode


def _load():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collate(runs: Path, problems=PROBLEMS, models=MODELS, seeds=SEEDS) -> tuple[list[dict], dict]:
    """Rows of every planned run (``missing`` where it has no metrics.json) and their history curves."""
    rows, curves = [], {}
    for problem in problems:
        for model in models:
            for seed in seeds:
                folder = runs / problem / f"{model}_seed{seed}"
                metrics, load = _read_json(folder / "metrics.json") or {}, _read_json(folder / "load.json") or {}
                row = {key: "" for key in COLUMNS}
                row.update(problem=problem, model=model, seed=seed, path=str(folder), status="missing")
                measured = set(COLUMNS) - {"problem", "model", "seed", "path"}  # metrics' "model" is the family
                row.update({key: metrics[key] for key in measured if metrics.get(key) is not None})
                row.update(load_before=load.get("load_before", ""), load_after=load.get("load_after", ""))
                rows.append(row)
                curves[(problem, model, seed)] = _history(folder, metrics)
    return rows, curves


def _history(folder: Path, metrics: dict) -> dict:
    """(train time, rel_l2) per history row, and (parameters, rel_l2) at the last row of each grid size."""
    try:
        with (folder / "history.csv").open() as handle:
            history = [r for r in csv.DictReader(handle) if r.get("rel_l2")]
    except OSError:
        return {"time": [], "params": []}
    time_curve = [(float(r["time"]), float(r["rel_l2"])) for r in history]
    last_by_grid: dict[str, float] = {}
    for r in history:
        last_by_grid[r["grid_size"]] = float(r["rel_l2"])
    final_grid, parameters = metrics.get("grid_size"), metrics.get("parameters")
    if not parameters:
        return {"time": time_curve, "params": []}
    if final_grid is None:  # an MLP: one size
        return {"time": time_curve, "params": [(parameters, time_curve[-1][1])] if time_curve else []}
    per_edge = _per_edge(folder)
    edges = parameters / per_edge(int(final_grid))  # widths do not change with the grid
    return {"time": time_curve, "params": [(round(edges * per_edge(int(g))), e) for g, e in last_by_grid.items()]}


def _per_edge(folder: Path):
    """grid size -> trainable scalars per edge of the run's KAN (basis coefficients, w_base, w_spline)."""
    from omegaconf import OmegaConf

    from kanpde.nn.bases import GLOBAL_BASES

    model = OmegaConf.load(folder / "config.yaml").model
    basis = model.get("basis", "bspline")
    if basis == "bspline":
        return lambda grid: grid + int(model.order) + 2
    return lambda grid: GLOBAL_BASES[basis].size(grid) + 2


# --------------------------------------------------------------------------------------------- outputs


def _e(value) -> str:
    return f"{value:.2e}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per (problem, model): medians over the finished seeds of rel_l2, train time and parameters."""
    out = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            done = [r for r in rows if r["problem"] == problem and r["model"] == model and r["status"] in FINISHED]
            if not done:
                out.append({"problem": problem, "model": model, "runs": 0})
                continue
            out.append({"problem": problem, "model": model, "runs": len(done),
                        "rel_l2": statistics.median(r["rel_l2"] for r in done),
                        "rel_l2_worst": max(r["rel_l2"] for r in done),
                        "train_time": statistics.median(r["train_time"] for r in done),
                        "parameters": statistics.median(r["parameters"] for r in done),
                        "time_limited": sum(r["status"] == "time_limit" for r in done)})
    return out


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Edge-basis study: table", "", f"Made by `{command}`; one thread per run, float64, runs one after "
             "another; the budget is `configs/experiment/bases_study.yaml`.", "",
             "## Median over seeds", "",
             "| problem | model | runs | rel_l2 (median) | rel_l2 (worst) | parameters | training time (s) | stopped by "
             "the time cap |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary_rows(rows):
        if not s["runs"]:
            lines.append(f"| {s['problem']} | {s['model']} | 0 | — | — | — | — | — |")
            continue
        lines.append(f"| {s['problem']} | {s['model']} | {s['runs']} | {_e(s['rel_l2'])} | {_e(s['rel_l2_worst'])} | "
                     f"{s['parameters']:.0f} | {s['train_time']:.1f} | {s['time_limited']} |")
    lines += ["", "## Every run", "", "| problem | model | seed | dtype | parameters | grid | rel_l2 | mse | steps | "
              "training (s) | wall (s) | status | load before -> after |", "|---|---|---:|---|---:|---:|---:|---:|---:|"
              "---:|---:|---|---|"]
    for r in rows:
        load = f"{r['load_before']} -> {r['load_after']}" if r["load_before"] != "" else ""
        train = f"{r['train_time']:.1f}" if r["train_time"] != "" else ""
        wall = f"{r['wall_time']:.1f}" if r["wall_time"] != "" else ""
        lines.append(f"| {r['problem']} | {r['model']} | {r['seed']} | {r['dtype']} | {r['parameters']} | "
                     f"{r['grid_size'] if r['grid_size'] is not None else ''} | {_e(r['rel_l2'])} | {_e(r['mse'])} | "
                     f"{r['steps']} | {train} | {wall} | {r['status']} | {load} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, curves: dict, problems, models) -> None:
    """Per problem: rel_l2 against parameters (top) and against training time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(problems), figsize=(4.6 * len(problems), 7.5), squeeze=False)
    for column, problem in enumerate(problems):
        top, bottom = axes[0, column], axes[1, column]
        for model in models:
            for seed_index, ((p, m, seed), curve) in enumerate(
                    (key, c) for key, c in curves.items() if key[0] == problem and key[1] == model):
                label = model if seed_index == 0 else None
                style = "-" if seed_index == 0 else "--"
                if curve["params"]:
                    x, y = zip(*sorted(curve["params"]))
                    top.plot(x, y, style, marker="o", color=COLORS[model], label=label, alpha=0.85)
                if curve["time"]:
                    x, y = zip(*curve["time"])
                    bottom.plot([max(t, 1e-2) for t in x], y, style, color=COLORS[model], label=label, alpha=0.85)
        top.set(title=problem, xscale="log", yscale="log", xlabel="trainable parameters", ylabel="rel_l2")
        bottom.set(xscale="log", yscale="log", xlabel="training time (s)", ylabel="rel_l2")
        for axis in (top, bottom):
            axis.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
    figure.suptitle("Edge bases: rel_l2 at the end of each grid stage (top) and along training (bottom); "
                    "solid seed 0, dashed seed 1", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(out: Path, rows: list[dict], curves: dict, problems, models, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "runs.json").write_text(json.dumps({"command": command, "rows": rows, "summary": summary_rows(rows),
                                               "curves": {"/".join(map(str, k)): v for k, v in curves.items()}},
                                              indent=1))
    (out / "bases.md").write_text(markdown(rows, command))
    plot(out / "bases.png", curves, problems, models)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanpde.bases_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bases"), help="table, plot (default results/bases)")
    parser.add_argument("--runs", type=Path, default=Path("results/multirun/bases"), help="run folders")
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    parser.add_argument("--models", nargs="+", choices=MODELS + EXTRA_MODELS, default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--collate-only", action="store_true", help="only collate the runs already in --runs")
    args = parser.parse_args(argv)
    command = "python -m kanpde.bases_study " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.collate_only:
        run_jobs(args.runs, args.problems, args.models, args.seeds, log=lambda m: print(m, flush=True))
    rows, curves = collate(args.runs, args.problems, args.models, args.seeds)
    write(args.out, rows, curves, args.problems, args.models, command.strip())
    missing = [f"{r['problem']}/{r['model']}_seed{r['seed']}" for r in rows if r["status"] not in FINISHED]
    if missing:
        print(f"not finished: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
