"""From a composed config to a finished run folder: build the objects, train, write the outputs.

Used by the CLI's Hydra entry point and by tests through Hydra's compose API. Nothing here parses the
command line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from kanpde import signals
from kanpde.nn import KAN
from kanpde.problem import Problem
from kanpde.results import CHECKPOINT, save_checkpoint, write_run
from kanpde.resume import (RUN_ONLY, CheckpointError, FolderInUse, check_fixed_points, config_drift, describe_drift,
                           folder_lock, in_use, resume_state)
from kanpde.sampling import evaluation_grid, grid_side
from kanpde.settings import SettingsError, check_settings
from kanpde.metrics import Evaluation
from kanpde.training import GridUpdate, Stage, check_optimizer_sizes, train
from kanpde.unknowns import coefficients_of
from kanpde.validation import ValidationReport, check_reference, validate
from kanpde.windows import check_windows

log = logging.getLogger("kanpde")

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
FINISHED = ("completed", "time_limit")  # statuses a rerun with train.skip_if_done leaves alone
OPTIMIZER_PREFIXES = ("torch.optim.", "kanpde.")
MODEL_PREFIXES = ("kanpde.",)


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


def add_user_paths(folder: str | os.PathLike | None = None) -> None:
    """Make ``<folder>/problems`` importable as ``problems.*`` (the working folder by default)."""
    folder = str(Path(folder or os.getcwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _check_target(node, prefixes, what: str) -> None:
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str) or not target.startswith(prefixes):
        raise ConfigError(f"{what} must have a _target_ starting with one of {prefixes}, got {target!r}")


def build_problem(cfg: DictConfig, name: str | None = None) -> Problem:
    """Instantiate ``cfg.problem`` after checking that its target is a :class:`Problem` subclass."""
    node = cfg.problem
    target = node.get("_target_")
    if not target:
        raise ConfigError("the problem config needs a _target_: the import path of a kanpde.Problem subclass")
    try:
        cls = get_class(target)
    except (ImportError, ValueError) as error:  # Hydra reports a missing module or class as ImportError
        if error.__cause__ is not None and not isinstance(error.__cause__, (ImportError, AttributeError)):
            raise error.__cause__  # the module exists but fails on import: a bug in it, shown with its traceback
        raise ConfigError(f"cannot import problem class {target!r}: {error}. Put your class in "
                          "./problems/<module>.py and set _target_: problems.<module>.<Class>") from None
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise ConfigError(f"problem _target_ {target!r} is not a subclass of kanpde.Problem")
    try:
        problem = instantiate(node)
    except Exception as error:  # noqa: BLE001 -- sorted by _settings_error: only bad settings become ConfigError
        raise ConfigError(f"invalid problem settings for {target}: {_settings_error(error)}") from None
    problem._name = name or cls.__name__.lower()
    return problem


def _settings_error(error: Exception) -> Exception:
    """The settings error behind an exception from building an object, re-raising anything else.

    Constructors report bad values as ValueError or TypeError (an unknown or missing argument is a TypeError
    too); Hydra and OmegaConf report bad targets and nodes as their own errors. Anything else (an IndexError,
    an AttributeError deep inside kanpde) is a bug: it propagates with its traceback, not as a config error.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cause = error.__cause__ or error
    if isinstance(cause, (ValueError, TypeError, ImportError, HydraException, OmegaConfBaseException)):
        return cause
    raise cause


@dataclass
class Setup:
    """Everything a run needs, built from the config."""

    problem: Problem
    model: torch.nn.Module
    stages: list[Stage]
    optimizers: dict
    sampler: object
    evaluation: Evaluation | None
    grid_update: GridUpdate | None
    dtype: torch.dtype
    device: torch.device
    validation: ValidationReport | None = None


def build(cfg: DictConfig, problem_name: str | None = None) -> Setup:
    """Build problem, model, stages, optimizers, sampler and evaluation set from ``cfg``."""
    check_run_settings(cfg)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
    dtype = PRECISIONS[cfg.precision]
    device = _device(cfg.device)
    if cfg.get("threads"):
        set_threads(int(cfg.threads))
    problem = build_problem(cfg, problem_name)
    box = problem.domain
    _check_target(cfg.model, MODEL_PREFIXES, "the model config")
    try:
        model = instantiate(cfg.model, n_in=box.dim, n_out=len(problem.outputs), input_range=box.ranges)
        stages = [Stage(**OmegaConf.to_container(stage, resolve=True)) for stage in cfg.schedule.stages]
        sampler = instantiate(cfg.sampler)
    except Exception as error:  # noqa: BLE001 -- sorted by _settings_error: only bad settings become ConfigError
        raise ConfigError(f"invalid model, schedule or sampler settings: {_settings_error(error)}") from None
    optimizers = {}
    for name, node in cfg.optim.items():
        _check_target(node, OPTIMIZER_PREFIXES, f"optimizer {name!r}")
        optimizers[name] = instantiate(node)
    grid_update = GridUpdate(**cfg.grid_update) if cfg.grid_update and cfg.grid_update.every >= 0 else None
    model = model.to(device=device, dtype=dtype)
    coefficients = coefficients_of(problem)
    if coefficients is not None:  # unknown coefficients live beside the network, in its dtype and on its device
        coefficients.to(device=device, dtype=dtype)
    try:  # e.g. a dense Levenberg-Marquardt solve over too many parameters: refused before anything runs
        check_optimizer_sizes(model, stages, optimizers)
    except ValueError as error:
        raise ConfigError(f"{error} (schedule=lbfgs trains it with L-BFGS)") from None
    try:  # probe the user's functions on a few points before any training, and before exact() meets the test grid
        report = validate(problem, model, cfg.derivatives)
        evaluation = make_evaluation(problem, cfg.eval.get("points_per_side"), cfg.eval.get("n_points", 10201))
    except ValueError as error:  # InvalidProblem (and its TypeError variant) says what to fix
        raise ConfigError(str(error)) from None
    check_spline_order(model, report.derivative_order)
    log.info(report.summary())
    if evaluation is not None:
        evaluation = Evaluation(evaluation.points.to(device=device, dtype=dtype),
                                evaluation.values.to(device=device, dtype=dtype), evaluation.outputs)
    return Setup(problem, model, stages, optimizers, sampler, evaluation, grid_update, dtype, device, report)


def check_run_settings(cfg: DictConfig) -> None:
    """Unknown keys and wrongly typed values among the run settings (``kanpde.settings``), as ConfigError."""
    try:
        check_settings(cfg)
    except SettingsError as error:
        raise ConfigError(str(error)) from None


def check_spline_order(model: torch.nn.Module, derivative_order: int) -> None:
    """Refuse a KAN whose splines cannot have the derivatives the residual reads: B-splines of order k are
    piecewise polynomials of degree k, so with k = 1 every second derivative is 0 inside each grid cell and
    training fits the SiLU branch alone (``solve poisson model.order=1`` ended at rel_l2 1.17)."""
    order = getattr(model, "order", None)
    if isinstance(model, KAN) and order is not None and order < derivative_order:
        raise ConfigError(f"model.order={order}: B-splines of order {order} have no derivative of order "
                          f"{derivative_order} (it is 0 inside every grid cell), and the residual reads derivatives "
                          f"of order {derivative_order}; use model.order >= {derivative_order} (3: cubic, 5: quintic)")


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads and the BLAS thread pools (scipy's, used for J^T J) to ``threads``."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def make_evaluation(problem: Problem, points_per_side: int | None = None, n_points: int = 10201) -> Evaluation | None:
    """Test points and true values: the problem's reference data, else its exact solution on a grid of
    ``points_per_side`` per side, or (None) of at most ``n_points`` points in all, whatever the dimension."""
    reference = problem.reference()
    if reference is not None:
        return Evaluation(*check_reference(problem, reference), tuple(problem.outputs))
    if points_per_side is None:
        points_per_side = grid_side(n_points, problem.domain.dim)
    elif isinstance(points_per_side, bool) or int(points_per_side) != points_per_side or points_per_side < 2:
        raise ValueError(f"eval.points_per_side must be an integer >= 2 or null (then eval.n_points sizes the grid), "
                         f"got {points_per_side!r}")
    points = evaluation_grid(problem.domain, int(points_per_side))
    exact = problem.exact(points)
    if exact is None:
        return None
    return Evaluation(points, exact.reshape(len(points), -1), tuple(problem.outputs))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but torch sees no CUDA device; use device=auto or cpu")
    return torch.device(name)


def finished_run(output_dir: Path, cfg: DictConfig) -> dict | None:
    """metrics.json's content if ``output_dir`` holds a finished run of ``cfg`` (keys that change no number,
    such as ``resume`` or ``train.plot``, may differ), else None."""
    previous = _saved_config(output_dir)
    metrics = _saved_metrics(output_dir)
    if previous is None or metrics is None or config_drift(previous, _plain(cfg), ignore=RUN_ONLY):
        return None
    return metrics if metrics.get("status") in FINISHED else None


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def _saved_config(folder: Path) -> dict | None:
    try:
        return OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
    except Exception:  # noqa: BLE001 -- missing, half-written or unparsable: no run there
        return None


def _saved_metrics(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Previous:
    """An earlier run of the same config: its folder, metrics.json (if any) and resume state (if any)."""

    folder: Path
    metrics: dict | None
    state: dict | None

    @property
    def done(self) -> bool:
        """Finished for good: completed, stopped by max_time, or diverged (rerunning would diverge again)."""
        return self.metrics is not None and self.metrics.get("status") in (*FINISHED, "diverged")


def find_previous(cfg: DictConfig, output_dir: Path) -> Previous | None:
    """The run ``cfg.resume`` points at: ``auto`` -- ``output_dir`` itself if it holds a run of this config
    (a rerun sweep with a fixed sweep dir), else the newest folder beside it with this config; or a path.

    A path whose run had another config is refused, naming the differing keys."""
    current = _plain(cfg)
    if cfg.resume == "auto":
        siblings = [p for p in output_dir.parent.iterdir() if p.is_dir() and p != output_dir] \
            if output_dir.parent.is_dir() else []
        siblings.sort(key=lambda p: (p / "config.yaml").stat().st_mtime if (p / "config.yaml").is_file() else 0,
                      reverse=True)
        for folder in [output_dir, *siblings]:
            previous = _saved_config(folder)
            if previous is not None and not config_drift(previous, current) and not in_use(folder):
                return _previous(folder)  # (a run of this config that another process is training is not ours)
        return None
    folder = Path(str(cfg.resume)).expanduser()
    previous = _saved_config(folder)
    if previous is None:
        raise ConfigError(f"resume={cfg.resume}: no run folder there (no readable config.yaml); give the folder "
                          "of an earlier run (results/runs/<problem>/<run>), or resume=auto")
    drift = config_drift(previous, current)
    if drift:
        raise ConfigError(f"resume={cfg.resume}: that run had other settings, and resuming would mix two configs "
                          f"({describe_drift(drift, previous, current)}). Resume with the run's own settings, or "
                          "start a new run (resume=null)")
    return _previous(folder)


def _previous(folder: Path) -> Previous:
    state = None
    if (folder / CHECKPOINT).is_file():
        try:
            state = resume_state(folder / CHECKPOINT)
        except CheckpointError as error:
            raise ConfigError(f"cannot resume {folder}: {error}") from None
    return Previous(folder, _saved_metrics(folder), state)


def run(cfg: DictConfig, output_dir: str | os.PathLike, problem_name: str | None = None) -> dict:
    """Build from ``cfg``, train, and write the run folder ``output_dir``; returns metrics.json's content.

    With ``resume`` set, an earlier run of this config is continued in its own folder from its checkpoint,
    or reported (not retrained) when it had finished. SIGINT and SIGTERM end training with status
    ``interrupted`` and a checkpoint of the last completed step (metrics.json says which signal).
    """
    output_dir = Path(output_dir)
    check_run_settings(cfg)
    if cfg.train.get("skip_if_done"):
        done = finished_run(output_dir, cfg)
        if done is not None:
            log.info("skipping %s: already %s with this config (train.skip_if_done)", output_dir, done["status"])
            return done
    state = None
    previous = find_previous(cfg, output_dir) if cfg.get("resume") else None
    if previous is not None:
        if previous.done:
            log.info("%s already %s with this config (at step %s); not retrained (resume=%s)", previous.folder,
                     previous.metrics["status"], previous.metrics.get("steps"), cfg.resume)
            return previous.metrics
        output_dir, state = previous.folder, previous.state
        if state is None:
            log.warning("%s has no resume state (stopped before its first checkpoint): training it afresh", output_dir)
        else:
            log.info("resuming %s from step %d (stage %d)", output_dir, state["step"], state["stage"])
    elif cfg.get("resume"):
        log.info("no earlier run with this config to resume (resume=%s): starting afresh", cfg.resume)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(output_dir):
            return _train_in(cfg, output_dir, problem_name, state)
    except FolderInUse as error:
        raise ConfigError(str(error)) from None


def _train_in(cfg: DictConfig, output_dir: Path, problem_name: str | None, state: dict | None) -> dict:
    """:func:`run`'s work once the folder is chosen (and held): build, train from ``state`` or afresh, write."""
    checkpoint_path = output_dir / CHECKPOINT

    def checkpoint(model, step, resume):
        save_checkpoint(checkpoint_path, model, resume, status="running", step=step,
                        unknowns=dict(setup.problem.unknowns))

    with signals.interrupts_raise():  # SIGTERM too: a run stopped by SLURM or a closed terminal keeps its work
        setup = build(cfg, problem_name)
        if state is not None:
            try:
                check_fixed_points(setup.problem, state["points"])
            except CheckpointError as error:
                raise ConfigError(f"cannot resume {output_dir}: {error}") from None
        try:  # stage time windows and decay need a variable t (a problem-specific schedule with another problem)
            check_windows(setup.problem, setup.stages, setup.sampler)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info("solving %s with %s (%d stages) in %s", setup.problem.name, type(setup.model).__name__,
                 len(setup.stages), output_dir)
        result = train(setup.problem, setup.model, setup.stages, setup.optimizers, setup.sampler, setup.evaluation,
                       engine=cfg.derivatives, grid_update=setup.grid_update, eval_every=cfg.eval.every,
                       max_time=cfg.train.max_time, progress=cfg.train.progress, checkpoint=checkpoint,
                       chunk_size=cfg.train.get("chunk_size"),
                       divergence_factor=cfg.train.get("divergence_factor", 1e8),
                       input_grad=tuple(setup.validation.autograd) if setup.validation else (), resume=state,
                       checkpoint_every=cfg.train.get("checkpoint_every", 0),
                       checkpoint_seconds=cfg.train.get("checkpoint_seconds"))
    info = {"problem": setup.problem.name, "model": type(result.model).__name__.lower(), "seed": cfg.seed,
            "dtype": cfg.precision, "device": str(setup.device), "derivatives": cfg.derivatives,
            "n_interior": setup.sampler.n_interior}
    with signals.interrupts_held() as held:  # a signal now would leave half a run folder: finish it first
        metrics = write_run(output_dir, result, setup.problem, setup.evaluation, info, plot=cfg.train.plot)
    if held:
        log.warning("%s arrived while the run folder was written; it is complete", signal.Signals(held[0]).name)
    keys = ("rel_l2", "mse", *(k for k in metrics if k.startswith("rel_l2_")))  # several outputs: each one's too
    summary = ", ".join(f"{k}={metrics[k]:.3e}" for k in keys if metrics.get(k) is not None)
    log.info("%s: %s after %d steps, %.1f s; %s", metrics["status"], summary, metrics["steps"],
             metrics["train_time"], output_dir)
    for name, unknown in metrics.get("unknowns", {}).items():
        truth = f" (true {unknown['true']:.7g}, relative error {unknown['rel_error']:.2e})" if "true" in unknown else ""
        log.info("identified %s = %.7g%s", name, unknown["value"], truth)
    return metrics
