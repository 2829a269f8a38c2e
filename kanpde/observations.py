"""Observations as a loss term: measured values of the outputs at given points (inverse problems, data fits).

:func:`observations` turns points ``(N, n_vars)`` and values ``(N, k)`` of ``k`` of the problem's outputs into a
:class:`~kanpde.problem.Condition` whose loss is ``weight * mean((u(x_n) - u_n)^2)`` over the observations (one
term per observed output, ``data_u``, ``data_v``, ...). :func:`read_observations` reads them from a ``.npz``
archive (one 1-D array per variable and output, named after them) or a ``.csv`` file (a header row naming the
columns the same way), so a problem's yaml can name a data file. Synthetic studies add Gaussian noise of a
given fraction of each output's standard deviation (Raissi et al.'s convention: J. Comput. Phys. 378, 2019,
sec. 4.1.1), drawn from a seeded generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kanpde.problem import Box, Condition, check_weight

FORMATS = (".npz", ".csv")


def observations(points, values, outputs: Sequence[str], domain: Box, all_outputs: Sequence[str] | None = None,
                 weight: float = 1.0, noise: float = 0.0, seed: int = 0) -> Condition:
    """A data condition: the network's ``outputs`` equal ``values`` at ``points``.

    Args:
        points: ``(N, n_vars)`` in the domain's variable order (array-like).
        values: ``(N, len(outputs))`` (or ``(N,)`` for one output).
        outputs: the observed outputs' names, a subset of ``all_outputs`` (e.g. ``("u",)`` of ``("u", "v", "p")``).
        domain: the problem's domain; every point must lie in it.
        all_outputs: the problem's outputs, to check ``outputs`` against (None: the outputs are read by name, and
            the problem's start-up check reports a name that is not one of them).
        weight: multiplier of each term's mean square.
        noise: add Gaussian noise of this fraction of each output's standard deviation (0.01: 1%), or 0.
        seed: seed of the noise.
    """
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    points = _as_matrix(points, "observation points")
    values = _as_matrix(values, "observed values")
    if not outputs:
        raise ValueError("observations need at least one observed output")
    unknown = [name for name in outputs if all_outputs is not None and name not in all_outputs]
    if unknown:
        raise ValueError(f"observed outputs {unknown} are not outputs of the problem; its outputs are {tuple(all_outputs)}")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"observed outputs must be distinct, got {outputs}")
    if points.shape[1] != domain.dim:
        raise ValueError(f"observation points have {points.shape[1]} coordinates, the domain has {domain.dim} "
                         f"variables {domain.variables}: give points as (N, {domain.dim})")
    if values.shape[1] != len(outputs):
        raise ValueError(f"observed values have {values.shape[1]} columns for {len(outputs)} outputs {outputs}: give "
                         f"values as (N, {len(outputs)})")
    if len(points) != len(values):
        raise ValueError(f"{len(points)} observation points but {len(values)} observed values: one row of values "
                         "per point")
    if len(points) == 0:
        raise ValueError("observations need at least one point")
    for what, array in (("observation points", points), ("observed values", values)):
        bad = ~torch.isfinite(array).all(dim=1)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ValueError(f"{int(bad.sum())} of the {what} are NaN or infinite (first at row {row}: "
                             f"{array[row].tolist()}); remove those rows")
    check_inside(points, domain)
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"observation noise must be a fraction >= 0 of each output's standard deviation "
                         f"(0.01: 1%), got {noise!r}")
    if noise > 0:
        generator = torch.Generator().manual_seed(int(seed))
        spread = values.std(dim=0, keepdim=True) if len(values) > 1 else values.abs()
        values = values + noise * spread * torch.randn(values.shape, generator=generator, dtype=values.dtype)
    check_weight(weight, "observation weight")

    def residual(x, d):
        if d.data is None or len(d.data) != len(x):
            raise ValueError("an observation condition was evaluated without its values (d.data); it is meant for "
                             "the points it was built with")
        misfit = {name: d[name] - d.data[:, column] for column, name in enumerate(outputs)}
        return misfit[outputs[0]] if len(outputs) == 1 else misfit

    return Condition(None, residual, weight, len(points), points, values)


def read_observations(path: str | Path, variables: Sequence[str], outputs: Sequence[str]
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Points ``(N, n_vars)``, values ``(N, k)`` and the names of the ``k`` outputs found in a data file.

    ``.npz``: one 1-D array per variable and per observed output, named after them. ``.csv``: a header row with
    those names as columns, one observation per row. Every variable must be there, and at least one output;
    other columns are ignored. A relative path is read from the working folder.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"observation file {path} must be .npz or .csv (columns named after the variables "
                         f"{tuple(variables)} and outputs {tuple(outputs)})")
    if not path.is_file():
        raise ValueError(f"observation file {path} not found (resolved to {path.resolve()}); relative paths are read "
                         "from the working folder")
    columns = _read_npz(path) if path.suffix.lower() == ".npz" else _read_csv(path)
    missing = [name for name in variables if name not in columns]
    if missing:
        raise ValueError(f"observation file {path} has no column for the variables {missing}; it has "
                         f"{sorted(columns)}, and needs {tuple(variables)} and at least one of {tuple(outputs)}")
    found = tuple(name for name in outputs if name in columns)
    if not found:
        raise ValueError(f"observation file {path} has no column for any output {tuple(outputs)}; it has "
                         f"{sorted(columns)}")
    lengths = {name: len(columns[name]) for name in (*variables, *found)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"observation file {path}: columns have different lengths {lengths}; one row per observation")
    points = torch.stack([columns[name] for name in variables], dim=1)
    values = torch.stack([columns[name] for name in found], dim=1)
    return points, values, found


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read observation file {path}: {error}") from None
    columns = {}
    for name, array in arrays.items():
        if array.ndim != 1:
            raise ValueError(f"observation file {path}: array {name!r} has shape {array.shape}; each variable and "
                             "output is a 1-D array of one value per observation")
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"observation file {path}: array {name!r} holds {array.dtype}, not numbers")
        columns[name] = torch.from_numpy(array.astype(np.float64))
    return columns


def _read_csv(path: Path) -> dict[str, torch.Tensor]:
    text = path.read_text(encoding="utf-8-sig").splitlines()  # a spreadsheet's byte-order mark is no column name
    if not text:
        raise ValueError(f"observation file {path} is empty; it needs a header row naming its columns")
    header = [name.strip() for name in text[0].split(",")]
    if len(set(header)) != len(header):
        raise ValueError(f"observation file {path}: repeated column names in the header {header}")
    try:
        with warnings.catch_warnings():  # an empty table is reported below, in our words
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64, encoding="utf-8-sig")
    except ValueError as error:
        raise ValueError(f"observation file {path}: cannot read the rows as numbers ({error}); the first row names "
                         "the columns, every other row holds numbers") from None
    if table.size == 0:
        raise ValueError(f"observation file {path} has a header and no observations")
    if table.shape[1] != len(header):
        raise ValueError(f"observation file {path}: {table.shape[1]} numbers per row but {len(header)} column names")
    return {name: torch.from_numpy(table[:, i].copy()) for i, name in enumerate(header)}


def _as_matrix(array, what: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu().to(torch.float64)
    else:
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float64))
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 2:
        raise ValueError(f"{what} must be a 2-D array (N, columns), got shape {tuple(tensor.shape)}")
    return tensor


def check_inside(points: torch.Tensor, domain: Box, tolerance: float = 1e-12) -> None:
    """Refuse observation points (N, dim) outside ``domain``, saying how many and the first."""
    lower = torch.tensor(domain.lower, dtype=points.dtype)
    upper = torch.tensor(domain.upper, dtype=points.dtype)
    span = upper - lower
    outside = ((points < lower - tolerance * span) | (points > upper + tolerance * span)).any(dim=1)
    if bool(outside.any()):
        row = int(torch.nonzero(outside)[0])
        raise ValueError(f"{int(outside.sum())} observation points lie outside the domain {domain!r} (first at row "
                         f"{row}: {points[row].tolist()}); remove them or widen the domain")
