"""Step time and memory of one PINN training step on the KAN paper's Poisson problem.

A step is what one loss evaluation of training costs: the value and the Laplacian of the network at
``N`` interior points, the residual ``u_xx + u_yy - f``, the loss
``0.01 * mean(residual^2) + mean(u^2)`` with ``u`` at ``0.08 N`` boundary points (the paper's
10,000 : 800), and one backward pass. Variants differ only in the network and in how the Laplacian is
obtained (``MODES``); every variant of one (N, dtype) group sees the same points.

Memory is measured in a fresh subprocess per variant (:func:`probe_memory`): the resident set size
just before the step, and its high-water mark during the step (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``; ``ru_maxrss`` where that reset is not allowed). tracemalloc cannot see
torch's allocations.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kanpde.derivatives import autograd_jet
from kanpde.nn import KAN, MLP, count_parameters
from kanpde.nn.bases import GLOBAL_BASES
from kanpde.problems.poisson import KANPaperPoisson
from kanpde.sampling import Sampler
from kanpde import training

MODES = {
    "forward": "kanpde forward derivatives (model.forward_jet), one backward",
    "trainer": "kanpde.training.loss_terms, the path train() takes (Fields + problem residual and conditions)",
    "trainer-chunked": "kanpde.training.backward_in_chunks: the trainer path over chunks of interior points",
    "autograd": "nested torch.autograd.grad (kanpde.derivatives.autograd_jet), closed-form uniform basis",
    "autograd-recursive": "nested autograd through the Cox-de Boor basis (every layer.uniform = False)",
    "pykan": "pykan 0.2.8 MultKAN, nested autograd by kan.utils.batch_jacobian as in pykan's PDE tutorial",
}
KAN_ONLY_MODES = ("autograd-recursive", "pykan")
BOUNDARY_FRACTION = 0.08
PROBLEM = KANPaperPoisson()


@dataclass(frozen=True)
class Variant:
    """One network and one way of getting its derivatives.

    ``family`` is ``"kan"`` or ``"mlp"``; ``grid_size`` is None for MLPs; ``basis`` is a KAN's edge basis
    (:mod:`kanpde.nn.bases`; B-spline KANs keep their historical ids).
    """

    family: str
    widths: tuple[int, ...]
    grid_size: int | None
    mode: str
    basis: str = "bspline"

    @property
    def model_id(self) -> str:
        widths = ",".join(map(str, self.widths))
        suffix = "" if self.basis == "bspline" else f"-{self.basis}"
        return f"kan[{widths}]-g{self.grid_size}{suffix}" if self.family == "kan" else f"mlp[{widths}]-tanh"

    @property
    def id(self) -> str:
        return f"{self.model_id}/{self.mode}"

    @property
    def model_label(self) -> str:
        widths = ",".join(map(str, self.widths))
        suffix = "" if self.basis == "bspline" else f" {self.basis}"
        return f"KAN [{widths}] G={self.grid_size}{suffix}" if self.family == "kan" else f"MLP [{widths}] tanh"

    @classmethod
    def from_dict(cls, data: dict) -> "Variant":
        return cls(data["family"], tuple(data["widths"]), data["grid_size"], data["mode"], data.get("basis", "bspline"))


def chunking_available() -> bool:
    return hasattr(training, "backward_in_chunks")


def default_variants(quick: bool = False, pykan: bool = True) -> list[Variant]:
    """The issue's matrix: KAN [2,10,1] and [2,10,10,1] at grids 5 and 20, and the 4x100 tanh MLP; KAN [2,10,1]
    at grid 20 also with each global basis (Chebyshev degree 20, 20 Fourier frequencies, RBF).

    ``quick`` keeps one KAN (grid 5) and the MLP; ``pykan`` adds pykan's KANs.
    """
    kan_models = [((2, 10, 1), 5)] if quick else [((2, 10, 1), 5), ((2, 10, 1), 20), ((2, 10, 10, 1), 5),
                                                   ((2, 10, 10, 1), 20)]
    chunked = ["trainer-chunked"] if chunking_available() else []
    kan_modes = ["forward", "trainer", *chunked, "autograd", "autograd-recursive"] + (["pykan"] if pykan else [])
    variants = [Variant("kan", widths, grid, mode) for widths, grid in kan_models for mode in kan_modes]
    if not quick:  # the other edge bases (issue 15) on the headline KAN, cubic B-splines' row beside them
        variants += [Variant("kan", (2, 10, 1), 20, mode, basis) for basis in GLOBAL_BASES
                     for mode in ("forward", "trainer", "autograd")]
    mlp = (2, 100, 100, 100, 100, 1)
    variants += [Variant("mlp", mlp, None, mode) for mode in ("forward", "trainer", *chunked, "autograd")]
    return variants


@dataclass
class Points:
    """Interior points (N, 2), the source f there (N,), and boundary points (0.08 N, 2)."""

    interior: torch.Tensor
    source: torch.Tensor
    boundary: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.interior)


def make_points(n: int, dtype: torch.dtype, seed: int = 0) -> Points:
    """Uniform random points on [-1, 1]^2 and on its boundary, the same for every variant."""
    sampler = Sampler(method="uniform", n_interior=n, n_boundary=max(4, round(BOUNDARY_FRACTION * n)), seed=seed)
    interior = sampler.interior(PROBLEM.domain)
    boundary = sampler.on_faces(PROBLEM.domain, "boundary")
    return Points(interior.to(dtype), PROBLEM.source(interior).to(dtype), boundary.to(dtype))


def pykan_available() -> str | None:
    """None when pykan 0.2.8 imports, else the reason it cannot be used."""
    try:
        import kan  # noqa: F401
        from importlib.metadata import version
    except Exception as error:  # pykan missing or broken
        return f"pykan is not importable ({type(error).__name__}: {error}); pip install 'kanpde[bench]'"
    found = version("pykan")
    return None if found == "0.2.8" else f"pykan {found} is installed, the benchmark pins 0.2.8"


def build_pykan(widths: Sequence[int], grid_size: int, dtype: torch.dtype, checkpoint_dir: str, seed: int = 1):
    """pykan's MultKAN in its speed mode (no symbolic branch, no saved activations, no checkpoints).

    pykan builds its tensors in torch's default dtype and seeds the global generators, so both are
    restored afterwards.
    """
    from kan import MultKAN

    previous = torch.get_default_dtype()
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.set_default_dtype(dtype)
    try:
        model = MultKAN(width=list(widths), grid=grid_size, k=3, seed=seed, auto_save=False,
                        ckpt_path=checkpoint_dir, symbolic_enabled=False, device="cpu")
    finally:
        torch.set_default_dtype(previous)
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
    model.save_act = False  # what model.speed() sets, as pykan's PDE accuracy tutorial does
    return model


def pykan_second_derivatives(model, x: torch.Tensor) -> torch.Tensor:
    """u_xx and u_yy at ``x`` (N, 2) by nested autograd, the way pykan's PDE tutorials take them: (N, 2)."""
    from kan.utils import batch_jacobian

    def gradient(z):  # (N, 2)
        return batch_jacobian(model, z, create_graph=True)

    hessian = batch_jacobian(gradient, x, create_graph=True, mode="vector")  # (N, 2, 2)
    return torch.diagonal(hessian, dim1=1, dim2=2)


def build_model(variant: Variant, dtype: torch.dtype, checkpoint_dir: str) -> torch.nn.Module:
    """The untrained network of ``variant`` in ``dtype`` (fixed seeds)."""
    if variant.mode == "pykan":
        return build_pykan(variant.widths, variant.grid_size, dtype, checkpoint_dir)
    if variant.family == "kan":
        model = KAN(list(variant.widths), grid_size=variant.grid_size, order=3, seed=0, basis=variant.basis).to(dtype)
        if variant.mode == "autograd-recursive":
            for layer in model.layers:
                layer.uniform = False
        return model
    return MLP(list(variant.widths), activation="tanh", seed=0).to(dtype)


def make_step(variant: Variant, model: torch.nn.Module, chunk: int = 10_000) -> Callable[[Points], float]:
    """A function running one training step of ``model`` at the given points; returns the loss."""
    weight = PROBLEM.residual_weight

    def finish(laplacian: torch.Tensor, points: Points) -> float:
        boundary_value = model(points.boundary)[:, 0]
        loss = weight * (laplacian - points.source).pow(2).mean() + boundary_value.pow(2).mean()
        loss.backward()
        return float(loss.detach())

    def forward(points: Points) -> float:
        model.zero_grad(set_to_none=True)
        return finish(model.forward_jet(points.interior).second.sum(dim=1)[:, 0], points)

    def trainer(points: Points) -> float:
        model.zero_grad(set_to_none=True)
        terms = training.loss_terms(PROBLEM, model, {"interior": points.interior, "boundary": points.boundary})
        loss = sum(terms.values())
        loss.backward()
        return float(loss.detach())

    def trainer_chunked(points: Points) -> float:
        # Only one chunk's graph is alive at a time; the accumulated gradient equals the unchunked one.
        model.zero_grad(set_to_none=True)
        terms = training.backward_in_chunks(PROBLEM, model, {"interior": points.interior, "boundary": points.boundary},
                                            chunk_size=chunk)
        return float(sum(terms.values()))

    def nested(points: Points) -> float:
        model.zero_grad(set_to_none=True)
        x = points.interior.detach().requires_grad_(True)
        return finish(autograd_jet(model, x).second.sum(dim=1)[:, 0], points)

    def pykan(points: Points) -> float:
        model.zero_grad(set_to_none=True)
        return finish(pykan_second_derivatives(model, points.interior).sum(dim=1), points)

    steps = {"forward": forward, "trainer": trainer, "trainer-chunked": trainer_chunked, "autograd": nested,
             "autograd-recursive": nested, "pykan": pykan}
    return steps[variant.mode]


def gradient_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def chunk_check(variant: Variant, model: torch.nn.Module, points: Points, chunk: int) -> float:
    """Relative max difference between chunked and unchunked trainer gradients (should be round-off)."""
    make_step(variant, model, chunk)(points)
    chunked = gradient_vector(model).clone()
    make_step(Variant(variant.family, variant.widths, variant.grid_size, "trainer", variant.basis), model)(points)
    full = gradient_vector(model)
    return float((chunked - full).abs().max() / full.abs().max().clamp(min=1e-300))


def time_group(variants: Sequence[Variant], dtype: torch.dtype, n: int, repeats: int, warmup: int,
               chunk: int, checkpoint_dir: str, slow_seconds: float = 5.0, seed: int = 0) -> dict[str, dict]:
    """Median wall and CPU time of one step for every variant at one (N, dtype), measured interleaved.

    After ``warmup`` rounds, every round runs each variant once in a freshly shuffled order, so load
    from other processes hits all variants alike. Variants slower than ``slow_seconds`` at warm-up get
    at most 3 timed repeats.
    """
    points = make_points(n, dtype)
    steps, out = {}, {}
    for variant in variants:
        model = build_model(variant, dtype, checkpoint_dir)
        steps[variant.id] = make_step(variant, model, chunk)
        out[variant.id] = {"variant": variant.id, "dtype": str(dtype).removeprefix("torch."), "n": n,
                           "parameters": count_parameters(model), "wall_s": [], "cpu_s": [], "status": "ok"}
        if variant.mode == "trainer-chunked":
            out[variant.id]["chunk"] = chunk
            difference = chunk_check(variant, model, points, chunk) if n > chunk else 0.0
            out[variant.id]["chunk_gradient_rel_diff"] = difference
    order = random.Random(seed)
    planned = {}
    for _ in range(warmup):
        for variant in variants:
            tick = time.perf_counter()
            out[variant.id]["loss"] = steps[variant.id](points)
            planned[variant.id] = repeats if time.perf_counter() - tick < slow_seconds else min(repeats, 3)
    for round_index in range(repeats):
        shuffled = list(variants)
        order.shuffle(shuffled)
        for variant in shuffled:
            if round_index >= planned.get(variant.id, repeats):
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            loss = steps[variant.id](points)
            out[variant.id]["cpu_s"].append(time.process_time() - cpu)
            out[variant.id]["wall_s"].append(time.perf_counter() - wall)
            out[variant.id].setdefault("loss", loss)
    for record in out.values():
        record["median_s"] = float(np.median(record["wall_s"]))
        record["min_s"] = float(np.min(record["wall_s"]))
        record["median_cpu_s"] = float(np.median(record["cpu_s"]))
    return out


def profile_step(variant: Variant, dtype: torch.dtype, n: int, checkpoint_dir: str, steps: int = 3,
                 rows: int = 15) -> dict:
    """Top operators by self CPU time over ``steps`` steps (after one warm-up), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    model = build_model(variant, dtype, checkpoint_dir)
    step = make_step(variant, model)
    points = make_points(n, dtype)
    step(points)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(points)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:rows]]
    return {"variant": variant.id, "dtype": str(dtype).removeprefix("torch."), "n": n, "steps": steps,
            "total_ms_per_step": total / 1e3 / steps, "top": top}


# ---------------------------------------------------------------------------------------------------
# Memory: one subprocess per variant (``python -m kanpde.bench.step probe ...``).

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            match = re.search(rf"{field}:\s+(\d+)", status.read())
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def probe_memory(variant: Variant, dtype: torch.dtype, sizes: Sequence[int], chunk: int, max_gb: float,
                 max_seconds: float) -> dict:
    """Resident memory of one step at each size (ascending), in this process.

    A size whose memory or time, extrapolated linearly from the previous size, exceeds ``max_gb`` or
    ``max_seconds`` is skipped, and so are the larger ones.
    """
    checkpoint_dir = tempfile.mkdtemp(prefix="kanpde-bench-")
    model = build_model(variant, dtype, checkpoint_dir)
    step = make_step(variant, model, chunk)
    step(make_points(64, dtype))  # load kernels and lazily built state before measuring
    rows, previous, skip_reason = [], None, None
    for n in sorted(sizes):
        row = {"variant": variant.id, "dtype": str(dtype).removeprefix("torch."), "n": n}
        if previous is not None and skip_reason is None:
            estimate_mb = previous["step_mb"] * n / previous["n"]
            estimate_s = previous["seconds"] * n / previous["n"]
            if estimate_mb > max_gb * 1024:
                skip_reason = f"skipped: estimated {estimate_mb / 1024:.1f} GB per step > --max-step-gb {max_gb:g}"
            elif estimate_s > max_seconds:
                skip_reason = f"skipped: estimated {estimate_s:.0f} s per step > --max-step-seconds {max_seconds:g}"
            row.update(estimated_mb=round(estimate_mb, 1), estimated_s=round(estimate_s, 2))
        if skip_reason is not None:
            rows.append({**row, "status": "skipped", "note": skip_reason})
            continue
        points = make_points(n, dtype)
        gc.collect()
        baseline_kib = _status_kib("VmRSS")
        reset = _reset_high_water_mark()
        tick = time.perf_counter()
        step(points)
        seconds = time.perf_counter() - tick
        peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "VmHWM reset by clear_refs" if reset else "ru_maxrss (high-water mark since start)"
        if baseline_kib is None or peak_kib is None:
            rows.append({**row, "status": "error", "note": "cannot read /proc/self/status"})
            continue
        row.update(status="ok", baseline_mb=round(baseline_kib / 1024, 1), peak_mb=round(peak_kib / 1024, 1),
                   step_mb=round(max(peak_kib - baseline_kib, 0) / 1024, 1), seconds=round(seconds, 3), method=method)
        rows.append(row)
        previous = row
        del points
    return {"variant": variant.id, "dtype": str(dtype).removeprefix("torch."), "rows": rows}


def _probe_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanpde.bench.step probe",
                                     description="memory of one training step, per size, in this process")
    parser.add_argument("--variant", required=True, nargs="+", help="Variants as JSON, probed one after another")
    parser.add_argument("--dtype", choices=("float64", "float32"), required=True)
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--max-gb", type=float, default=8.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for text in args.variant:
        rows += probe_memory(Variant.from_dict(json.loads(text)), getattr(torch, args.dtype), args.sizes, args.chunk,
                             args.max_gb, args.max_seconds)["rows"]
        gc.collect()
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["probe"]:
        sys.exit("usage: python -m kanpde.bench.step probe --variant JSON --dtype D --sizes N... "
                 "(used by kanpde bench)")
    sys.exit(_probe_main(sys.argv[2:]))
