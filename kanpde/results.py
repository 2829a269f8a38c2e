"""Run folders: checkpoints, metrics.json, history.csv, prediction.npz and plots."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kanpde import plots
from kanpde.nn.build import model_from_spec, model_spec
from kanpde.resume import read_checkpoint
from kanpde.metrics import Evaluation, predict
from kanpde.training import Result

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, resume: dict | None = None, **meta) -> None:
    """Write ``model`` (spec + state dict), plain ``meta`` and an optional resume state (:mod:`kanpde.resume`)
    atomically: a temp file, then a rename, so a crash mid-write leaves the previous checkpoint whole."""
    path = Path(path)
    payload = {"model_spec": model_spec(model), "state_dict": model.state_dict(), "meta": meta}
    if resume is not None:
        payload["resume"] = resume
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """The model saved at ``path`` and its metadata; loads tensors and plain data only (``weights_only=True``),
    raising :class:`kanpde.resume.CheckpointError` for a corrupt file or one holding other objects."""
    payload = read_checkpoint(path, map_location)
    model = model_from_spec(payload["model_spec"])
    state = payload["state_dict"]
    model.to(next(iter(state.values())).dtype)
    model.load_state_dict(state)
    return model, payload.get("meta", {})


def environment() -> dict:
    """Versions and machine, recorded beside every figure."""
    import scipy

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def write_history(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def json_safe(value):
    """Plain JSON data: NaN/inf become null (JSON has neither), numpy scalars Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_run(folder: str | os.PathLike, result: Result, problem, evaluation: Evaluation | None,
              info: dict | None = None, plot: bool = True) -> dict:
    """Write every output of a run into ``folder``; returns the metrics written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics = {**result.metrics, **(info or {}), "message": result.message, "environment": environment()}
    files = ["metrics.json", "history.csv"]
    try:  # a checkpoint that cannot be written (a full disk) must not cost metrics.json
        save_checkpoint(folder / CHECKPOINT, result.model, result.resume, status=result.status,
                        step=result.metrics.get("steps", 0), unknowns=dict(getattr(problem, "unknowns", {})))
        files.append(CHECKPOINT)
    except (OSError, RuntimeError) as error:  # torch.save reports some write failures as RuntimeError
        failure = f"final: {type(error).__name__}: {error}"
        metrics["checkpoint_errors"] = [*metrics.get("checkpoint_errors", []), failure]
    write_history(folder / "history.csv", result.history)
    if evaluation is not None:
        predicted = predict(result.model, evaluation.points, getattr(problem, "hard_constraint", None)).cpu().numpy()
        reference = evaluation.values.cpu().numpy()
        # Shown and saved in the problem's physical coordinates (e.g. x rather than a stretched s).
        physical, names = problem.physical_points(evaluation.points)
        points = physical.detach().cpu().numpy()
        np.savez_compressed(folder / "prediction.npz", points=points, predicted=predicted, reference=reference,
                            variables=np.array(names), outputs=np.array(problem.outputs),
                            solver_points=evaluation.points.cpu().numpy(),
                            solver_variables=np.array(problem.variables))
        files.append("prediction.npz")
        if plot:
            files += plots.solution_plots(folder, points, predicted, reference, names, problem.outputs)
    if plot:
        for name in (plots.history_plot(folder, result.history),
                     plots.unknowns_plot(folder, result.history, result.metrics.get("unknowns", {}))):
            if name:
                files.append(name)
    metrics["files"] = files
    metrics["output_time"] = time.perf_counter() - start  # predictions, checkpoint, history and plots
    metrics = json_safe(metrics)
    with open(folder / "metrics.json", "w") as handle:
        json.dump(metrics, handle, indent=2)
    return metrics
