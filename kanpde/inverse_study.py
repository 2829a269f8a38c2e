"""The inverse-problem study: identified coefficients of Burgers' equation and of the heat equation, per seed and noise.

``python -m kanpde.inverse_study --out results/inverse`` runs each job as its own ``python -m kanpde solve``
process, one after another with one thread (so timings do not share the CPU with each other), with the
problems' own defaults: ``burgers_inverse`` (l1, l2 from 2,000 observations, Raissi et al.'s setup) and
``heat_inverse`` (alpha from 500), clean and with 1% noise, seeds 0-2 (the seed draws the observations, their
noise and the network). It then writes ``runs.json`` (one row per run: problem, noise, seed, dtype, parameters,
each unknown's value and relative error, rel_l2 of the solution, training and wall time, status, load average)
and ``inverse.md`` (the table). Runs live in ``--runs`` (default ``results/multirun/inverse``); finished ones
are left alone on a rerun, so an interrupted study resumes. ``--collate-only`` skips training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from kanpde.bases_study import FINISHED, _e, _read_json, run_recorded

PROBLEMS = ("burgers_inverse", "heat_inverse")
MODELS = ("kan", "mlp")  # the problem's default KAN; the MLP baseline (configs/model/mlp.yaml) on the same setup
NOISES = (0.0, 0.01)
SEEDS = (0, 1, 2)


def jobs(problems, models, noises, seeds):
    return itertools.product(problems, models, noises, seeds)


def folder_of(runs: Path, problem: str, model: str, noise: float, seed: int) -> Path:
    prefix = "" if model == "kan" else f"{model}_"
    return runs / problem / f"{prefix}noise{noise:g}_seed{seed}"


def run_jobs(runs: Path, problems=PROBLEMS, models=("kan",), noises=NOISES, seeds=SEEDS, log=print) -> None:
    """Train every (problem, model, noise, seed) not yet finished in ``runs``, one process at a time."""
    for problem, model, noise, seed in jobs(problems, models, noises, seeds):
        folder = folder_of(runs, problem, model, noise, seed)
        metrics = _read_json(folder / "metrics.json")
        if metrics and metrics.get("status") in FINISHED:
            continue
        command = [sys.executable, "-m", "kanpde", "solve", problem, f"problem.noise={noise}", f"seed={seed}",
                   *([] if model == "kan" else [f"model={model}"]),
                   "threads=1", "train.progress=false", f"hydra.run.dir={folder}"]
        run_recorded(command, folder, f"{problem} {model} noise {noise:g} seed {seed}", log)


def collate(runs: Path, problems=PROBLEMS, models=MODELS, noises=NOISES, seeds=SEEDS) -> list[dict]:
    rows = []
    for problem, model, noise, seed in jobs(problems, models, noises, seeds):
        folder = folder_of(runs, problem, model, noise, seed)
        metrics = _read_json(folder / "metrics.json")
        if not metrics:
            continue
        load = _read_json(folder / "load.json") or {}
        row = {"problem": problem, "model": model, "noise": noise, "seed": seed, "dtype": metrics.get("dtype"),
               "parameters": metrics.get("parameters"), "rel_l2": metrics.get("rel_l2"),
               "steps": metrics.get("steps"), "train_time": metrics.get("train_time"),
               "wall_time": metrics.get("wall_time"), "status": metrics.get("status"),
               "load_before": load.get("load_before"), "load_after": load.get("load_after"),
               "unknowns": metrics.get("unknowns", {})}
        rows.append(row)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    header = ("| problem | model | noise | seed | identified (true) | relative errors | solution rel_l2 | params | dtype "
              "| steps | train s | wall s | load | status |")
    lines = [f"Produced by `{command}` (one thread per run, runs one after another).", "", header,
             "|---" * 14 + "|"]
    for row in rows:
        unknowns = row["unknowns"]
        identified = ", ".join(f"{name} = {u['value']:.7g} ({u.get('true', float('nan')):.7g})"
                               for name, u in unknowns.items())
        errors = ", ".join(f"{name}: {100 * u['rel_error']:.3g}%" for name, u in unknowns.items() if "rel_error" in u)
        load = row["load_before"][0] if row["load_before"] else ""
        seconds = [f"{row[key]:.0f}" if isinstance(row[key], (int, float)) else "—" for key in ("train_time", "wall_time")]
        lines.append(f"| {row['problem']} | {row['model']} | {100 * row['noise']:g}% | {row['seed']} | {identified} | "
                     f"{errors} | {_e(row['rel_l2'])} | {row['parameters']} | {row['dtype']} | {row['steps']} | "
                     f"{seconds[0]} | {seconds[1]} | {load} | {row['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanpde.inverse_study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/inverse"), help="where runs.json and inverse.md go")
    parser.add_argument("--runs", type=Path, default=Path("results/multirun/inverse"), help="the run folders")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--models", nargs="+", default=["kan"], choices=MODELS, help="kan, and mlp for the baseline")
    parser.add_argument("--noises", nargs="+", type=float, default=list(NOISES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--collate-only", action="store_true", help="collate the finished runs, train nothing")
    args = parser.parse_args(argv)
    if not args.collate_only:
        run_jobs(args.runs, args.problems, args.models, args.noises, args.seeds)
    rows = collate(args.runs, args.problems, MODELS, args.noises, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs.json").write_text(json.dumps(rows, indent=1))
    command = "python -m kanpde.inverse_study " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "inverse.md").write_text(markdown(rows, command.strip()))
    print(markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
