"""``kanpde compare PROBLEM [overrides]``: a KAN and an MLP-PINN on the same problem, points and budget.

The solve config is composed twice through Hydra's compose API, once with ``model=kan`` (or the KAN the
problem's config picks, e.g. helmholtz's quintic one) and once with ``model=mlp``, plus the user's
overrides (shared by both) and optional per-family ones (``--kan`` and ``--mlp``, for model settings only). Before anything trains, the two configs are checked to share the
problem, sampler and seed (hence the same collocation points), optimizers, stage steps, stopping rule
(``train.max_time``), precision and test set; then both are solved in turn by :func:`kanpde.app.run` into
``results/compare/<problem>/<timestamp>/{kan,mlp}``. A table of parameters, errors, steps, loss
evaluations and time goes to the terminal, compare.csv and compare.md; compare.png overlays both error
histories against training time and against steps.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("kanpde")

FAMILIES = ("kan", "mlp")
# Everything but the model must agree, or the comparison is not fair.
SHARED_KEYS = ("problem", "sampler", "optim", "train", "eval", "seed", "precision", "derivatives", "device",
               "threads")
COLUMNS = ("family", "widths", "grid_size", "parameters", "rel_l2", "mse", "max_abs", "status", "steps",
           "loss_evaluations", "train_time", "time_per_step", "wall_time")
EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class UnfairComparison(ValueError):
    """The two composed configs differ in something other than the model."""


def compose_pair(problem: str, overrides: list[str], family_overrides: dict[str, list[str]]) -> dict[str, DictConfig]:
    """The solve config for each family: ``problem=PROBLEM model=FAMILY *overrides *family_overrides``.

    A user's ./configs is searched too, as ``kanpde solve`` does.
    """
    from hydra import compose, initialize

    from kanpde.cli import PRIMARY_CONFIG, search_setup

    search = search_setup()  # the user's ./configs first, as `kanpde solve` searches
    configs = {}
    with initialize(config_path=None, version_base="1.3"):
        # A problem config may choose its own KAN (helmholtz: kan_quintic); keep it for the KAN side.
        default = compose(config_name=PRIMARY_CONFIG, overrides=[f"problem={problem}", *overrides, *search])
        own_kan = default.model.get("_target_") == "kanpde.nn.build_kan"
        for family in FAMILIES:
            choice = [] if family == "kan" and own_kan else [f"model={family}"]
            configs[family] = compose(config_name=PRIMARY_CONFIG, overrides=[
                f"problem={problem}", *choice, *overrides, *family_overrides.get(family, []), *search])
    return configs


def check_same_budget(configs: dict[str, DictConfig]) -> None:
    """Raise :class:`UnfairComparison` unless the configs share points, optimizers, steps and stopping."""
    plain = {family: OmegaConf.to_container(cfg, resolve=True) for family, cfg in configs.items()}
    kan, mlp = (plain[family] for family in FAMILIES)
    differ = [key for key in SHARED_KEYS if kan.get(key) != mlp.get(key)]

    def budget(cfg):  # grid sizes are KAN-only; optimizers and steps are the budget
        return [(stage["optimizer"], stage["steps"]) for stage in cfg["schedule"]["stages"]]

    if budget(kan) != budget(mlp):
        differ.append("schedule (stage optimizers and steps)")
    if kan["model"].get("seed") != mlp["model"].get("seed"):
        differ.append("model.seed")
    if differ:
        raise UnfairComparison(f"the KAN and MLP configs differ in {', '.join(differ)}; put shared settings "
                               "in the plain overrides and only model settings after --kan / --mlp")


def table_row(family: str, folder: Path, metrics: dict) -> dict:
    from kanpde.results import load_checkpoint

    model, _ = load_checkpoint(folder / "checkpoint.pt")
    steps = metrics.get("steps") or 0
    return {"family": family, "widths": "[" + ",".join(map(str, model.widths)) + "]",
            "grid_size": metrics.get("grid_size") if metrics.get("grid_size") is not None else "",
            **{key: metrics.get(key) for key in ("parameters", "rel_l2", "mse", "max_abs", "status", "steps",
                                                 "loss_evaluations", "train_time", "wall_time")},
            "time_per_step": metrics["train_time"] / steps if steps else math.nan}


def markdown(rows: list[dict]) -> str:
    head = ["family", "widths", "grid", "parameters", "rel_l2", "mse", "status", "steps", "loss evals",
            "train time [s]", "time/step [s]", "wall time [s]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["family"], r["widths"], str(r["grid_size"]), str(r["parameters"]), _e(r["rel_l2"]), _e(r["mse"]),
                 r["status"], str(r["steps"]), str(r["loss_evaluations"]), f"{r['train_time']:.1f}",
                 f"{r['time_per_step']:.3f}", f"{r['wall_time']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _e(value) -> str:
    return f"{value:.3e}" if isinstance(value, (int, float)) and value is not None else "n/a"


def read_history(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = {key: [] for key in ("step", "time", "rel_l2", "mse")}
    for row in rows:
        if row.get("rel_l2") in (None, ""):
            continue
        for key, values in columns.items():
            values.append(float(row[key]))
    return columns


def overlay_plot(path: Path, folders: dict[str, Path], labels: dict[str, str]) -> None:
    """compare.png: rel_l2 and MSE against training time (left) and against steps (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    for family, folder in folders.items():
        history = read_history(folder / "history.csv")
        for row, metric in enumerate(("rel_l2", "mse")):
            for col, axis in enumerate(("time", "step")):
                axes[row, col].semilogy(history[axis], history[metric], label=labels[family],
                                        color={"kan": "tab:blue", "mlp": "tab:orange"}[family])
    for row, metric in enumerate(("relative L2 error", "MSE")):
        axes[row, 0].set_ylabel(metric)
        for col, axis in enumerate(("training time [s] (evaluation off the clock)", "optimizer step")):
            axes[row, col].set_xlabel(axis)
            axes[row, col].grid(True, which="both", lw=0.3, alpha=0.5)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _warm_up() -> None:
    """Pay one-time costs before either run: the first optimizer imports torch._dynamo (~10 s on a loaded
    machine), which would otherwise land in the wall time of whichever family runs first."""
    import torch

    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kanpde compare", description="Solve PROBLEM with a KAN and an MLP-PINN on the same "
                                     "collocation points, optimizer steps and stopping rule; print and save a table "
                                     "and an overlay of their error histories.",
                                     epilog="Example: kanpde compare poisson train.max_time=120 "
                                            "--kan model.hidden=[10] --mlp model.hidden=[100,100,100,100]")
    parser.add_argument("problem", help="problem name (see `kanpde list`)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to both runs")
    parser.add_argument("--kan", action="append", default=[], metavar="OVERRIDE",
                        help="a model override for the KAN only (repeatable), e.g. model.hidden=[5]")
    parser.add_argument("--mlp", action="append", default=[], metavar="OVERRIDE",
                        help="a model override for the MLP only (repeatable), e.g. model.hidden=[50,50]")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/compare/<problem>/<timestamp>)")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from kanpde.app import ConfigError, add_user_paths, run
    from kanpde.cli import known_problems

    args = parse(list(argv or []))
    if args.problem not in known_problems():
        print(f"kanpde compare: unknown problem {args.problem!r}. Known problems: {', '.join(known_problems())}.")
        return EXIT_USAGE
    for override in [*args.overrides, *args.kan, *args.mlp]:
        if override.split("=", 1)[0].lstrip("+~") in ("model", "problem"):
            print(f"kanpde compare: {override!r} is set by compare itself; give the problem as the first argument "
                  "and model settings as --kan model.KEY=VALUE / --mlp model.KEY=VALUE")
            return EXIT_USAGE
    for family, extra in (("kan", args.kan), ("mlp", args.mlp)):
        if any(not override.lstrip("+~").startswith("model.") for override in extra):
            print(f"kanpde compare: --{family} takes model overrides only (model.KEY=VALUE), got {extra}")
            return EXIT_USAGE
    add_user_paths()
    try:
        configs = compose_pair(args.problem, args.overrides, {"kan": args.kan, "mlp": args.mlp})
        check_same_budget(configs)
    except (HydraException, OmegaConfBaseException, UnfairComparison) as error:
        print(f"kanpde compare: invalid configuration: {error}")
        return EXIT_USAGE
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = args.out or Path("results") / "compare" / args.problem / stamp
    _warm_up()
    rows, folders, code = [], {}, 0
    for family in FAMILIES:
        folder = out / family
        tick = time.perf_counter()
        try:
            metrics = run(configs[family], folder, problem_name=args.problem)
        except ConfigError as error:
            print(f"kanpde compare: invalid configuration for the {family.upper()}: {error}")
            return EXIT_USAGE
        log.info("%s run took %.1f s in total", family, time.perf_counter() - tick)
        folders[family] = folder
        rows.append(table_row(family, folder, metrics))
        if metrics["status"] == "interrupted":
            code = EXIT_INTERRUPTED
            break
        if metrics["status"] == "diverged":
            code = EXIT_DIVERGED
    text = markdown(rows)
    shared = configs["kan"]
    header = (f"# {args.problem}: KAN vs MLP\n\nSame points (sampler {shared.sampler.method}, "
              f"{shared.sampler.n_interior} interior, seed {shared.seed}), same stages "
              f"{[(s.optimizer, s.steps) for s in shared.schedule.stages]}, train.max_time={shared.train.max_time}, "
              f"{shared.precision}. Time per step = train time / steps; evaluation is off the clock.\n\n")
    (out / "compare.md").write_text(header + text)
    with open(out / "compare.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    overlay_plot(out / "compare.png", folders, {row["family"]: f"{row['family'].upper()} {row['widths']} "
                                                f"({row['parameters']} parameters)" for row in rows})
    print(text, end="")
    print(f"wrote {out / 'compare.csv'}, {out / 'compare.md'} and {out / 'compare.png'}")
    return code
