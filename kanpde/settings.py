"""The schema of the run settings in configs/solve.yaml: known keys, their types, messages that name the key.

Hydra refuses an override of an unknown key (``train.max_tme=5``) but not one added with ``+`` or by a
user's experiment file, and it checks no types: ``train.max_time=abc`` used to fail deep inside the training
loop. The groups built from ``_target_`` (problem, model, optim, schedule, sampler) are checked by the
constructors they name; everything else is checked here, against these dataclasses, before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

GROUPS = ("problem", "model", "optim", "schedule", "sampler")  # built from _target_, checked by their classes


@dataclass
class GridUpdateSettings:
    every: int = 0
    until: int = 30
    margin: float = 0.1
    adaptive: float = 0.0


@dataclass
class EvalSettings:
    n_points: int = 10201
    points_per_side: int | None = None
    every: int = 10


@dataclass
class TrainSettings:
    max_time: float | None = None
    progress: bool | None = None
    plot: bool = True
    divergence_factor: float = 1e8
    chunk_size: int | None = None
    skip_if_done: bool = False
    checkpoint_every: int = 0
    checkpoint_seconds: float | None = 60.0


@dataclass
class Settings:
    seed: int = 0
    precision: str = "float64"
    device: str = "auto"
    derivatives: str = "forward"
    threads: int | None = None
    resume: str | None = None
    grid_update: GridUpdateSettings | None = field(default_factory=GridUpdateSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    train: TrainSettings = field(default_factory=TrainSettings)


class SettingsError(ValueError):
    """A run setting is unknown or of the wrong type; the message names it."""


def check_settings(cfg: DictConfig) -> None:
    """Raise :class:`SettingsError` naming the first unknown key or wrongly typed value outside the groups."""
    names = [str(key) for key in cfg.keys() if key != "hydra"]  # compose(return_hydra_config=True) adds hydra
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(names) - known - set(GROUPS))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r}; the settings are {sorted(known)} and the groups "
                            f"{list(GROUPS)}. Check the spelling (an override with + adds a new key)")
    settings = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
                for k in names if k in known}
    try:
        OmegaConf.merge(OmegaConf.structured(Settings), settings)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise SettingsError(f"setting {key}: {_reason(error, key)}") from None
    for key, (low, strict, meaning) in BOUNDS.items():
        section, name = key.split(".")
        value = (settings.get(section) or {}).get(name)
        if value is not None and (value <= low if strict else value < low):
            raise SettingsError(f"setting {key} must be {'>' if strict else '>='} {low} ({meaning}), got {value!r}")


# Lower bounds of numeric settings read outside a constructor: key -> (bound, strict, what the value means).
BOUNDS = {"train.checkpoint_every": (0, False, "steps between checkpoints; 0: off"),
          "train.checkpoint_seconds": (0, True, "seconds between checkpoints; null: off"),
          "train.max_time": (0, False, "seconds of training; null: no limit"),
          "eval.every": (1, False, "steps between error measurements"),
          "eval.n_points": (2, False, "points of the test grid in all")}


def _reason(error: OmegaConfBaseException, key: str) -> str:
    message = str(error).splitlines()[0]
    if "not in struct" in message or "not in '" in message or "Key '" in message:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        choices = _keys_of(section)
        return f"no such key{f' in {section}' if section else ''}; known: {choices}"
    return message


def _keys_of(section: str) -> list[str]:
    node = Settings
    for part in filter(None, section.split(".")):
        node = {f.name: f for f in fields(node)}[part].default_factory
    return [f.name for f in fields(node)]
