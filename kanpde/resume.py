"""Exact resume: the training loop's whole state after a completed step, and finding the run to continue.

A :class:`Snapshot` holds everything the rest of a run depends on: the network (its grids are buffers in the
state dict, its shape in the spec), the optimizer's state (L-BFGS history, Adam moments, Levenberg-Marquardt's
damping), where the loop stands (stage, step, whether the stage's steps are done), the collocation points
(adaptive ones included), the sampler's draw counter (every draw's seed derives from it), the RNG states,
the history and the training time. Continuing from it repeats the uninterrupted run operation for operation
(one thread, the same dtype): what the objective caches (the kept trial forward pass, the cell order) is
rebuilt from the same parameters and points and gives the same numbers.

Checkpoints store it as tensors and plain data only, so it loads with ``torch.load(weights_only=True)``:
nothing in a checkpoint can run code.
"""

from __future__ import annotations

import copy
import os
import pickle
import random
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kanpde.nn.build import model_from_spec, model_spec
from kanpde.unknowns import PREFIX

FORMAT = 1  # version of the resume section of checkpoint.pt

# Keys that never change a run's numbers: they may differ between a run and its rerun or resumption.
RUN_ONLY = ("resume", "train.progress", "train.plot", "train.skip_if_done", "train.checkpoint_every",
            "train.checkpoint_seconds")
# A resumed run may also get a different time budget (it was stopped before reaching the old one).
RESUME_FREE = RUN_ONLY + ("train.max_time",)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


class FolderInUse(RuntimeError):
    """Another live process trains in this run folder."""


@contextmanager
def folder_lock(folder: Path):
    """Hold ``folder/run.lock`` (our pid) while training in ``folder``: two processes never write one run
    folder (two ``resume=auto`` started at once would both continue the same run). A lock whose process is
    gone (killed with SIGKILL) is taken over."""
    path = Path(folder) / "run.lock"
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = _lock_owner(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise FolderInUse(f"{folder} is in use by another kanpde process (pid {pid}); two runs never share "
                                  f"a run folder. Wait for it, or stop it (kill -TERM {pid}) and resume") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise FolderInUse(f"cannot take {path}: another process keeps creating it")
    os.write(handle, str(os.getpid()).encode())
    os.close(handle)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def in_use(folder: Path) -> bool:
    """Whether a live process other than this one holds ``folder``'s run lock."""
    pid = _lock_owner(Path(folder) / "run.lock")
    return pid is not None and pid != os.getpid() and _alive(pid)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


@dataclass
class Snapshot:
    """The training loop's state after global step ``step``: stage ``stage`` has run ``step_in_stage`` steps
    (``stage_done``: its steps are over, only its closing check remains). Tensors here are the loop's own
    copies, never changed afterwards."""

    stage: int
    step_in_stage: int
    stage_done: bool
    step: int
    train_time: float
    evaluations: int
    best_loss: float
    model_spec: dict | None  # None for a network kanpde cannot rebuild (not resumable)
    model_state: dict
    last_good: dict
    optimizer_state: dict | None
    points: dict
    sampler_state: dict
    n_history: int
    rng: dict

    def payload(self, history: list[dict]) -> dict:
        """Plain data and tensors for ``torch.save`` (and ``torch.load(weights_only=True)``)."""
        return {"format": FORMAT, "stage": self.stage, "step_in_stage": self.step_in_stage,
                "stage_done": self.stage_done, "step": self.step, "train_time": float(self.train_time),
                "evaluations": int(self.evaluations), "best_loss": float(self.best_loss),
                "model_spec": self.model_spec, "model_state": self.model_state, "last_good": self.last_good,
                "optimizer_state": self.optimizer_state,
                "points": {k: v.detach() for k, v in self.points.items()},
                "sampler_state": dict(self.sampler_state), "history": _plain(history[: self.n_history]),
                "rng": self.rng}


def capture(stage: int, step_in_stage: int, stage_done: bool, state: dict, evaluations: int, best_loss: float,
            model: torch.nn.Module, model_state: dict, last_good: dict, optimizer, points: dict, sampler,
            n_history: int) -> Snapshot:
    """A :class:`Snapshot` of the loop now; ``model_state`` and ``last_good`` are state dicts the loop already
    copied (not to be changed later), the optimizer's state is copied here (L-BFGS appends to its lists)."""
    optimizer_state = None if optimizer is None else copy.deepcopy(optimizer.state_dict())
    sampler_state = sampler.state_dict() if hasattr(sampler, "state_dict") else {}
    try:
        spec = model_spec(model)
    except TypeError:  # a network kanpde cannot rebuild (explain's FormulaKAN): trainable, not resumable
        spec = None
    return Snapshot(stage, step_in_stage, stage_done, state["step"], state["train_time"], evaluations, best_loss,
                    spec, model_state, last_good, optimizer_state, dict(points), sampler_state, n_history, rng_state())


def rng_state() -> dict:
    """torch's, numpy's and Python's global RNG states, as tensors and plain data."""
    numpy_state = np.random.get_state(legacy=False)
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"bit_generator": numpy_state["bit_generator"],
                      "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                      "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                      "gauss": float(numpy_state["gauss"])},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss_next"]))


def restore_model(state: dict, like: torch.nn.Module) -> torch.nn.Module:
    """The network of a resume ``state``: ``like`` itself when it has the saved shape, else a model rebuilt
    from the saved spec (a KAN on a later stage's grid); in ``like``'s dtype and device."""
    saved = state["model_spec"]
    if saved is None:
        raise CheckpointError("the resume state holds a network kanpde cannot rebuild (no model spec); start afresh")
    given = model_spec(like)
    for key in ("family", "order", "activation"):  # widths may differ: a pruned KAN is rebuilt from its spec
        if saved.get(key) != given.get(key):
            raise CheckpointError(f"the checkpoint holds a {saved.get('family')} with {key}={saved.get(key)!r}, "
                                  f"the model given has {key}={given.get(key)!r}; resume with the run's own model "
                                  "config")
    reference = next(like.parameters())
    same_shape = all(saved.get(key) == given.get(key) for key in ("widths", "grid_size"))
    model = like if same_shape else model_from_spec(saved)
    model = model.to(dtype=reference.dtype, device=reference.device)
    # The unknown coefficients' entries (kanpde.unknowns.PREFIX) are the training loop's to load.
    model.load_state_dict({k: v for k, v in state["model_state"].items() if not k.startswith(PREFIX)})
    return model


def check_fixed_points(problem, points: dict) -> None:
    """Refuse a resume state whose observation points differ from the problem's (the data file or its seed
    changed since the run): the saved points would be paired with other values."""
    for name, condition in problem.conditions().items():
        saved = points.get(name)
        if condition.points is not None and saved is not None and not torch.equal(
                saved.detach().cpu().to(torch.float64), condition.points.detach().cpu().to(torch.float64)):
            raise CheckpointError(f"the run's observations {name!r} differ from the problem's now (another data file, "
                                  "seed or noise?); resume with the data the run was made with, or start afresh "
                                  "(resume=null)")


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """checkpoint.pt's content, tensors and plain data only; a clear :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no central directory
        raise CheckpointError(f"{path} is corrupt or truncated (not a complete torch.save archive); delete it, or "
                              "start afresh (resume=null)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refuses anything but tensors and plain data
        raise CheckpointError(f"{path} holds objects other than tensors and plain data ({_refusal(error)}); "
                              "kanpde loads checkpoints with weights_only=True and never runs code from one. "
                              "Use a checkpoint kanpde wrote, or start afresh (resume=null)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or truncated ({_first_line(error)}); delete it, or start "
                              "afresh (resume=null)") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model_spec" not in payload:
        raise CheckpointError(f"{path} is not a kanpde checkpoint (no model_spec and state_dict)")
    return payload


def resume_state(path: str | Path) -> dict | None:
    """The resume section of the checkpoint at ``path`` (None when it has none: a finished run's)."""
    state = read_checkpoint(path).get("resume")
    if state is not None and state.get("format") != FORMAT:
        raise CheckpointError(f"{path} has resume data of format {state.get('format')!r}; this kanpde reads "
                              f"format {FORMAT}. Start afresh (resume=null)")
    return state


def flatten(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values (a changed schedule is one key)."""
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def config_drift(previous: dict, current: dict, ignore=RESUME_FREE) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, ``ignore`` and its sub-keys left out."""
    old, new = flatten(previous), flatten(current)
    keys = sorted(set(old) | set(new))
    return [key for key in keys if not any(key == i or key.startswith(i + ".") for i in ignore)
            and old.get(key, "<missing>") != new.get(key, "<missing>")]


def describe_drift(keys: list[str], previous: dict, current: dict, limit: int = 8) -> str:
    old, new = flatten(previous), flatten(current)
    shown = [f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}" for k in keys[:limit]]
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(shown) + more


def _plain(value):
    """History rows as plain Python (numpy scalars become floats/ints): weights_only loads nothing else."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _refusal(error: BaseException) -> str:
    """The line of torch's weights_only refusal that names the object it would not load."""
    lines = [line.strip() for line in str(error).splitlines() if "Unsupported" in line or "global" in line]
    return lines[0].split(". Please")[0] if lines else _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
