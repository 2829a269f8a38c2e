"""``kanpde scaling RESULTS_DIR``: collate a sweep's runs into runs.csv and plot error against parameters.

Every folder under ``RESULTS_DIR`` that holds a run's resolved config (``config.yaml``, or Hydra's
``.hydra/config.yaml`` for a job that died before writing it) is one run. Finished runs (status
``completed``, or ``time_limit`` when ``train.max_time`` stopped them) are plotted; the others are reported
as gaps (``missing``: no metrics.json yet; ``failed``: diverged or interrupted) and still listed in
runs.csv, so a partial sweep collates. The figure follows the KAN paper's scaling plot (Liu et al. 2024,
figure 3.3): log-log error against trainable parameters, one colour per model family, a marker per KAN
width or MLP depth, the median over seeds with the min-max spread, and a power law fitted to the family's
medians (``scipy.stats.linregress`` on log10) whose slope is in the legend.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger("kanpde")

FINISHED = ("completed", "time_limit")  # statuses whose errors are results; others are gaps
COLUMNS = ("family", "hidden", "grid_size", "parameters", "seed", "rel_l2", "mse", "max_abs", "steps",
           "train_time", "status", "path")
METRICS = ("rel_l2", "mse")
COLORS = {"kan": "tab:blue", "mlp": "tab:orange"}
MARKERS = "osD^v<>px*h"


# --------------------------------------------------------------------------------------------- collation


def run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a run's config, sorted."""
    found = {path.parent for path in root.rglob("config.yaml") if path.parent.name != ".hydra"}
    found |= {path.parent.parent for path in root.rglob(".hydra/config.yaml")}
    return sorted(found)


def family_of(target: str | None) -> str:
    """``kanpde.nn.build_kan`` -> ``kan``; a user's ``pkg.MyNet`` -> ``mynet``."""
    name = (target or "unknown").rsplit(".", 1)[-1].lower()
    return name.removeprefix("build_")


def read_run(folder: Path, root: Path) -> dict:
    """One runs.csv row for ``folder``: its config's model, and its metrics when it has them."""
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        config_path = folder / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config_path)
    model = cfg.get("model") or {}
    hidden = model.get("hidden")
    row = {key: "" for key in COLUMNS}
    row.update(family=family_of(model.get("_target_")), seed=cfg.get("seed", ""),
               hidden="[" + ",".join(str(width) for width in hidden) + "]" if hidden is not None else "",
               path=str(folder.relative_to(root)) or ".")
    if "grid_size" in model:  # the planned final grid; metrics.json has the one reached
        stage_grids = [s.get("grid_size") for s in (cfg.get("schedule") or {}).get("stages", [])]
        row["grid_size"] = next((g for g in reversed(stage_grids) if g is not None), model.grid_size)
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        row["status"] = "missing"
        return row
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as error:
        row["status"] = f"unreadable metrics.json ({error})"
        return row
    row["family"] = metrics.get("model") or row["family"]
    for key in ("parameters", "rel_l2", "mse", "max_abs", "steps", "train_time", "status", "seed"):
        if metrics.get(key) is not None:
            row[key] = metrics[key]
    if metrics.get("grid_size") is not None:
        row["grid_size"] = metrics["grid_size"]
    return row


def collate(root: str | Path) -> tuple[list[dict], list[dict]]:
    """(rows, gaps): every run under ``root`` as a runs.csv row, and the rows that are not finished."""
    root = Path(root)
    rows = [read_run(folder, root) for folder in run_folders(root)]
    gaps = [row for row in rows if row["status"] not in FINISHED]
    return rows, gaps


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------- aggregation


@dataclass
class Point:
    """One configuration (family, hidden, grid size): its parameters and error statistics over seeds."""

    family: str
    hidden: str
    grid_size: int | str
    parameters: int
    seeds: int
    median: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]

    @property
    def series(self) -> str:
        """The sub-series the point is drawn in: a KAN's width (grids vary along it), an MLP's depth."""
        if self.grid_size != "":
            return f"{self.family.upper()} {self.hidden}"
        return f"{self.family.upper()} depth {self.hidden.count(',') + 1}"


def aggregate(rows: list[dict]) -> list[Point]:
    """Finished runs grouped by configuration, medians and min-max over seeds, sorted by parameters."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["status"] in FINISHED and row["parameters"] != "" and _finite(row.get("rel_l2")):
            groups[(row["family"], row["hidden"], row["grid_size"])].append(row)
    points = []
    for (family, hidden, grid_size), members in groups.items():
        stats = {key: [float(m[key]) for m in members if _finite(m.get(key))] for key in METRICS}
        points.append(Point(family, hidden, grid_size, int(statistics.median(int(m["parameters"]) for m in members)),
                            len(members), {k: statistics.median(v) for k, v in stats.items() if v},
                            {k: min(v) for k, v in stats.items() if v}, {k: max(v) for k, v in stats.items() if v}))
    return sorted(points, key=lambda p: (p.family, p.parameters))


def fit_power_law(points: list[Point], metric: str) -> tuple[float, float, float]:
    """(slope, intercept, r) of log10(median error) against log10(parameters); NaNs with < 2 sizes."""
    from scipy.stats import linregress

    pairs = [(math.log10(p.parameters), math.log10(p.median[metric])) for p in points
             if metric in p.median and p.median[metric] > 0]
    if len({x for x, _ in pairs}) < 2:
        return math.nan, math.nan, math.nan
    fit = linregress([x for x, _ in pairs], [y for _, y in pairs])
    return float(fit.slope), float(fit.intercept), float(fit.rvalue)


def by_family(points: list[Point]) -> dict[str, list[Point]]:
    families: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        families[point.family].append(point)
    return dict(families)


# ----------------------------------------------------------------------------------------------- figures


def plot(path: Path, points: list[Point], title: str = "") -> None:
    """scaling.png: median error (min-max over seeds) against trainable parameters, log-log, with fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = by_family(points)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4.8))
    for ax, metric in zip(axes, METRICS):
        for index, (family, members) in enumerate(sorted(families.items())):
            color = COLORS.get(family, f"C{index + 2}")
            series: dict[str, list[Point]] = defaultdict(list)
            for point in members:
                series[point.series].append(point)
            for number, (label, line) in enumerate(sorted(series.items(), key=lambda kv: _width_key(kv[0]))):
                line = [p for p in line if metric in p.median]
                x = [p.parameters for p in line]
                y = [p.median[metric] for p in line]
                spread = [[p.median[metric] - p.low[metric] for p in line], [p.high[metric] - p.median[metric] for p in line]]
                ax.errorbar(x, y, yerr=spread, color=color, marker=MARKERS[number % len(MARKERS)], ms=5, lw=0.8,
                            alpha=0.75, capsize=2, label=label)
            slope, intercept, r = fit_power_law(members, metric)
            if math.isfinite(slope):
                ends = [min(p.parameters for p in members), max(p.parameters for p in members)]
                ax.plot(ends, [10 ** (intercept + slope * math.log10(n)) for n in ends], color=color, lw=2.2,
                        ls="--", label=f"{family.upper()} fit: $N^{{{slope:.2f}}}$ (r={r:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trainable parameters N")
        ax.set_ylabel({"rel_l2": "relative L2 error", "mse": "MSE (L2 error squared)"}[metric])
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _width_key(label: str):
    digits = "".join(ch if ch.isdigit() else " " for ch in label).split()
    return (label.split()[0], [int(d) for d in digits])


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ report


def summary(points: list[Point], rows: list[dict], gaps: list[dict]) -> str:
    """Markdown: per-configuration medians, fitted slopes, and the gaps of the sweep."""
    lines = ["| family | hidden | grid | parameters | seeds | rel_l2 median [min, max] | mse median |",
             "|---|---|---|---:|---:|---|---:|"]
    for p in points:
        lines.append(f"| {p.family} | {p.hidden} | {p.grid_size} | {p.parameters} | {p.seeds} | "
                     f"{p.median['rel_l2']:.2e} [{p.low['rel_l2']:.2e}, {p.high['rel_l2']:.2e}] | "
                     f"{p.median.get('mse', math.nan):.2e} |")
    lines += ["", "| family | slope rel_l2 (r) | slope mse (r) | parameter range |", "|---|---|---|---|"]
    for family, members in sorted(by_family(points).items()):
        fits = [fit_power_law(members, metric) for metric in METRICS]
        cells = [f"{s:.2f} ({r:.2f})" if math.isfinite(s) else "n/a" for s, _, r in fits]
        lines.append(f"| {family} | {cells[0]} | {cells[1]} | "
                     f"{min(p.parameters for p in members)}-{max(p.parameters for p in members)} |")
    capped = sum(row["status"] == "time_limit" for row in rows)
    lines += ["", (f"{len(rows)} runs: {len(rows) - len(gaps)} finished ({capped} stopped by train.max_time), "
                   f"{len(gaps)} gaps.")]
    lines += [f"- {row['status']}: {row['path']}" for row in gaps]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kanpde scaling", description="Collate every run under RESULTS_DIR into runs.csv "
                                     "and scaling.md, report missing and failed runs, and plot error against "
                                     "trainable parameters (log-log, fitted power laws) into scaling.png.",
                                     epilog="Example: kanpde scaling results/multirun/scaling_poisson "
                                            "--out results/scaling")
    parser.add_argument("results_dir", type=Path, help="a sweep folder (searched recursively for runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where runs.csv, scaling.md and scaling.png go (default: RESULTS_DIR)")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.print_usage()
        print(f"kanpde scaling: {args.results_dir} is not a folder; give the sweep folder of a "
              "`kanpde solve ... -m` run (e.g. results/multirun/<date>)")
        return 2
    rows, gaps = collate(args.results_dir)
    if not rows:
        print(f"kanpde scaling: no runs under {args.results_dir} (no config.yaml or .hydra/config.yaml found)")
        return 2
    out = args.out or args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", rows)
    points = aggregate(rows)
    text = summary(points, rows, gaps)
    (out / "scaling.md").write_text(text)
    print(text, end="")
    for row in gaps:
        log.warning("gap in the sweep: %s run %s", row["status"], row["path"])
    if points:
        plot(out / "scaling.png", points, args.title)
        print(f"wrote {out / 'runs.csv'}, {out / 'scaling.md'} and {out / 'scaling.png'}")
    else:
        print(f"wrote {out / 'runs.csv'} and {out / 'scaling.md'}; no finished run to plot yet")
    return 0
