"""``python -m kanpde``: a thin argparse front over Hydra.

Hydra cannot parse ``solve poisson`` itself, so the front reads the subcommand and the problem name,
checks the name against the known problem configs (before any run folder exists), then rewrites
``sys.argv`` to ``problem=NAME`` plus the remaining overrides and calls the ``@hydra.main`` function.
Hydra's own flags (``-m``, ``--cfg job``, ``--info``) pass through untouched.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import ClassVar

from hydra.experimental.callback import Callback

# Subcommands implemented in their own module kanpde/<name>.py as main(argv) -> exit code.
SUBCOMMANDS = {
    "bench": "step time, memory and time to accuracy (see kanpde bench --help)",
    "explain": "a KAN run's edge functions, symbolic fits and its solution as a formula (kanpde explain --help)",
    "compare": "KAN and MLP on the same problem, points and budget (see kanpde compare --help)",
    "scaling": "collate a sweep's runs into runs.csv and error-vs-parameters plots (kanpde scaling --help)",
}

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
EXIT_FAILED_JOBS = 1  # a multirun in which some job did not finish (when no job reported a code itself)

log = logging.getLogger("kanpde")


def builtin_config_dir() -> Path:
    return Path(str(resources.files("kanpde.configs")))


def user_config_dir() -> Path | None:
    folder = Path.cwd() / "configs"
    return folder if folder.is_dir() and folder.resolve() != builtin_config_dir().resolve() else None


PRIMARY_CONFIG = "kanpde_solve"  # configs/solve.yaml, registered in Hydra's ConfigStore under this name


def search_setup() -> list[str]:
    """Register the primary config and return the override that sets Hydra's search path.

    Hydra takes the first match along its search path, and a ``hydra.searchpath`` entry never comes before
    the primary config's own folder. So the primary config (configs/solve.yaml) is served from Hydra's
    ConfigStore instead of a folder, and the search path lists the user's ./configs before the built-in
    configs: a user's ``configs/problem/poisson.yaml`` wins over the built-in one of that name.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name=PRIMARY_CONFIG, node=OmegaConf.load(builtin_config_dir() / "solve.yaml"))
    user = user_config_dir()
    paths = ([f"file://{user}"] if user is not None else []) + ["pkg://kanpde.configs"]
    return ["hydra.searchpath=[" + ",".join(f"'{path}'" for path in paths) + "]"]


def known_problems() -> dict[str, Path]:
    """Problem name -> yaml file, built-in first; a user's ./configs/problem overrides by name."""
    found = {}
    for folder in (builtin_config_dir(), user_config_dir()):
        if folder is not None and (folder / "problem").is_dir():
            found.update({p.stem: p for p in sorted((folder / "problem").glob("*.yaml"))})
    return found


def describe(path: Path) -> str:
    """One line for ``kanpde list``: the problem class's ``description``, else the yaml's first comment."""
    from omegaconf import OmegaConf

    from kanpde.app import add_user_paths

    add_user_paths()
    try:
        from hydra.utils import get_class

        cls = get_class(OmegaConf.load(path)["_target_"])
        text = getattr(cls, "description", "") or (cls.__doc__ or "").strip().splitlines()[0]
        return text
    except Exception as error:  # listing must not die on one broken user problem
        return f"(cannot import: {error})"


class SweepOutcome(Callback):
    """Hydra callback (configs/solve.yaml): after a multirun, the jobs of this sweep that did not finish.

    Launchers that run jobs in other processes (joblib, SLURM) do not hand a job's exit code back, so the
    outcome is read from the run folders: a job whose ``metrics.json`` is missing (it crashed or was
    refused) or whose status is not completed/time_limit failed. Only jobs started by this sweep count.
    """

    failed: ClassVar[list[tuple[str, str]]] = []  # (job folder, status) of the last multirun in this process

    def __init__(self, **_):
        self.started = 0.0

    def on_multirun_start(self, config, **kwargs) -> None:
        import time

        self.started = time.time()
        SweepOutcome.failed = []

    def on_multirun_end(self, config, **kwargs) -> None:
        import json

        from kanpde.app import FINISHED

        root = Path(config.hydra.sweep.dir)
        jobs = [marker.parent for marker in root.rglob(".hydra")
                if (marker / "overrides.yaml").is_file() and (marker / "overrides.yaml").stat().st_mtime >= self.started - 1]
        failed = []
        for job in sorted(jobs):
            try:
                status = json.loads((job / "metrics.json").read_text()).get("status", "unknown")
            except (OSError, ValueError):
                status = "no metrics.json (failed before finishing; see its log)"
            if status not in FINISHED:
                failed.append((str(job), status))
        SweepOutcome.failed = failed


def _hydra_main(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from kanpde.app import ConfigError, add_user_paths, run

    add_user_paths()
    outcome = {"code": 0}

    @hydra.main(version_base="1.3", config_path=None, config_name=PRIMARY_CONFIG)
    def solve(cfg):
        hydra_cfg = HydraConfig.get()
        name = hydra_cfg.runtime.choices.get("problem")
        try:
            metrics = run(cfg, hydra_cfg.runtime.output_dir, problem_name=name)
        except KeyboardInterrupt as error:  # before training started (interrupts during training are handled there)
            log.warning("interrupted before training started; nothing was trained")
            outcome["code"] = getattr(error, "exit_code", EXIT_INTERRUPTED)
            _stop_sweep(hydra_cfg, outcome["code"])
            return None
        except ConfigError as error:
            log.error("invalid configuration: %s", error)
            outcome["code"] = EXIT_USAGE
            return None
        if metrics["status"] == "diverged":
            outcome["code"] = EXIT_DIVERGED
        elif metrics["status"] == "interrupted":
            outcome["code"] = 128 + getattr(signal, metrics.get("signal") or "SIGINT", signal.SIGINT)
            _stop_sweep(hydra_cfg, outcome["code"])
        return metrics.get("rel_l2")

    sys.argv = argv
    SweepOutcome.failed = []
    solve()
    if SweepOutcome.failed:
        log.error("%d sweep job(s) did not finish:\n%s", len(SweepOutcome.failed),
                  "\n".join(f"  {folder}: {status}" for folder, status in SweepOutcome.failed))
        return outcome["code"] or EXIT_FAILED_JOBS
    return outcome["code"]


def _stop_sweep(hydra_cfg, code: int) -> None:
    """A signal stops the whole sweep, not only its current job: the launcher must not start the next one."""
    from hydra.types import RunMode

    if hydra_cfg.mode == RunMode.MULTIRUN:
        log.warning("sweep stopped by a signal; rerun the same command with resume=auto to finish it")
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="kanpde", description=__doc__.split("\n\n")[0],
                                     epilog="Examples: kanpde solve poisson | kanpde solve poisson model=mlp "
                                            "train.max_time=60 | kanpde list")
    commands = parser.add_subparsers(dest="command", required=True)
    solve = commands.add_parser("solve", help="train a KAN (or MLP) on a problem; Hydra overrides follow",
                                add_help=False)
    solve.add_argument("problem", nargs="?", help="problem name (see `kanpde list`)")
    commands.add_parser("list", help="list built-in and user problems")
    for name, text in SUBCOMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    args, rest = parser.parse_known_args(argv)

    if args.command in SUBCOMMANDS:
        module = importlib.import_module(f"kanpde.{args.command}")
        logging.basicConfig(level=logging.INFO)
        return module.main(rest)

    if args.command == "list":
        for name, path in known_problems().items():
            origin = "user" if user_config_dir() and path.is_relative_to(user_config_dir()) else "built-in"
            print(f"{name:<20} {origin:<9} {describe(path)}")
        return 0

    # Read the problem name from the tokens themselves: argparse would take a Hydra flag's value
    # (`solve --cfg job ...`) or an override (`solve +experiment=helmholtz`) for it.
    flags, positionals = _split_hydra_args(argv[argv.index("solve") + 1:])
    names = [token for token in positionals if "=" not in token]
    problem = names[0] if names else None
    overrides = [token for token in positionals if token is not problem]
    experiment = any(token.lstrip("+").startswith("experiment=") for token in overrides)  # names its problem
    if problem is None and not experiment and not any(flag in flags for flag in
                                                       ("--cfg", "-c", "--info", "--help", "-h")):
        print("usage: kanpde solve PROBLEM [hydra overrides]\nknown problems: "
              + ", ".join(known_problems()), file=sys.stderr)
        return EXIT_USAGE
    if problem and problem not in known_problems():
        print(f"kanpde: unknown problem {problem!r}. Known problems: {', '.join(known_problems())}.\n"
              "Define your own with ./problems/<name>.py and ./configs/problem/<name>.yaml (see README).",
              file=sys.stderr)
        return EXIT_USAGE
    overrides = ([f"problem={problem}"] if problem else []) + overrides + search_setup()
    logging.basicConfig(level=logging.INFO)
    return _hydra_main([sys.argv[0] if sys.argv else "kanpde", *flags, *overrides])


# Hydra flags that take a value; Hydra's argparse wants all flags before the positional overrides.
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                 "--config-dir", "-cd", "--experimental-rerun"}
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _split_hydra_args(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra flags (with their values) from ``key=value`` overrides, keeping each's order."""
    flags, overrides, i = [], [], 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-"):  # overrides start with a key, "+" or "~", never "-"
            flags.append(token)
            takes_value = token in _VALUED_FLAGS or (token == "--info" and i + 1 < len(tokens)
                                                      and tokens[i + 1] in _INFO_TOPICS)
            if takes_value and i + 1 < len(tokens):
                flags.append(tokens[i + 1])
                i += 1
        else:
            overrides.append(token)
        i += 1
    return flags, overrides


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
