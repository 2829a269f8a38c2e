"""From a composed config to a finished run folder: build the objects, train, write the outputs.

Used by the CLI's Hydra entry point and by tests through Hydra's compose API. Nothing here parses the
command line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from kanpde.problem import Problem
from kanpde.results import save_checkpoint, write_run
from kanpde.sampling import evaluation_grid
from kanpde.training import Evaluation, GridUpdate, Stage, check_optimizer_sizes, train
from kanpde.validation import ValidationReport, check_reference, validate

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
    except Exception as error:  # Hydra wraps import errors in several types
        raise ConfigError(f"cannot import problem class {target!r}: {error}. Put your class in "
                          "./problems/<module>.py and set _target_: problems.<module>.<Class>") from None
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise ConfigError(f"problem _target_ {target!r} is not a subclass of kanpde.Problem")
    try:
        problem = instantiate(node)
    except Exception as error:
        cause = error.__cause__ or error
        raise ConfigError(f"invalid problem settings for {target}: {cause}") from None
    problem._name = name or cls.__name__.lower()
    return problem


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
    except Exception as error:
        raise ConfigError(f"invalid model, schedule or sampler settings: {error.__cause__ or error}") from None
    optimizers = {}
    for name, node in cfg.optim.items():
        _check_target(node, OPTIMIZER_PREFIXES, f"optimizer {name!r}")
        optimizers[name] = instantiate(node)
    grid_update = GridUpdate(**cfg.grid_update) if cfg.grid_update and cfg.grid_update.every >= 0 else None
    model = model.to(device=device, dtype=dtype)
    try:  # e.g. a dense Levenberg-Marquardt solve over too many parameters: refused before anything runs
        check_optimizer_sizes(model, stages, optimizers)
    except ValueError as error:
        raise ConfigError(f"{error} (schedule=lbfgs trains it with L-BFGS)") from None
    try:  # probe the user's functions on a few points before any training, and before exact() meets the test grid
        report = validate(problem, model, cfg.derivatives)
        evaluation = make_evaluation(problem, cfg.eval.points_per_side)
    except ValueError as error:  # InvalidProblem (and its TypeError variant) says what to fix
        raise ConfigError(str(error)) from None
    log.info(report.summary())
    if evaluation is not None:
        evaluation = Evaluation(evaluation.points.to(device=device, dtype=dtype),
                                evaluation.values.to(device=device, dtype=dtype))
    return Setup(problem, model, stages, optimizers, sampler, evaluation, grid_update, dtype, device, report)


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads and the BLAS thread pools (scipy's, used for J^T J) to ``threads``."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def make_evaluation(problem: Problem, points_per_side: int = 101) -> Evaluation | None:
    """Test points and true values: the problem's reference data, else its exact solution on a grid."""
    reference = problem.reference()
    if reference is not None:
        return Evaluation(*check_reference(problem, reference))
    points = evaluation_grid(problem.domain, points_per_side)
    exact = problem.exact(points)
    if exact is None:
        return None
    return Evaluation(points, exact.reshape(len(points), -1))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but torch sees no CUDA device; use device=auto or cpu")
    return torch.device(name)


def finished_run(output_dir: Path, cfg: DictConfig) -> dict | None:
    """metrics.json's content if ``output_dir`` holds a finished run of exactly ``cfg``, else None."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text())
        previous = OmegaConf.to_container(OmegaConf.load(output_dir / "config.yaml"))
    except Exception:  # missing, half-written or unparsable files: not a finished run
        return None
    same_config = previous == OmegaConf.to_container(cfg, resolve=True)
    return metrics if same_config and metrics.get("status") in FINISHED else None


def run(cfg: DictConfig, output_dir: str | os.PathLike, problem_name: str | None = None) -> dict:
    """Build from ``cfg``, train, and write the run folder ``output_dir``; returns metrics.json's content."""
    output_dir = Path(output_dir)
    if cfg.train.get("skip_if_done"):
        done = finished_run(output_dir, cfg)
        if done is not None:
            log.info("skipping %s: already %s with this config (train.skip_if_done)", output_dir, done["status"])
            return done
    output_dir.mkdir(parents=True, exist_ok=True)
    setup = build(cfg, problem_name)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    checkpoint_path = output_dir / "checkpoint.pt"

    def checkpoint(model, step):
        save_checkpoint(checkpoint_path, model, status="running", step=step)

    log.info("solving %s with %s (%d stages) in %s", setup.problem.name, type(setup.model).__name__,
             len(setup.stages), output_dir)
    result = train(setup.problem, setup.model, setup.stages, setup.optimizers, setup.sampler, setup.evaluation,
                   engine=cfg.derivatives, grid_update=setup.grid_update, eval_every=cfg.eval.every,
                   max_time=cfg.train.max_time, progress=cfg.train.progress, checkpoint=checkpoint,
                   chunk_size=cfg.train.get("chunk_size"), divergence_factor=cfg.train.get("divergence_factor", 1e8),
                   input_grad=tuple(setup.validation.autograd) if setup.validation else ())
    info = {"problem": setup.problem.name, "model": type(result.model).__name__.lower(), "seed": cfg.seed,
            "dtype": cfg.precision, "device": str(setup.device), "derivatives": cfg.derivatives,
            "n_interior": setup.sampler.n_interior}
    metrics = write_run(output_dir, result, setup.problem, setup.evaluation, info, plot=cfg.train.plot)
    summary = ", ".join(f"{k}={metrics[k]:.3e}" for k in ("rel_l2", "mse") if metrics.get(k) is not None)
    log.info("%s: %s after %d steps, %.1f s; %s", metrics["status"], summary, metrics["steps"],
             metrics["train_time"], output_dir)
    return metrics
