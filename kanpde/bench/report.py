"""Machine description, ratios and Markdown tables for ``kanpde bench``.

Everything here works on the plain dicts the benchmark writes to JSON, so a table can be rebuilt from a
committed results file without running anything.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

MODE_COLUMNS = (
    ("forward", "kanpde forward"),
    ("trainer", "kanpde trainer"),
    ("trainer-chunked", "trainer, chunked"),
    ("autograd", "nested autograd"),
    ("autograd-recursive", "nested autograd, Cox-de Boor"),
    ("pykan", "pykan 0.2.8"),
)
HEADLINE_N, HEADLINE_MODEL, MLP_MODEL = 10_000, "kan[2,10,1]-g20", "mlp[2,100,100,100,100,1]-tanh"


def machine_info(threads: int) -> dict:
    """Where and with what the numbers were made."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "threads": threads, "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": _load_average(), "packages": {name: _version(name) for name in ("pykan", "deepxde", "numpy")},
        "git": _git_revision(),
    }


def _load_average():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                  timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if revision.returncode != 0:
            return None
        return revision.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------
# Ratios

def _index(records: list[dict]) -> dict[tuple[str, str, int], dict]:
    return {(r["variant"], r["dtype"], r["n"]): r for r in records}


def step_ratios(measurements: list[dict]) -> list[dict]:
    """Time ratios within each (dtype, N) group, on median wall time (and on median CPU time)."""
    index = _index([m for m in measurements if m.get("status") == "ok"])
    groups = sorted({(m["dtype"], m["n"]) for m in measurements})
    models = sorted({m["variant"].split("/")[0] for m in measurements})
    ratios = []

    def add(name, slow, fast, dtype, n, model):
        a, b = index.get((slow, dtype, n)), index.get((fast, dtype, n))
        if a and b:
            ratios.append({"name": name, "model": model, "dtype": dtype, "n": n, "numerator": slow, "denominator": fast,
                           "wall": a["median_s"] / b["median_s"], "cpu": a["median_cpu_s"] / b["median_cpu_s"]})

    for dtype, n in groups:
        for model in models:
            fast = f"{model}/forward"
            add("pykan / kanpde forward", f"{model}/pykan", fast, dtype, n, model)
            add("nested autograd / forward", f"{model}/autograd", fast, dtype, n, model)
            add("Cox-de Boor autograd / forward", f"{model}/autograd-recursive", fast, dtype, n, model)
            add("trainer / forward", f"{model}/trainer", fast, dtype, n, model)
            add("chunked trainer / trainer", f"{model}/trainer-chunked", f"{model}/trainer", dtype, n, model)
            if model.startswith("kan"):
                add("MLP nested autograd / KAN forward", f"{MLP_MODEL}/autograd", fast, dtype, n, model)
                add("MLP forward / KAN forward", f"{MLP_MODEL}/forward", fast, dtype, n, model)
                add("pykan / kanpde trainer", f"{model}/pykan", f"{model}/trainer", dtype, n, model)
                add("MLP nested autograd / KAN trainer", f"{MLP_MODEL}/autograd", f"{model}/trainer", dtype, n, model)
    return ratios


def memory_ratios(memory: list[dict]) -> list[dict]:
    """Step-memory ratios at each size where both sides were measured."""
    index = _index([m for m in memory if m.get("status") == "ok"])
    ratios = []
    for (variant, dtype, n), record in index.items():
        model, mode = variant.split("/")
        pairs = {"pykan": ("pykan / kanpde forward", f"{model}/forward"),
                 "trainer": ("trainer / forward", f"{model}/forward"),
                 "trainer-chunked": ("chunked trainer / trainer", f"{model}/trainer")}
        if mode in pairs:
            name, other = pairs[mode]
            base = index.get((other, dtype, n))
            if base and base["step_mb"] > 0:
                ratios.append({"name": name, "model": model, "dtype": dtype, "n": n,
                               "value": record["step_mb"] / base["step_mb"]})
    return ratios


def targets(step: dict | None, accuracy: dict | None) -> list[dict]:
    """The figures issue 7 asks for, each with its goal and whether it was met."""
    step = step or {}
    sizes = step.get("sizes") or []
    kan_models = [v["id"].split("/")[0] for v in step.get("variants", []) if v["family"] == "kan"]
    model = HEADLINE_MODEL if HEADLINE_MODEL in kan_models or not kan_models else kan_models[0]
    n = HEADLINE_N if HEADLINE_N in sizes else (max(sizes) if sizes else HEADLINE_N)
    big = max(sizes) if sizes else None
    rows = []

    def find(items, name, dtype, size, key):
        hit = next((r for r in items if r["name"] == name and r["model"] == model and r["dtype"] == dtype
                    and r["n"] == size), None)
        return None if hit is None else hit[key]

    ratios, memory = step.get("ratios", []), step.get("memory_ratios", [])
    for label, name, goal, items, size, key in (
        ("step: pykan / kanpde forward", "pykan / kanpde forward", 15, ratios, n, "wall"),
        ("step: pykan / kanpde trainer path", "pykan / kanpde trainer", 15, ratios, n, "wall"),
        ("step: MLP nested autograd / kanpde KAN forward", "MLP nested autograd / KAN forward", 5, ratios, n, "wall"),
        ("step: MLP nested autograd / kanpde KAN trainer path", "MLP nested autograd / KAN trainer", 5, ratios, n,
         "wall"),
        ("step: Cox-de Boor nested autograd / kanpde forward (issue 2: 15-20x)", "Cox-de Boor autograd / forward", 15,
         ratios, n, "wall"),
        ("step memory: pykan / kanpde forward", "pykan / kanpde forward", 3, memory, big, "value"),
    ):
        if not step:
            break
        value = find(items, name, "float64", size, key)
        rows.append({"target": label, "model": model, "dtype": "float64", "n": size, "goal": goal,
                     "value": value, "met": None if value is None else value >= goal})
    if accuracy:
        comparison = accuracy.get("deepxde_comparison", {}).get("poisson_sinsin")
        if comparison:
            rows.append({"target": "sin*sin: DeepXDE time / kanpde KAN time to DeepXDE's final error",
                         "model": "kan[2,10,1]", "dtype": "float64", "n": None, "goal": 1,
                         "value": comparison.get("speedup"), "met": comparison.get("met")})
    return rows


# ---------------------------------------------------------------------------------------------------
# Markdown

def _ms(seconds) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:,.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.1f}"


def _x(value) -> str:
    return "—" if value is None else f"{value:.1f}x"


def _header(title: str, info: dict, command: str) -> list[str]:
    machine = info["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v) or "none"
    lines = [f"# {title}", "", f"Made by `{command}` on {info['created']}.", "",
             f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
             f"{machine['platform']}",
             f"- Python {machine['python']}, torch {machine['torch']}; {packages}",
             f"- Threads: torch.set_num_threads({machine['threads']}) (OMP_WAIT_POLICY={machine['omp_wait_policy']}); "
             f"load average at start {machine['load_average']}, at end {info.get('load_average_end')}",
             f"- Code: git {machine['git']}"]
    for name, reason in info.get("unavailable", {}).items():
        lines.append(f"- **{name} unavailable**: {reason}")
    return lines + [""]


def step_markdown(info: dict, command: str) -> str:
    step = info["step_time"]
    lines = _header("kanpde bench: step time and memory", info, command)
    lines += ["One training step of the KAN paper's Poisson problem: value and Laplacian at N interior points, "
              f"residual, loss 0.01 * mean(residual^2) + mean(u^2) on {step['boundary_fraction']:g} N boundary "
              "points, backward. Median wall time of "
              f"{step['repeats']} repeats after {step['warmup']} warm-up, all variants of one (dtype, N) measured "
              "interleaved in shuffled rounds; ratios are of medians (CPU-time ratio in brackets).", ""]
    lines += _targets_markdown(targets(step, None))
    index = _index(step["measurements"])
    ratio_index = {(r["name"], r["model"], r["dtype"], r["n"]): r for r in step.get("ratios", [])}
    models = list(dict.fromkeys(v["variant"].split("/")[0] for v in step["measurements"]))
    labels = {v["id"].split("/")[0]: v["model_label"] for v in step["variants"]}
    for dtype in step["dtypes"]:
        for n in step["sizes"]:
            lines += _variant_table(f"## {dtype}, N = {n:,}: median step time (ms)", index, models, labels, dtype, n,
                                    lambda record: _ms(record["median_s"]), always=True)
            names = ("pykan / kanpde forward", "nested autograd / forward", "Cox-de Boor autograd / forward",
                     "trainer / forward", "MLP nested autograd / KAN forward", "MLP forward / KAN forward")
            ratio_rows = []
            for name in names:
                cells = []
                for model in models:
                    r = ratio_index.get((name, model, dtype, n))
                    cells.append("" if r is None else f"{r['wall']:.1f}x ({r['cpu']:.1f}x)")
                if any(cells):
                    ratio_rows.append(f"| {name} | " + " | ".join(cells) + " |")
            if ratio_rows:
                lines += ["", "| ratio | " + " | ".join(labels.get(m, m) for m in models) + " |",
                          "|---" * (len(models) + 1) + "|", *ratio_rows]
            lines.append("")
    lines += _memory_markdown(step, labels)
    lines += _profile_markdown(step.get("profiles", []))
    lines += ["## How this was measured", "",
              *[f"- `{mode}`: {text}" for mode, text in step["modes"].items()],
              "- Points: uniform random in [-1, 1]^2 (seed 0) and on its boundary; the same for every variant.",
              f"- Memory: {step['memory_method']}",
              "- Variants slower than 5 s per step at warm-up get at most 3 timed repeats; a size whose estimated "
              "memory or time (linear in N from the previous size) exceeds the limits is skipped and shown as such.",
              ""]
    return "\n".join(lines)


def _targets_markdown(rows: list[dict]) -> list[str]:
    lines = ["## Targets (issue 7)", "", "| figure | model | dtype | N | measured | goal | met |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        met = "—" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['target']} | {row['model']} | {row['dtype']} | {row['n'] or ''} | {_x(row['value'])} | "
                     f">= {row['goal']}x | {met} |")
    return lines + [""]


LM_HEADLINE_POINTS = 2900


def summary_markdown(folder: Path) -> str:
    """README of a results folder: the targets from whichever of the two JSON files exist, and the files."""
    loaded = {}
    for stem in ("step_time", "time_to_accuracy", "lm_iteration", "lm_iteration_2threads"):
        path = Path(folder) / f"{stem}.json"
        if path.exists():
            loaded[stem] = json.loads(path.read_text())
    step = loaded.get("step_time", {}).get("step_time")
    accuracy = loaded.get("time_to_accuracy", {}).get("time_to_accuracy")
    lines = ["# kanpde benchmark results", ""]
    for stem, info in loaded.items():
        machine = info["machine"]
        lines.append(f"- `{stem}.md` / `{stem}.json`: `{info['command']}`, {info['created']}, "
                     f"torch {machine['torch']}, "
                     f"{machine['threads']} thread(s), git {machine['git']}, load average {machine['load_average']}")
        for name, reason in info.get("unavailable", {}).items():
            lines.append(f"  - {name} unavailable: {reason}")
    lines.append("")
    lines += _targets_markdown(targets(step, accuracy))
    if accuracy:
        for problem, comparison in accuracy.get("deepxde_comparison", {}).items():
            lines.append(f"- {problem}: {comparison['text']}")
        lines.append("")
    for stem in ("lm_iteration", "lm_iteration_2threads"):
        for row in loaded.get(stem, {}).get("results", []):
            if row["family"] == "kan" and row["n_points"] == LM_HEADLINE_POINTS:  # issue 11: <= 50 ms
                met = "yes" if row["ms"]["iteration"] <= 50 else "no"
                lines.append(f"- One Levenberg-Marquardt iteration, default Poisson run ({row['n_points']:,} points, "
                             f"KAN {row['widths']} grid {row['grid_size']}, {loaded[stem]['machine']['threads']} "
                             f"thread(s)): {row['ms']['iteration']:.1f} ms (goal <= 50 ms: {met}); `{stem}.md`")
    return "\n".join(lines)


def _memory_markdown(step: dict, labels: dict) -> list[str]:
    memory = step.get("memory") or []
    if not memory:
        return ["## Memory", "", "Not measured (--no-memory).", ""]
    index = _index(memory)
    lines = []
    models = list(dict.fromkeys(m["variant"].split("/")[0] for m in memory))
    big = max(step["sizes"])
    for dtype in step["dtypes"]:
        table = _variant_table(f"## {dtype}, N = {big:,}: memory of one step (MB above the resident set before it)",
                               index, models, labels, dtype, big,
                               lambda record: f"{record['step_mb']:,.0f} (peak {record['peak_mb']:,.0f})")
        if not table:
            continue
        lines += table
        ratios = [r for r in step.get("memory_ratios", []) if r["dtype"] == dtype and r["n"] == big]
        if ratios:
            lines += ["", "| ratio | model | value |", "|---|---|---|"]
            lines += [f"| {r['name']} | {labels.get(r['model'], r['model'])} | {r['value']:.1f}x |" for r in ratios]
        lines.append("")
    return lines


def _variant_table(title: str, index: dict, models: list[str], labels: dict, dtype: str, n: int, cell,
                   always: bool = False) -> list[str]:
    """A Markdown table, one row per model and one column per measured mode; ``cell(record)`` formats a
    successful measurement, failed ones show their note. Empty (no lines) when no mode was measured,
    unless ``always``."""
    modes = [(mode, name) for mode, name in MODE_COLUMNS if any((f"{m}/{mode}", dtype, n) in index for m in models)]
    if not modes and not always:
        return []
    lines = [title, "", "| model | " + " | ".join(name for _, name in modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for model in models:
        cells = []
        for mode, _ in modes:
            record = index.get((f"{model}/{mode}", dtype, n))
            if record is None:
                cells.append("")
            elif record.get("status") == "ok":
                cells.append(cell(record))
            else:
                cells.append(record.get("note") or record.get("status", "?"))
        lines.append(f"| {labels.get(model, model)} | " + " | ".join(cells) + " |")
    return lines


def _profile_markdown(profiles: list[dict]) -> list[str]:
    lines = []
    for prof in profiles:
        lines += [f"## Profile: {prof['variant']}, {prof['dtype']}, N = {prof['n']:,} "
                  f"({prof['total_ms_per_step']:.0f} ms of operator self time per step)", "",
                  "| operator | ms per step | share | calls per step |", "|---|---|---|---|"]
        lines += [f"| {row['op']} | {row['self_ms_per_step']:.1f} | {row['share']:.0%} | {row['calls_per_step']:.0f} |"
                  for row in prof["top"]]
        lines.append("")
    return lines


def _number(value, spec: str, unit: str = "") -> str:
    """``value`` formatted by ``spec``, or a dash when it is missing (None) or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:{spec}}{unit}"


def accuracy_markdown(info: dict, command: str) -> str:
    accuracy = info["time_to_accuracy"]
    lines = _header("kanpde bench: time to accuracy", info, command)
    lines += [accuracy["setup"], "",
              "Cells: training seconds / loss evaluations until rel_l2 first falls below the threshold (errors "
              f"checked after every optimizer step, off the clock); cap {accuracy['cap_s']:g} s of training per run.",
              ""]
    for problem in accuracy["problems"]:
        runs = [r for r in accuracy["runs"] if r["problem"] == problem]
        thresholds = " | ".join(f"< {t:.0e}" for t in accuracy["thresholds"])
        lines += [f"## {problem}", "", f"| method | parameters | {thresholds}"
                  + " | final rel_l2 | best rel_l2 | train time | evaluations | status |",
                  "|---" * (len(accuracy["thresholds"]) + 7) + "|"]
        for run in runs:
            if run["status"] == "unavailable":
                lines.append(f"| {run['method']} | | " + " | ".join("—" for _ in accuracy["thresholds"])
                             + f" | | | | | unavailable: {run['note']} |")
                continue
            cells = []
            for key, hit in run["reached"].items():
                cells.append("not reached" if hit is None else f"{hit['time_s']:.1f} s / {hit['evaluations']}")
            # A run that failed (a peer's subprocess crashed) has no numbers: a dash, not a crash of the report.
            final, best = _number(run.get("final_rel_l2"), ".2e"), _number(run.get("best_rel_l2"), ".2e")
            seconds = _number(run.get("train_time_s"), ".1f", " s")
            lines.append(f"| {run['method']} | {run.get('parameters') or ''} | " + " | ".join(cells)
                         + f" | {final} | {best} | {seconds} | {_number(run.get('loss_evaluations'), 'd')} | "
                         f"{run.get('status') or 'failed'} |")
        comparison = accuracy.get("deepxde_comparison", {}).get(problem)
        if comparison:
            lines += ["", comparison["text"]]
        lines.append("")
    lines += ["## Recipes", "", *[f"- `{r['method']}`: {r['recipe']}" + (f" ({r['note']})" if r.get("note") else "")
                                  for r in {r["method"]: r for r in accuracy["runs"]}.values()], ""]
    return "\n".join(lines)
