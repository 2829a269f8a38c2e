"""Time to accuracy: wall time and loss evaluations until the relative L2 error falls below thresholds.

Every method trains on the same points: a 21 x 21 cell-centred mesh strictly inside [-1, 1]^2 (441
points, kanpde's ``mesh`` sampler) and pykan's tutorial boundary set (21 evenly spaced points on each
of the 4 sides, corners repeated: 84 points), with loss 0.01 * interior MSE + boundary MSE. The error
is measured after every optimizer step on the fixed 101 x 101 test grid against the exact solution,
with the clock stopped. Each method runs in its own subprocess
(``python -m kanpde.bench.accuracy --method M --problem P``), so global state (default dtype,
seeds, DeepXDE's backend) cannot leak between them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import torch

METHODS = {
    "kanpde-kan": "kanpde KAN [2,10,1] with quintic splines, L-BFGS on grids 5 -> 10 (model=kan_quintic "
                  "schedule=grids_5_10: the recipe for a few hundred points)",
    "kanpde-mlp": "kanpde MLP [2,100,100,100,100,1] tanh with schedule adam_lbfgs (Adam, then L-BFGS)",
    "kanpde-kan-lm": "kanpde KAN [2,10,1] with splines of order 7, Levenberg-Marquardt on grids 5 -> 7 (model=kan "
                     "model.order=7 schedule=lm_few_points)",
    "kanpde-mlp-lm": "kanpde MLP [2,20,20,20,1] tanh (921 parameters), Levenberg-Marquardt (model=mlp "
                     "schedule=lm_few_points)",
    "pykan": "pykan 0.2.8 KAN [2,10,1], its PDE tutorial recipe: LBFGS (history 10), grids 5 -> 10 -> 20 with "
             "50 steps each (20 iterations/step), update_grid_from_samples every 5 steps up to step 20, refine",
    "deepxde": "DeepXDE 1.15 MLP-PINN [2,100,100,100,100,1] tanh (Glorot normal), pytorch backend: 500 Adam "
               "(lr 1e-3) + 500 L-BFGS iterations",
}
PROBLEMS = ("poisson", "poisson_sinsin")
THRESHOLDS = (1e-2, 1e-3, 1e-4, 1e-5)
MESH_PER_SIDE = 21
TEST_PER_SIDE = 101


def make_problem(name: str):
    from kanpde.problems.poisson import KANPaperPoisson, SinSinPoisson

    if name not in PROBLEMS:
        raise ValueError(f"unknown time-to-accuracy problem {name!r}; choose from {PROBLEMS}")
    problem = KANPaperPoisson() if name == "poisson" else SinSinPoisson()
    problem._name = name
    return problem


def shared_points(problem) -> dict[str, torch.Tensor]:
    """Interior mesh (441, 2), pykan's boundary points (84, 2), test grid (101^2, 2) and exact values there."""
    from kanpde.sampling import Sampler, evaluation_grid

    interior = Sampler(method="mesh", n_interior=MESH_PER_SIDE**2).interior(problem.domain)
    side = torch.linspace(-1.0, 1.0, MESH_PER_SIDE, dtype=torch.float64)
    ones = torch.ones_like(side)
    boundary = torch.cat([torch.stack(pair, dim=1) for pair in
                          ((-ones, side), (ones, side), (side, -ones), (side, ones))])
    test = evaluation_grid(problem.domain, TEST_PER_SIDE)
    return {"interior": interior, "boundary": boundary, "test": test, "exact": problem.exact(test).reshape(-1)}


class FixedPoints:
    """A stand-in for :class:`kanpde.sampling.Sampler` that hands out the shared point sets."""

    resample_every = 0

    def __init__(self, interior: torch.Tensor, boundary: torch.Tensor):
        self.interior_points, self.boundary_points = interior, boundary
        self.n_interior = len(interior)

    def interior(self, box, n=None) -> torch.Tensor:
        return self.interior_points.clone()

    def on_faces(self, box, on, n=None) -> torch.Tensor:
        return self.boundary_points.clone()


def rel_l2(predicted: torch.Tensor, exact: torch.Tensor) -> float:
    return float((predicted.reshape(-1) - exact).norm() / exact.norm())


class Clock:
    """Training time with pauses for the off-clock error checks, and a curve of (time, evaluations, rel_l2)."""

    def __init__(self):
        self.elapsed, self.started, self.evaluations, self.curve = 0.0, None, 0, []

    def start(self):
        self.started = time.perf_counter()

    def stop(self):
        if self.started is not None:
            self.elapsed += time.perf_counter() - self.started
            self.started = None

    def record(self, error: float):
        self.curve.append([round(self.elapsed, 4), self.evaluations, error])


# Each method's recipe for this small point set, as Hydra overrides of the solve config.
RECIPES = {
    # quintic splines on grids 5 -> 10 (cubic splines give a piecewise-linear u_xx and stall near 1.5e-3)
    "kanpde-kan": ("model=kan_quintic", "schedule=grids_5_10"),
    "kanpde-mlp": ("model=mlp_large", "schedule=adam_lbfgs"),
    # order 7 measured best on the 441 points (best rel_l2, grids 5 -> 7: order 5 1.7e-5, order 7 1.4e-6)
    "kanpde-kan-lm": ("model=kan", "model.order=7", "schedule=lm_few_points"),
    "kanpde-mlp-lm": ("model=mlp", "schedule=lm_few_points"),
}


def run_kanpde(problem_name: str, method: str, cap: float, overrides: tuple[str, ...] = ()) -> dict:
    """kanpde's own recipe from its configs (plus Hydra ``overrides``), through :func:`kanpde.training.train`."""
    from hydra import compose, initialize_config_module

    from kanpde.app import build
    from kanpde.training import Evaluation, train

    base = [f"problem={problem_name}", "device=cpu", "precision=float64", *RECIPES[method]]
    family = "kan" if "kan" in RECIPES[method][0] else "mlp"
    with initialize_config_module("kanpde.configs", version_base="1.3"):
        cfg = compose("solve", overrides=[*base, *overrides])
    setup = build(cfg, problem_name)
    points = shared_points(setup.problem)
    result = train(setup.problem, setup.model, setup.stages, setup.optimizers,
                   FixedPoints(points["interior"], points["boundary"]),
                   Evaluation(points["test"], points["exact"].unsqueeze(-1)), engine=cfg.derivatives,
                   grid_update=setup.grid_update, eval_every=1, max_time=cap, progress=False)
    curve = [[row["time"], row["evaluations"], row["rel_l2"]] for row in result.history]
    return {"status": result.status, "curve": curve, "parameters": result.metrics["parameters"],
            "recipe": describe_recipe(cfg, family),
            "note": "time = train() history time" + (" (grid extensions included)" if family == "kan" else "")}


def describe_recipe(cfg, family: str) -> str:
    """The composed config's model, stages, optimizers and grid updates, in one line."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(cfg.model)
    widths = [2, *model["hidden"], 1]
    stages = ", ".join(f"{stage.optimizer} x {stage.steps}" + (f" @ grid {stage.grid_size}"
                                                                 if family == "kan" and stage.grid_size else "")
                       for stage in cfg.schedule.stages)
    used = {stage.optimizer for stage in cfg.schedule.stages}
    optimizers = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in OmegaConf.to_container(node).items()
                                                   if not k.startswith("_") and k != "line_search_fn")
                           for name, node in cfg.optim.items() if name in used)
    text = (f"kanpde {family.upper()} {widths}"
            + (f" order {model['order']} grid_size {model['grid_size']}" if family == "kan" else "")
            + f"; stages: {stages}; {optimizers}")
    if family == "kan" and cfg.grid_update:
        text += f"; grid_update every {cfg.grid_update.every} until {cfg.grid_update.until}"
    return text


def run_pykan(problem_name: str, cap: float, width=(2, 10, 1), grids=(5, 10, 20), steps=50) -> dict:
    """pykan's PDE tutorial recipe on the shared points, in float64."""
    from kan import LBFGS, MultKAN

    from kanpde.bench.step import pykan_second_derivatives

    torch.set_default_dtype(torch.float64)
    problem = make_problem(problem_name)
    points = shared_points(problem)
    x_i, x_b = points["interior"], points["boundary"]
    boundary_true = problem.exact(x_b).reshape(-1)
    clock, status = Clock(), "completed"
    checkpoint_dir = tempfile.mkdtemp(prefix="kanpde-bench-pykan-")
    # Building the first model is set-up (not on the clock, as for kanpde); refining is training.
    model = MultKAN(width=list(width), grid=grids[0], k=3, seed=1, auto_save=False, ckpt_path=checkpoint_dir,
                    symbolic_enabled=False, device="cpu").speed()
    clock.record(_error(model, points))
    clock.start()
    for grid in grids:
        if grid != model.grid:
            model.save_act = True
            model.get_act(x_i)
            model = model.refine(grid).speed()
        optimizer = LBFGS(model.parameters(), lr=1, history_size=10, line_search_fn="strong_wolfe",
                          tolerance_grad=1e-32, tolerance_change=1e-32, tolerance_ys=1e-32)

        def closure():
            optimizer.zero_grad()
            second = pykan_second_derivatives(model, x_i)  # (N, 2): u_xx, u_yy
            pde = problem.residual(x_i, PureSecond(second[:, 0], second[:, 1])).pow(2).mean()
            bc = (model(x_b).reshape(-1) - boundary_true).pow(2).mean()
            loss = problem.residual_weight * pde + bc
            loss.backward()
            clock.evaluations += 1
            return loss

        for step in range(steps):
            if step % 5 == 0 and step < 20:
                model.update_grid_from_samples(x_i)
            optimizer.step(closure)
            clock.stop()
            clock.record(_error(model, points))
            if clock.elapsed >= cap:
                status = "time_limit"
                break
            clock.start()
        if status != "completed":
            break
    clock.stop()
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"status": status, "curve": clock.curve, "parameters": parameters}


def run_deepxde(problem_name: str, cap: float, adam_iterations: int = 500,
                lbfgs_iterations: int = 500, lbfgs_chunk: int = 25) -> dict:
    """DeepXDE's MLP-PINN (pytorch backend) on the shared points.

    L-BFGS runs as calls of ``lbfgs_chunk`` iterations (``LBFGS_options["iter_per_step"]``) so that the
    error can be checked between them; ``set_LBFGS_options(maxiter=...)`` alone leaves DeepXDE's per-call
    limit at its import-time value (1000).
    """
    os.environ["DDE_BACKEND"] = "pytorch"
    with contextlib.redirect_stdout(io.StringIO()):
        import deepxde as dde
    import numpy as np

    dde.config.set_default_float("float64")
    dde.config.set_random_seed(0)
    problem = make_problem(problem_name)
    points = shared_points(problem)

    def pde(x, u):
        second = PureSecond(dde.grad.hessian(u, x, i=0, j=0)[:, 0], dde.grad.hessian(u, x, i=1, j=1)[:, 0])
        return problem.residual(x, second).unsqueeze(-1)

    geometry = dde.geometry.Rectangle([-1.0, -1.0], [1.0, 1.0])
    condition = dde.icbc.DirichletBC(geometry, lambda x: np.zeros((len(x), 1)), lambda x, on_boundary: on_boundary)
    anchors = torch.cat([points["interior"], points["boundary"]]).numpy()
    data = dde.data.PDE(geometry, pde, condition, num_domain=0, num_boundary=0, anchors=anchors)
    net = dde.nn.FNN([2] + [100] * 4 + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    clock = Clock()
    test = points["test"]

    class Tracker(dde.callbacks.Callback):
        def on_train_begin(self):
            clock.start()

        def on_batch_end(self):
            clock.stop()
            with torch.no_grad():
                clock.record(rel_l2(net(test), points["exact"]))
            if clock.elapsed >= cap:
                self.model.stop_training = True
            clock.start()

        def on_train_end(self):
            clock.stop()

    def count_evaluations():
        step = model.opt.step

        def counted(closure=None):
            def wrapped():
                clock.evaluations += 1
                return closure()
            return step(wrapped)

        model.opt.step = counted

    with contextlib.redirect_stdout(io.StringIO()):
        model.compile("adam", lr=1e-3, loss_weights=[problem.residual_weight, 1.0])
        count_evaluations()
        with torch.no_grad():
            clock.record(rel_l2(net(test), points["exact"]))
        model.train(iterations=adam_iterations, callbacks=[Tracker()], display_every=1000, verbose=0)
        if clock.elapsed < cap:
            dde.optimizers.set_LBFGS_options(maxiter=lbfgs_iterations)
            options = dde.optimizers.config.LBFGS_options
            options["iter_per_step"] = min(lbfgs_chunk, lbfgs_iterations)
            options["fun_per_step"] = options["maxfun"] * options["iter_per_step"] // options["maxiter"]
            model.compile("L-BFGS", loss_weights=[problem.residual_weight, 1.0])
            count_evaluations()
            model.train(callbacks=[Tracker()], verbose=0)
    status = "time_limit" if clock.elapsed >= cap else "completed"
    parameters = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"status": status, "curve": clock.curve, "parameters": parameters,
            "note": f"L-BFGS in calls of {lbfgs_chunk} iterations; PDE residual also at the 84 boundary anchors"}


class PureSecond:
    """The derivative accessor a Poisson problem's residual reads (u_xx, u_yy, laplacian), from given tensors."""

    def __init__(self, u_xx: torch.Tensor, u_yy: torch.Tensor):
        self.values = {"u_xx": u_xx, "u_yy": u_yy}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[name]

    def laplacian(self, output=None) -> torch.Tensor:
        return self.values["u_xx"] + self.values["u_yy"]


@torch.no_grad()
def _error(model, points) -> float:
    return rel_l2(model(points["test"]), points["exact"])


def available(method: str) -> str | None:
    """None when the method can run here, else why not."""
    from importlib.metadata import PackageNotFoundError, version

    wanted = {"pykan": ("pykan", "0.2.8"), "deepxde": ("deepxde", "1.15.0")}.get(method)
    if wanted is None:
        return None
    try:
        found = version(wanted[0])
    except PackageNotFoundError:
        return f"{wanted[0]} is not installed (pip install 'kanpde[bench]')"
    return None if found == wanted[1] else f"{wanted[0]} {found} is installed, the benchmark pins {wanted[1]}"


def summarize(method: str, problem: str, run: dict, cap: float) -> dict:
    """Thresholds reached (first curve point below each), final and best error, thinned curve."""
    curve = run.get("curve") or []
    reached = {}
    for threshold in THRESHOLDS:
        hit = next((point for point in curve if point[2] < threshold), None)
        reached[f"{threshold:.0e}"] = None if hit is None else {"time_s": hit[0], "evaluations": hit[1]}
    errors = [point[2] for point in curve if math.isfinite(point[2])]
    return {"method": method, "problem": problem, "recipe": run.get("recipe", METHODS[method]), "cap_s": cap,
            "status": run.get("status"), "note": run.get("note", ""), "parameters": run.get("parameters"),
            "final_rel_l2": curve[-1][2] if curve else None, "best_rel_l2": min(errors) if errors else None,
            "train_time_s": curve[-1][0] if curve else None, "loss_evaluations": curve[-1][1] if curve else None,
            "reached": reached, "curve": _thin(curve)}


def _thin(curve: list, keep: int = 400) -> list:
    if len(curve) <= keep:
        return curve
    stride = math.ceil(len(curve) / keep)
    return curve[::stride] + ([curve[-1]] if (len(curve) - 1) % stride else [])


def time_to_reach(curve: list, error: float) -> float | None:
    """Training time of the first curve point at or below ``error``."""
    return next((point[0] for point in curve if point[2] <= error), None)


RUNNERS: dict[str, Callable[..., dict]] = {
    **{method: (lambda problem, cap, overrides, method=method: run_kanpde(problem, method, cap, overrides))
       for method in RECIPES},
    "pykan": lambda problem, cap, overrides: run_pykan(problem, cap),
    "deepxde": lambda problem, cap, overrides: run_deepxde(problem, cap),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kanpde.bench.accuracy",
                                     description="one time-to-accuracy run (used by kanpde bench)")
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--problem", choices=PROBLEMS, required=True)
    parser.add_argument("--cap", type=float, default=120.0, help="training seconds before stopping")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for the kanpde recipes")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reason = available(args.method)
    if reason is not None:
        summary = {"method": args.method, "problem": args.problem, "recipe": METHODS[args.method],
                   "status": "unavailable", "note": reason, "reached": {f"{t:.0e}": None for t in THRESHOLDS}}
    else:
        with contextlib.redirect_stdout(sys.stderr):  # pykan and DeepXDE print progress
            run = RUNNERS[args.method](args.problem, args.cap, tuple(args.override))
        summary = summarize(args.method, args.problem, run, args.cap)
    with open(args.out, "w") as handle:
        json.dump(summary, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
