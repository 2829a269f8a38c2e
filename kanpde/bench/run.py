"""``python -m kanpde bench``: step time, memory and time to accuracy, against pykan and the MLP-PINN.

Examples::

    python -m kanpde bench                                   # step time + memory, N = 1e3, 1e4, 5e4, float64 + float32
    python -m kanpde bench --time-to-accuracy --no-step-time # only the time-to-accuracy runs
    python -m kanpde bench --quick --out /tmp/bench          # a tiny configuration (seconds, no pykan)
    python -m kanpde bench --lm --no-step-time               # the cost of one Levenberg-Marquardt iteration

Writes ``step_time.json/.md``, ``time_to_accuracy.json/.md``, ``lm_iteration.json/.md`` and a ``README.md``
summary to ``--out``.
Threads: one torch thread by default (``--threads``); on a shared 2-core machine more threads mostly add
OpenMP contention, and subprocesses get ``OMP_WAIT_POLICY=PASSIVE`` unless it is set. All variants of one
(dtype, N) are timed interleaved, so ratios hold on a noisy machine even when absolute times drift.
pykan 0.2.8 and DeepXDE 1.15 are optional (``pip install 'kanpde[bench]'``); without them their rows say so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from kanpde.app import set_threads
from kanpde.bench import accuracy as bench_accuracy, lm as bench_lm, report as bench_report, step as bench_step

DEFAULT_SIZES, QUICK_SIZES = (1_000, 10_000, 50_000), (256, 512)
DTYPES = ("float64", "float32")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kanpde bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N",
                        help=f"numbers of interior points (default {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, help="default: float64 float32 (quick: float64)")
    parser.add_argument("--repeats", type=int, help="timed repeats per variant (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny configuration: N = 256, 512, float64, one KAN and the MLP, no pykan, short caps")
    parser.add_argument("--filter", nargs="+", metavar="TEXT", help="only variants whose id contains one of these")
    parser.add_argument("--no-step-time", action="store_true", help="skip step time and memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-pykan", action="store_true", help="leave pykan out even when installed")
    parser.add_argument("--no-profile", action="store_true", help="skip the operator profile of the headline step")
    parser.add_argument("--chunk", type=int, help="interior points per chunk for the chunked trainer (default 10000)")
    parser.add_argument("--max-step-gb", type=float, default=8.0,
                        help="skip a size whose step would need more memory than this (estimate; default 8)")
    parser.add_argument("--max-step-seconds", type=float, default=60.0,
                        help="skip a size whose step would take longer than this (estimate; default 60)")
    parser.add_argument("--time-to-accuracy", action="store_true", help="also run the time-to-accuracy comparison")
    parser.add_argument("--lm", action="store_true",
                        help="also measure one Levenberg-Marquardt iteration and its parts (N = 2,900 and 10,800)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild the Markdown files from the JSON files already in --out")
    parser.add_argument("--tta-cap", type=float,
                        help="training seconds per time-to-accuracy run (default 120; quick 3)")
    parser.add_argument("--tta-problems", nargs="+", choices=bench_accuracy.PROBLEMS)
    parser.add_argument("--tta-methods", nargs="+", choices=sorted(bench_accuracy.METHODS))
    parser.add_argument("--tta-kan-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for kanpde's KAN recipe, e.g. 'schedule.stages.2.steps=600'")
    args = parser.parse_args(argv)
    for name in ("repeats", "chunk", "tta_cap"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.sizes and min(args.sizes) < 1:
        parser.error(f"--sizes must be positive integers, got {args.sizes}")
    if args.threads < 1 or args.warmup < 0:
        parser.error("--threads must be >= 1 and --warmup >= 0")
    quick = args.quick
    args.sizes = sorted(set(args.sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)))
    args.dtypes = list(dict.fromkeys(args.dtypes or (("float64",) if quick else DTYPES)))
    args.repeats = args.repeats or (2 if quick else 5)
    args.chunk = args.chunk or (200 if quick else 10_000)
    args.tta_cap = args.tta_cap or (3.0 if quick else 120.0)
    args.tta_problems = args.tta_problems or (["poisson_sinsin"] if quick else list(bench_accuracy.PROBLEMS))
    args.tta_methods = args.tta_methods or (["kanpde-kan", "kanpde-mlp"] if quick else list(bench_accuracy.METHODS))
    return args


def subprocess_env(threads: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **extra}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_probes(variants, args, log) -> list[dict]:
    """Memory of one step per variant and dtype, each in a fresh subprocess."""
    rows = []
    # A fixed mmap threshold makes freed tensors go back to the system between sizes, so each size's
    # high-water mark is its own (glibc would otherwise keep raising the threshold and cache them).
    env = subprocess_env(args.threads, MALLOC_MMAP_THRESHOLD_="131072")
    # --quick probes every variant in one subprocess (one import instead of one per variant).
    batches = [variants] if args.quick else [[variant] for variant in variants]
    for dtype in args.dtypes:
        for batch in batches:
            command = [sys.executable, "-m", "kanpde.bench.step", "probe",
                       "--variant", *(json.dumps(asdict(variant)) for variant in batch),
                       "--dtype", dtype, "--sizes", *map(str, args.sizes), "--threads", str(args.threads),
                       "--chunk", str(args.chunk), "--max-gb", str(args.max_step_gb),
                       "--max-seconds", str(args.max_step_seconds)]
            log(f"memory  {dtype} " + ", ".join(variant.id for variant in batch))
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
                lines = done.stdout.strip().splitlines()
                if done.returncode != 0 or not lines:
                    raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
                rows += json.loads(lines[-1])["rows"]
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
                note = f"probe failed: {error}"
                rows += [{"variant": variant.id, "dtype": dtype, "n": n, "status": "error", "note": note}
                         for variant in batch for n in args.sizes]
    return rows


def run_step_time(args, log) -> dict:
    unavailable = {}
    pykan_reason = ("excluded by --quick" if args.quick else "excluded by --no-pykan" if args.no_pykan
                    else bench_step.pykan_available())
    if pykan_reason:
        unavailable["pykan"] = pykan_reason
    if not bench_step.chunking_available():
        unavailable["trainer-chunked"] = "this kanpde has no kanpde.training.backward_in_chunks"
    variants = bench_step.default_variants(quick=args.quick, pykan=pykan_reason is None)
    if args.filter:
        variants = [v for v in variants if any(text in v.id for text in args.filter)]
    if not variants:
        raise SystemExit(f"kanpde bench: --filter {args.filter} matches no variant")
    memory = [] if args.no_memory else run_probes(variants, args, log)
    blocked = {(m["variant"], m["dtype"], m["n"]): m.get("note", m["status"]) for m in memory
               if m["status"] in ("skipped", "error") and m["n"] > min(args.sizes)}
    measurements = []
    checkpoint_dir = tempfile.mkdtemp(prefix="kanpde-bench-")
    for dtype in args.dtypes:
        previous: dict[str, dict] = {}
        for n in args.sizes:
            active = []
            for variant in variants:
                note = blocked.get((variant.id, dtype, n))
                last = previous.get(variant.id)
                if note is None and last is not None and last["median_s"] * n / last["n"] > args.max_step_seconds:
                    note = (f"skipped: estimated {last['median_s'] * n / last['n']:.0f} s per step > "
                            f"--max-step-seconds {args.max_step_seconds:g}")
                if note is None:
                    active.append(variant)
                else:
                    measurements.append({"variant": variant.id, "dtype": dtype, "n": n, "status": "skipped",
                                         "note": note})
            log(f"timing  {dtype} N={n}: {len(active)} variants, {args.repeats} rounds")
            results = bench_step.time_group(active, getattr(torch, dtype), n, args.repeats, args.warmup, args.chunk,
                                            checkpoint_dir)
            measurements += results.values()
            previous.update(results)
    profiles = []
    if not args.no_profile:
        n = bench_report.HEADLINE_N if bench_report.HEADLINE_N in args.sizes else max(args.sizes)
        kan_models = [v.model_id for v in variants if v.family == "kan"]
        headline = [bench_report.HEADLINE_MODEL] if bench_report.HEADLINE_MODEL in kan_models else kan_models[:1]
        targets = [v for v in variants if (v.model_id in headline and v.mode in ("forward", "pykan"))
                   or v.id == f"{bench_report.MLP_MODEL}/autograd"]
        for variant in targets:
            if not any(m["variant"] == variant.id and m["n"] == n and m["status"] == "ok" for m in measurements):
                continue
            log(f"profile {variant.id} N={n}")
            profiles.append(bench_step.profile_step(variant, getattr(torch, args.dtypes[0]), n, checkpoint_dir))
    step = {"sizes": args.sizes, "dtypes": args.dtypes, "repeats": args.repeats, "warmup": args.warmup,
            "chunk": args.chunk, "boundary_fraction": bench_step.BOUNDARY_FRACTION, "modes": bench_step.MODES,
            "memory_method": ("resident set size of a fresh subprocess per variant (all variants in one with --quick; "
                              "sizes ascending, MALLOC_MMAP_THRESHOLD_=131072): high-water mark during the step "
                              "(VmHWM, reset through "
                              "/proc/self/clear_refs) minus the resident set just before it"),
            "variants": [{**asdict(v), "id": v.id, "model_label": v.model_label} for v in variants],
            "measurements": measurements, "memory": memory, "profiles": profiles}
    step["ratios"] = bench_report.step_ratios(measurements)
    step["memory_ratios"] = bench_report.memory_ratios(memory)
    return {"step_time": step, "unavailable": unavailable}


def run_time_to_accuracy(args, log) -> dict:
    runs, unavailable = [], {}
    env = subprocess_env(args.threads)
    for problem in args.tta_problems:
        for method in args.tta_methods:
            reason = bench_accuracy.available(method)
            if reason:
                unavailable[method] = reason
            log(f"accuracy {problem} {method} (cap {args.tta_cap:g} s)")
            with tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / "run.json"
                command = [sys.executable, "-m", "kanpde.bench.accuracy", "--method", method, "--problem", problem,
                           "--cap", str(args.tta_cap), "--threads", str(args.threads), "--out", str(target)]
                if method == "kanpde-kan" and args.tta_kan_overrides:
                    command += ["--override", *args.tta_kan_overrides]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, env=env,
                                          timeout=max(600.0, 20 * args.tta_cap))
                    if done.returncode != 0 or not target.exists():
                        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-400:]}")
                    runs.append(json.loads(target.read_text()))
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    runs.append({"method": method, "problem": problem, "recipe": bench_accuracy.METHODS[method],
                                 "status": "error", "note": str(error), "reached": {}})
    comparison = {}
    for problem in args.tta_problems:
        by_method = {r["method"]: r for r in runs if r["problem"] == problem and r.get("curve")}
        kan = next((by_method[m] for m in ("kanpde-kan-lm", "kanpde-kan") if m in by_method), None)
        if "deepxde" in by_method and kan is not None:  # kanpde's default optimizer first
            comparison[problem] = deepxde_comparison(by_method["deepxde"], kan)
    setup = (f"Points shared by every method: {bench_accuracy.MESH_PER_SIDE}x{bench_accuracy.MESH_PER_SIDE} "
             "cell-centred interior mesh, 84 boundary points (pykan's tutorial set); loss 0.01 * interior MSE + "
             f"boundary MSE; float64; rel_l2 on a {bench_accuracy.TEST_PER_SIDE}x{bench_accuracy.TEST_PER_SIDE} "
             "test grid against the exact solution.")
    return {"time_to_accuracy": {"setup": setup, "cap_s": args.tta_cap, "thresholds": list(bench_accuracy.THRESHOLDS),
                                 "problems": args.tta_problems, "methods": args.tta_methods, "runs": runs,
                                 "deepxde_comparison": comparison},
            "unavailable": unavailable}


def deepxde_comparison(deepxde: dict, kan: dict) -> dict:
    """Does kanpde's KAN reach DeepXDE's final error in less training time than DeepXDE took?"""
    target, deepxde_time = deepxde["final_rel_l2"], deepxde["train_time_s"]
    kan_time = bench_accuracy.time_to_reach(kan["curve"], target)
    if kan_time is None:
        text = (f"DeepXDE ended at rel_l2 {target:.2e} after {deepxde_time:.1f} s; kanpde's KAN ({kan.get('method', 'kanpde-kan')}) "
                f"did not reach it "
                f"(best {kan['best_rel_l2']:.2e} in {kan['train_time_s']:.1f} s).")
        return {"target_rel_l2": target, "deepxde_s": deepxde_time, "kanpde_kan_s": None, "speedup": None,
                "met": False, "text": text}
    speedup = deepxde_time / kan_time if kan_time > 0 else float("inf")
    text = (f"DeepXDE ended at rel_l2 {target:.2e} after {deepxde_time:.1f} s of training; kanpde's KAN "
            f"({kan.get('method', 'kanpde-kan')}) reached it after {kan_time:.1f} s ({speedup:.1f}x less time).")
    return {"target_rel_l2": target, "deepxde_s": deepxde_time, "kanpde_kan_s": kan_time, "speedup": speedup,
            "met": kan_time < deepxde_time, "text": text}


def write(out: Path, stem: str, info: dict, render) -> None:
    """``stem.json``, then ``stem.md`` from ``render()``: the measurements are on disk before any formatting
    runs, so a report that cannot be formatted never costs them."""
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(render())


def rebuild_reports(out: Path) -> int:
    """Markdown from the JSON files in ``out`` (after a change of the report format, say)."""
    renderers = {"step_time": bench_report.step_markdown, "time_to_accuracy": bench_report.accuracy_markdown,
                 "lm_iteration": lambda info, command: bench_lm.markdown(info["results"], {
                     "command": command, "torch": info["machine"]["torch"], "threads": info["machine"]["threads"],
                     "machine": info["machine"].get("cpu", "")})}
    found = [stem for stem in renderers if (out / f"{stem}.json").exists()]
    if not found:
        print(f"kanpde bench: no step_time.json or time_to_accuracy.json in {out}", file=sys.stderr)
        return 2
    for stem in found:
        info = json.loads((out / f"{stem}.json").read_text())
        (out / f"{stem}.md").write_text(renderers[stem](info, info["command"]))
    summary = bench_report.summary_markdown(out)
    (out / "README.md").write_text(summary)
    print(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m kanpde bench", *argv])
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    if args.report_only:
        return rebuild_reports(out)
    base = {"command": command, "machine": bench_report.machine_info(args.threads), "quick": args.quick}
    if not args.no_step_time:
        info = {"kind": "kanpde-bench-step-time", "created": time.strftime("%Y-%m-%d %H:%M:%S %z"), **base,
                **run_step_time(args, log)}
        info["load_average_end"] = bench_report.machine_info(args.threads)["load_average"]
        write(out, "step_time", info, lambda: bench_report.step_markdown(info, command))
    if args.lm:
        log("Levenberg-Marquardt iteration cost")
        cases = bench_lm.CASES[:1] if args.quick else bench_lm.CASES
        results = [dict(label=label, **bench_lm.iteration_cost(n_i, n_b, family, hidden, grid,
                                                                repeats=3 if args.quick else 15))
                   for label, n_i, n_b, family, hidden, grid in cases]
        info = {"kind": "kanpde-bench-lm-iteration", "created": time.strftime("%Y-%m-%d %H:%M:%S %z"), **base,
                "results": results}
        lm_info = {"command": command, "torch": torch.__version__, "threads": args.threads,
                   "machine": base["machine"].get("cpu", "")}
        write(out, "lm_iteration", info, lambda: bench_lm.markdown(results, lm_info))
    if args.time_to_accuracy:
        info = {"kind": "kanpde-bench-time-to-accuracy", "created": time.strftime("%Y-%m-%d %H:%M:%S %z"), **base,
                **run_time_to_accuracy(args, log)}
        info["load_average_end"] = bench_report.machine_info(args.threads)["load_average"]
        write(out, "time_to_accuracy", info, lambda: bench_report.accuracy_markdown(info, command))
    summary = bench_report.summary_markdown(out)
    (out / "README.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
