"""The cost of one Levenberg-Marquardt iteration, and where it goes.

One iteration = J^T J and J^T R (forward pass with layer records, backward to the records, Jacobian rows,
blockwise J^T J), Cholesky solves of the damped system and one trial loss per solve. The trial's forward
pass is kept and, when the step is accepted (the usual case), the next iteration's Jacobian starts from it;
its cost is therefore reported under "trial". Timers wrap the objective's pieces in this process only.

``python -m kanpde.bench.lm --out FILE.json`` (``kanpde bench --lm`` runs it and writes the tables).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

CASES = (  # (label, interior points, boundary points, model family, hidden widths, grid size)
    ("Poisson defaults", 2500, 400, "kan", (10,), 20),
    ("KAN paper's points", 10000, 800, "kan", (10,), 20),
    ("Poisson defaults", 2500, 400, "mlp", (20, 20, 20), None),
    ("KAN paper's points", 10000, 800, "mlp", (20, 20, 20), None),
)
# ``--bases``: the default Poisson run's KAN at grid 20 with each edge basis (a global basis touches every
# coefficient, so its Jacobian rows are dense and J^T J is one dense product).
BASES = ("bspline", "chebyshev", "fourier", "rbf")


@contextmanager
def timed(module, names: list[str], totals: dict[str, float]):
    """Add the wall time of every call of ``module.NAME`` to ``totals[NAME]`` while active."""
    originals = {name: getattr(module, name) for name in names}

    def wrap(name, function):
        def timed_call(*args, **kwargs):
            tick = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - tick
        return timed_call

    for name, function in originals.items():
        setattr(module, name, wrap(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def iteration_cost(n_interior: int, n_boundary: int, family: str, hidden, grid_size: int | None, order: int = 5,
                   warmup: int = 5, repeats: int = 15, seed: int = 0, basis: str = "bspline") -> dict:
    """Median cost of an LM iteration on the KAN paper's Poisson problem, split into its parts (ms)."""
    from kanpde import objective as objective_module
    from kanpde.nn import KAN, MLP, count_parameters
    from kanpde.objective import LeastSquares
    from kanpde.optim import LevenbergMarquardt
    from kanpde.problems.poisson import KANPaperPoisson
    from kanpde.sampling import Sampler
    from kanpde.training import collocation

    torch.manual_seed(seed)
    problem = KANPaperPoisson()
    ranges = problem.domain.ranges
    if family == "kan":
        model = KAN([2, *hidden, 1], grid_size=grid_size, order=order, grid_range=ranges, seed=seed, basis=basis)
    else:
        model = MLP([2, *hidden, 1], input_range=ranges, seed=seed)
    model = model.double()
    points = {k: v.double() for k, v in collocation(problem, Sampler("sobol", n_interior, n_boundary, seed=seed)).items()}
    objective = LeastSquares(problem, model, points)
    optimizer = LevenbergMarquardt(model.parameters())
    for _ in range(warmup):
        optimizer.step(objective)
    samples = defaultdict(list)
    for _ in range(repeats):
        totals: dict[str, float] = defaultdict(float)
        with timed(objective_module, ["structured_rows", "generic_rows", "gram"], totals), \
                timed(LeastSquares, ["gauss_newton", "trial_loss"], totals):
            tick = time.perf_counter()
            report = optimizer.step(objective)
            total = time.perf_counter() - tick
        samples["iteration"].append(total)
        samples["jacobian rows (backward + rows)"].append(totals["structured_rows"] + totals["generic_rows"])
        samples["J^T J (blockwise)"].append(totals["gram"])
        samples["trial loss (forward kept for the next Jacobian)"].append(totals["trial_loss"])
        samples["solve (Cholesky) and rest"].append(total - totals["gauss_newton"] - totals["trial_loss"])
        samples["trials"].append(report.info["trials"])
    parts = {name: 1e3 * statistics.median(values) for name, values in samples.items() if name != "trials"}
    return {"n_points": n_interior + n_boundary, "family": family, "widths": [2, *hidden, 1],
            "grid_size": grid_size, "order": order if family == "kan" else None, "basis": basis,
            "parameters": count_parameters(model), "ms": parts,
            "trials_median": statistics.median(samples["trials"]), "repeats": repeats}


def markdown(results: list[dict], info: dict) -> str:
    names = list(results[0]["ms"])
    lines = ["# Cost of one Levenberg-Marquardt iteration", "",
             f"`{info['command']}`; torch {info['torch']}, {info['threads']} thread(s), float64, {info['machine']}, "
             f"median of {results[0]['repeats']} iterations after 5 warm-up ones (KAN paper's Poisson problem, "
             "Sobol points; milliseconds).", "",
             "| points | model | parameters | " + " | ".join(names) + " |",
             "|---:|---|---:|" + "---:|" * len(names)]
    for row in results:
        basis = row.get("basis", "bspline")
        kind = f"order {row['order']}" if basis == "bspline" else basis
        model = f"KAN {row['widths']} grid {row['grid_size']} {kind}" if row["family"] == "kan" \
            else f"MLP {row['widths']} tanh"
        lines.append(f"| {row['n_points']:,} | {model} | {row['parameters']} | "
                     + " | ".join(f"{row['ms'][name]:.1f}" for name in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanpde.bench.lm", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="the first case only, 3 repeats")
    parser.add_argument("--bases", action="store_true",
                        help="instead: the default Poisson KAN (2,900 points, grid 20) with each edge basis; also "
                             "writes the Markdown table beside --out")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    from kanpde.app import set_threads
    from kanpde.bench.report import machine_info

    set_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    if args.bases:
        load_before = machine_info(args.threads)["load_average"]
        results = [dict(label="Poisson defaults", **iteration_cost(2500, 400, "kan", (10,), 20, repeats=repeats,
                                                                     basis=basis)) for basis in BASES]
        info = {"command": "python -m kanpde.bench.lm " + " ".join(sys.argv[1:] if argv is None else argv),
                "torch": torch.__version__, "threads": args.threads,
                "machine": f"load average {load_before} -> {machine_info(args.threads)['load_average']}"}
        with open(args.out.removesuffix(".json") + ".md", "w") as handle:
            handle.write(markdown(results, info))
    else:
        cases = CASES[:1] if args.quick else CASES
        results = [dict(label=label, **iteration_cost(n_i, n_b, family, hidden, grid, repeats=repeats))
                   for label, n_i, n_b, family, hidden, grid in cases]
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
