"""The training loop: optimizer stages, KAN grid updates and extension, stopping, evaluation.

One step = one ``optimizer.step(objective)`` (:mod:`kanpde.optim`): for L-BFGS that is ``max_iter`` iterations
with a strong-Wolfe line search, for Levenberg-Marquardt one damped Gauss-Newton iteration. A stage ends
after its steps, or earlier when the optimizer reports convergence. Between stages a KAN is extended to the
stage's grid size (a finer KAN fitted to the current one by least squares) and the optimizer starts afresh.
Errors against the exact or reference solution are measured every ``eval_every`` steps and at stage ends,
off the clock (``train_time`` counts optimisation only; ``eval_time`` says what measuring cost); optimizers
that report diagnostics, such as Levenberg-Marquardt, get a history row (losses, diagnostics) every step.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from kanpde import signals
from kanpde.metrics import Evaluation, predict  # noqa: F401 -- re-exported: kanpde.training.Evaluation
from kanpde.nn import KAN, count_parameters
from kanpde.objective import (LeastSquares, backward_in_chunks, condition_terms, evaluate_terms,  # noqa: F401
                              loss_terms, residual_magnitude, residual_terms)
from kanpde.optim import make_optimizer
from kanpde.optim.base import TorchOptimizer
from kanpde.optim.lm import check_size
from kanpde.problem import Box, Problem
from kanpde.prune import prune
from kanpde.resume import capture, check_fixed_points, restore_model, set_rng_state
from kanpde.sampling import Sampler
from kanpde.unknowns import coefficients_of, full_state, load_full_state
from kanpde.windows import check_decay, check_window, check_windows, time_decay, window_domain

log = logging.getLogger("kanpde")

STATUSES = ("completed", "time_limit", "diverged", "interrupted")


@dataclass
class Stage:
    """One phase of training.

    Args:
        optimizer: name of an entry of the ``optimizers`` mapping given to :func:`train`.
        steps: optimizer steps in this stage.
        grid_size: KAN grid size for this stage (extension happens at its start); ignored for MLPs.
        sparsity: lambda of the KAN paper's sparsity regulariser added to the loss in this stage
            (:func:`kanpde.prune.sparsity_penalty`); first-order optimizers only.
        prune: at the stage's start, remove the KAN's hidden nodes whose relative importance is below this
            (:func:`kanpde.prune.prune`); the smaller KAN trains on.
        time_window: train on t in [t_0, time_window] only (time marching, :mod:`kanpde.windows`): at the
            stage's start every point set is drawn afresh in the domain cut there; null: the whole domain.
        time_decay: weight the PDE residual's square by exp(-time_decay (t - t_0)) in this stage (the recorded
            ``loss_pde`` is then the weighted one; adaptive sampling ranks points by the plain residual)
            (:func:`kanpde.windows.time_decay`): early times first, where errors grow into later ones; 0: off.
    """

    optimizer: str = "lbfgs"
    steps: int = 100
    grid_size: int | None = None
    sparsity: float = 0.0
    prune: float | None = None
    time_window: float | None = None
    time_decay: float = 0.0

    def __post_init__(self):
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"stage steps must be an integer >= 0, got {self.steps!r}")
        if self.grid_size is not None and (int(self.grid_size) != self.grid_size or self.grid_size < 1):
            raise ValueError(f"stage grid_size must be an integer >= 1 or null, got {self.grid_size!r}")
        if not (isinstance(self.sparsity, (int, float)) and math.isfinite(self.sparsity) and self.sparsity >= 0):
            raise ValueError(f"stage sparsity must be a number >= 0 (the regulariser's lambda), got {self.sparsity!r}")
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise ValueError(f"stage prune must lie in (0, 1) (relative node importance) or be null, "
                             f"got {self.prune!r}")
        if self.time_window is not None:
            self.time_window = check_window(self.time_window)
        self.time_decay = check_decay(self.time_decay)


@dataclass(frozen=True)  # frozen: the instance in train()'s signature is shared by every call
class GridUpdate:
    """KAN grid updates from samples early in each stage: every ``every`` steps up to step ``until``."""

    every: int = 10
    until: int = 50
    margin: float = 0.1
    adaptive: float = 0.0


@dataclass
class Result:
    """What :func:`train` returns: the trained model, its history and the final metrics."""

    model: torch.nn.Module
    status: str
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    message: str = ""
    resume: dict | None = None  # an interrupted run's resume state (kanpde.resume), saved in its checkpoint


class Diverged(RuntimeError):
    """The loss or the parameters stopped being finite."""


def collocation(problem: Problem, sampler: Sampler, domain: Box | None = None) -> dict[str, torch.Tensor]:
    """Fresh point sets: ``"interior"`` and one per condition name, each (n, n_vars) float64, in ``domain``
    (the problem's by default; a time window's cut, :func:`kanpde.windows.window_domain`)."""
    domain = problem.domain if domain is None else domain
    points = {"interior": sampler.interior(domain)}
    for name, condition in problem.conditions().items():
        if condition.points is not None:  # observations: their own points (all of them, whatever the window)
            points[name] = condition.points.detach().to(torch.float64).clone()
        else:
            points[name] = sampler.on_faces(domain, condition.on, condition.n_points)
    return points


def train(problem: Problem, model: torch.nn.Module, stages: Sequence[Stage],
          optimizers: Mapping[str, Callable], sampler: Sampler, evaluation: Evaluation | None = None, *,
          engine: str = "forward", transform=None, grid_update: GridUpdate | None = GridUpdate(),
          eval_every: int = 10, max_time: float | None = None, progress: bool | None = None,
          checkpoint: Callable[[torch.nn.Module, int, dict], None] | None = None,
          chunk_size: int | None = None, divergence_factor: float = 1e8,
          input_grad: Collection[str] = (), resume: Mapping | None = None, checkpoint_every: int = 0,
          checkpoint_seconds: float | None = None) -> Result:
    """Train ``model`` on ``problem`` through ``stages``; see the module docstring.

    Args:
        optimizers: name -> factory ``f(parameters)`` returning a ``torch.optim.Optimizer`` or a
            :class:`kanpde.optim.AbstractOptimizer` such as Levenberg-Marquardt (Hydra ``_partial_``).
        sampler: draws the collocation points (and fresh interior points every ``resample_every`` steps).
        evaluation: test points with true values; ``None`` records no errors.
        engine: ``"forward"`` (forward derivative propagation) or ``"autograd"``.
        grid_update: KAN grid updates early in each stage, or ``None``.
        eval_every: steps between error measurements.
        max_time: stop after this many seconds of training (status ``time_limit``).
        progress: show a tqdm bar (``None``: only in a terminal).
        checkpoint: called as ``checkpoint(model, step, state)`` at the end of each stage and every
            ``checkpoint_every`` steps or ``checkpoint_seconds`` seconds; ``state`` is the resume state
            (:mod:`kanpde.resume`, tensors and plain data). An error it raises is logged, and training goes on.
        chunk_size: process interior points in chunks of this size (bounded memory, same gradient).
        divergence_factor: a loss above this multiple of the stage's best counts as divergence (float64
            can hold an exploding loss of 1e70 without ever reaching inf).
        input_grad: point sets (``"interior"`` or condition names) whose residuals need mixed or higher
            derivatives (``ValidationReport.autograd``); their points require grad from the start, so the
            derivative engine does not compute the forward jet twice per step.
        resume: a resume state (``Result.resume``, or a checkpoint's ``"resume"`` section) to continue from
            exactly where it was taken; ``model`` gives dtype and device (and is reused if its grid fits).
    """
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1 or None, got {chunk_size!r}")
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an integer >= 0 (steps; 0: off), got {checkpoint_every!r}")
    if checkpoint_seconds is not None and not checkpoint_seconds > 0:
        raise ValueError(f"checkpoint_seconds must be a number > 0 or None, got {checkpoint_seconds!r}")
    for stage in stages:
        if stage.optimizer not in optimizers:
            raise ValueError(f"stage optimizer {stage.optimizer!r} is not configured; known: {sorted(optimizers)}")
        if (stage.sparsity or stage.prune is not None) and not isinstance(model, KAN):
            raise ValueError(f"stage sparsity and prune act on KAN edges; this model is a {type(model).__name__}")
        if stage.sparsity and not isinstance(make_optimizer(optimizers[stage.optimizer], model), TorchOptimizer):
            raise ValueError(f"stage sparsity needs a first-order optimizer (lbfgs, adam): {stage.optimizer!r} "
                             "minimises a sum of squares, which the regulariser is not")
    check_windows(problem, stages, sampler)
    reference = next(model.parameters())
    dtype, device = reference.dtype, reference.device
    check_optimizer_sizes(model, stages, optimizers)
    history: list[dict] = []
    state = {"step": 0, "train_time": 0.0}
    if resume is not None:
        model = restore_model(resume, like=model)
        fresh = resume["points"]
        check_fixed_points(problem, fresh)
        sampler.load_state_dict(resume["sampler_state"])
        history = [dict(row) for row in resume["history"]]
        state = {"step": int(resume["step"]), "train_time": float(resume["train_time"])}
        set_rng_state(resume["rng"])
    else:
        window = stages[0].time_window if stages else None
        fresh = collocation(problem, sampler, window_domain(problem, window))
    points = {k: v.to(dtype=dtype, device=device).requires_grad_(k in input_grad) for k, v in fresh.items()}
    objective = LeastSquares(problem, model, points, engine=engine, transform=transform, chunk_size=chunk_size,
                             input_grad=input_grad)
    coefficients = coefficients_of(problem)  # unknown coefficients, trained with the model (or None)
    if coefficients is not None:
        coefficients.to(dtype=dtype, device=device)
        if resume is not None:
            load_full_state(model, coefficients, resume["model_state"])

    def copied() -> dict:
        """The model's state and the unknowns', copied: restored on divergence or an interrupt."""
        return full_state(model, coefficients)

    if isinstance(model, KAN):
        _warn_outside(model, torch.cat(list(points.values())))
    total_steps = sum(stage.steps for stage in stages)
    bar = tqdm(total=total_steps, initial=state["step"], disable=(not progress) if progress is not None else None,
               desc=problem.name, dynamic_ncols=True)
    last_good = copied()  # certified by a finite loss: restored on divergence
    last_step = last_good  # after the last completed step: restored on an interrupt
    if resume is not None:
        objective.evaluations = int(resume["evaluations"])
        last_good = resume["last_good"]
    status, message, checkpoint_errors = "completed", "", []
    errors: dict[str, float] = {}
    start = time.perf_counter()
    saved_at = time.monotonic()
    snapshot = None  # the loop's state after the last completed step: what an interrupt saves for resume
    eval_time = [0.0]  # seconds spent measuring errors (off the training clock, on the wall clock)

    def all_points():
        return torch.cat(list(points.values()))

    interior_graph = "interior" in input_grad  # the interior residual needs autograd (mixed derivatives)
    adaptive = getattr(sampler, "adaptive", None)  # samplers without adaptive sampling may omit the attribute

    def record(stage_index: int, info: Mapping[str, float] | None = None, measure: bool = True):
        """A history row at the current parameters (off the clock), with errors if ``measure``. The loss is
        evaluated afresh (the last closure call of an L-BFGS step may be a line-search trial that was not
        accepted) unless it is known at exactly these parameters (the trial an LM step accepted)."""
        nonlocal errors
        terms = objective.current_terms()
        row = {"step": state["step"], "stage": stage_index, "grid_size": getattr(model, "grid_size", ""),
               "time": round(state["train_time"], 4), "evaluations": objective.evaluations,
               "n_interior": len(points["interior"]),
               "loss": sum(terms.values()), **{f"loss_{k}": v for k, v in terms.items()}, **(info or {}),
               **problem.unknowns}
        if evaluation is not None and measure:
            tick = time.perf_counter()
            errors = evaluation.errors(model, getattr(problem, "hard_constraint", None))
            eval_time[0] += time.perf_counter() - tick
            row.update(errors)
        history.append(row)
        postfix = {"loss": f"{row['loss']:.2e}"}
        if errors:
            postfix["rel_l2"] = f"{errors['rel_l2']:.2e}"
        bar.set_postfix(postfix, refresh=False)

    def adapt_points():
        """Residual-based adaptive sampling: the next interior set (the caller restarts the optimizer)."""
        def magnitude(pool):
            pool = pool.to(dtype=dtype, device=device)
            return residual_magnitude(problem, model, pool, engine, transform, interior_graph).cpu().numpy()

        fresh = sampler.adapt(problem.domain, points["interior"], magnitude)
        points["interior"] = fresh.to(dtype=dtype, device=device).requires_grad_(interior_graph)

    def take(stage_index, step_in_stage, stage_done, optimizer, best_loss):
        return capture(stage_index, step_in_stage, stage_done, state, objective.evaluations, best_loss, model,
                       last_step, last_good, optimizer, points, sampler, len(history))

    def save(snap, force: bool = False):
        """The checkpoint callback, when due; its failures (a full disk, a read-only folder) cost the
        checkpoint, never the run."""
        nonlocal saved_at
        due = force or (checkpoint_every and snap.step % checkpoint_every == 0) or \
            (checkpoint_seconds is not None and time.monotonic() - saved_at >= checkpoint_seconds)
        if checkpoint is None or not due:
            return
        try:
            checkpoint(model, snap.step, snap.payload(history))
        except Exception as error:  # noqa: BLE001 -- any failure to write is the same fault: no checkpoint
            if not checkpoint_errors:
                log.error("cannot write a checkpoint at step %d (%s: %s); training goes on", snap.step,
                          type(error).__name__, error)
            checkpoint_errors.append(f"step {snap.step}: {type(error).__name__}: {error}")
        saved_at = time.monotonic()

    first_stage = int(resume["stage"]) if resume is not None else 0
    decays: dict[float, Callable | None] = {}  # one scale per decay rate: the same function keeps kept passes valid
    try:
        for stage_index, stage in enumerate(stages):
            if stage_index < first_stage:
                continue
            objective.sparsity = stage.sparsity
            objective.set_residual_scale(decays.setdefault(stage.time_decay, time_decay(problem, stage.time_decay)))
            factory = optimizers[stage.optimizer]
            within = resume is not None and stage_index == first_stage and int(resume["step_in_stage"]) > 0
            if within:  # continue the stage the resume state was taken in: no extension, the optimizer's state
                optimizer = make_optimizer(factory, model, objective.unknowns)
                optimizer.load_state_dict(resume["optimizer_state"])
                best_loss = float(resume["best_loss"])
                first_step = stage.steps + 1 if resume["stage_done"] else int(resume["step_in_stage"]) + 1
            else:
                if adaptive is not None and stage.steps > 0 and adaptive.due(state["step"], stage_index > 0):
                    tick = time.perf_counter()  # before the extension, so that new knots see the new points
                    adapt_points()
                    state["train_time"] += time.perf_counter() - tick
                if stage_index > 0 and window_domain(problem, stage.time_window).upper \
                        != window_domain(problem, stages[stage_index - 1].time_window).upper:
                    tick = time.perf_counter()  # the next time window: fresh points there, before the extension
                    for name, fresh in collocation(problem, sampler, window_domain(problem, stage.time_window)).items():
                        points[name] = fresh.to(dtype=dtype, device=device).requires_grad_(name in input_grad)
                    if isinstance(model, KAN) and grid_update is not None:  # hidden grids follow the new times
                        model.update_grid(all_points(), grid_update.margin, grid_update.adaptive)
                        last_good = last_step = copied()
                    state["train_time"] += time.perf_counter() - tick
                if stage.prune is not None:
                    tick = time.perf_counter()
                    widths = model.widths
                    model = prune(model, all_points(), stage.prune)
                    objective.set_model(model)
                    state["train_time"] += time.perf_counter() - tick
                    last_good = last_step = copied()
                    log.info("stage %d: pruned KAN %s -> %s", stage_index, widths, model.widths)
                if isinstance(model, KAN) and stage.grid_size is not None and stage.grid_size != model.grid_size:
                    tick = time.perf_counter()  # extension is part of training: on the clock
                    model = model.extend_grid(stage.grid_size, all_points(),
                                              margin=grid_update.margin if grid_update else 0.1,
                                              adaptive=grid_update.adaptive if grid_update else 0.0)
                    objective.set_model(model)
                    state["train_time"] += time.perf_counter() - tick
                    last_good = last_step = copied()
                optimizer = make_optimizer(factory, model, objective.unknowns)
                best_loss = math.inf
                if state["step"] == 0:
                    record(stage_index)
                first_step = 1

            for step_in_stage in range(first_step, stage.steps + 1):
                if max_time is not None and state["train_time"] >= max_time:
                    status, message = "time_limit", f"stopped after {state['train_time']:.1f} s (max_time={max_time})"
                    break
                tick = time.perf_counter()
                if isinstance(model, KAN) and grid_update is not None and grid_update.every > 0 \
                        and step_in_stage % grid_update.every == 0 and step_in_stage <= grid_update.until:
                    model.update_grid(all_points(), grid_update.margin, grid_update.adaptive)
                    optimizer = make_optimizer(factory, model, objective.unknowns)
                if sampler.resample_every and state["step"] > 0 and state["step"] % sampler.resample_every == 0:
                    points["interior"] = sampler.interior(problem.domain).to(dtype=dtype, device=device)
                    points["interior"].requires_grad_(interior_graph)
                    optimizer = make_optimizer(factory, model, objective.unknowns)
                if adaptive is not None and step_in_stage > 1 and adaptive.due(state["step"], stage_start=False):
                    adapt_points()
                    optimizer = make_optimizer(factory, model, objective.unknowns)
                before = copied()
                # The report's loss is the loss at the parameters *before* the step: a finite, bounded value
                # certifies ``before``, which becomes the state restored if a later step diverges.
                report = optimizer.step(objective)
                state["train_time"] += time.perf_counter() - tick
                state["step"] += 1
                bar.update(1)
                _check_loss(report.loss, best_loss, divergence_factor, state["step"], stage_index)
                best_loss = min(best_loss, report.loss)
                last_good, last_step = before, copied()
                # Optimizers that report diagnostics (Levenberg-Marquardt), and problems with unknown coefficients,
                # get a history row every step (for L-BFGS and Adam that costs one more loss evaluation per step);
                # errors are measured every eval_every steps and at stage ends (a 3-D test grid costs a step).
                measure = bool(report.converged) or step_in_stage == stage.steps or state["step"] % eval_every == 0
                if measure or report.info or coefficients is not None:
                    record(stage_index, report.info, measure)
                snapshot = take(stage_index, step_in_stage, bool(report.converged) or step_in_stage == stage.steps,
                                optimizer, best_loss)
                save(snapshot)
                if report.converged:
                    log.info("stage %d: %s after %d steps; next stage", stage_index, report.converged, step_in_stage)
                    bar.update(stage.steps - step_in_stage)
                    break
            # certify the parameters after the stage's last step
            _check_loss(objective.loss(), best_loss, divergence_factor, state["step"], stage_index)
            last_good = last_step = copied()
            if status != "completed":  # stopped by max_time: the state after the last step, for the record
                if snapshot is not None:
                    save(snapshot, force=True)
                break
            snapshot = take(stage_index + 1, 0, False, None, math.inf)  # the next stage, not yet begun
            save(snapshot, force=True)
    except Diverged as error:
        load_full_state(model, coefficients, last_good)
        status, message = "diverged", str(error)
        log.error("diverged: %s; the last finite parameters are kept", error)
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM under kanpde.signals.interrupts_raise
        # The state after the last completed step, unless that step left non-finite parameters (not yet checked).
        finite = all(torch.isfinite(v).all() for v in last_step.values() if v.is_floating_point())
        load_full_state(model, coefficients, last_step if finite else last_good)
        stopped_by = signals.signal_of(error)
        status, message = "interrupted", signals.describe(stopped_by, state["step"])
        log.warning("%s; saving the last completed step", message)
    finally:
        bar.close()
    if evaluation is not None:
        tick = time.perf_counter()
        errors = evaluation.errors(model, getattr(problem, "hard_constraint", None))
        eval_time[0] += time.perf_counter() - tick
    metrics = {
        "status": status,
        **errors,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "steps": state["step"],
        "loss_evaluations": objective.evaluations,
        "train_time": state["train_time"],
        "wall_time": time.perf_counter() - start,
        "eval_time": eval_time[0],
        "parameters": count_parameters(model),
        "grid_size": getattr(model, "grid_size", None),
        "n_interior_final": len(points["interior"]),
    }
    if status == "interrupted":
        metrics["signal"] = signal.Signals(stopped_by).name
    if checkpoint_errors:
        metrics["checkpoint_errors"] = checkpoint_errors
        message = (message + "; " if message else "") + f"{len(checkpoint_errors)} checkpoint write(s) failed"
    if coefficients is not None:
        metrics["unknowns"] = coefficients.report()
    if resume is not None:
        metrics["resumed_at_step"] = int(resume["step"])
    # What a later run needs to continue: an interrupted run's state after its last completed step.
    resume_state = snapshot.payload(history) if status == "interrupted" and snapshot is not None else None
    return Result(model, status, metrics, history, message, resume_state)


def check_optimizer_sizes(model: torch.nn.Module, stages: Sequence[Stage], optimizers: Mapping[str, Callable]) -> None:
    """Refuse, before any training, a stage whose optimizer cannot take the model at that stage's size
    (a dense Gauss-Newton solve over too many parameters)."""
    grid = getattr(model, "grid_size", None)
    for stage in stages:
        if isinstance(model, KAN) and stage.grid_size is not None:
            grid = stage.grid_size  # a stage without one trains at the last extended grid
        limit = getattr(make_optimizer(optimizers[stage.optimizer], model), "max_parameters", None)
        if limit is None:
            continue
        size = model.count_parameters(grid) if isinstance(model, KAN) else count_parameters(model)
        check_size(size, limit, next(model.parameters()).dtype)


def _warn_outside(model: KAN, points: torch.Tensor, tolerance: float = 0.01) -> None:
    """Warn when collocation points (N, d) leave the first layer's grid: the spline branch is zero there, and
    those points train the SiLU branch alone (a KAN built for [-1, 1] on a problem on [0, 2])."""
    fraction = model.fraction_outside_grid(points.detach())[0]
    if fraction > tolerance:
        knots = model.layers[0].knots
        ranges = [(round(float(lo), 4), round(float(hi), 4))
                  for lo, hi in zip(knots[:, model.order], knots[:, -model.order - 1])]
        log.warning("%.1f%% of the collocation points' coordinates lie outside the KAN's input grid %s, where its "
                    "splines are zero; build it with grid_range=problem.domain.ranges (kanpde.nn.build_kan does)",
                    100 * fraction, ranges)


def _check_loss(loss, best_loss: float, factor: float, step: int, stage_index: int) -> None:
    """Raise :class:`Diverged` when ``loss`` is missing, not finite, or ``factor`` times the best so far."""
    value = float(loss.detach()) if torch.is_tensor(loss) else (math.nan if loss is None else float(loss))
    if not math.isfinite(value) or (math.isfinite(best_loss) and value > factor * max(best_loss, 1e-300)):
        raise Diverged(f"the loss became {value:.3g} at step {step} (stage {stage_index}, best so far "
                       f"{best_loss:.3g}); lower the learning rate, use precision=float64 or an L-BFGS stage")
