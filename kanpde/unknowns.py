"""Unknown coefficients of a PDE: values identified from data while the network trains (inverse problems).

A problem declares one in ``__init__`` like any other attribute, and its residual reads it like one::

    self.nu = Unknown(initial=0.05, positive=True, true=0.01 / math.pi)
    ...
    def residual(self, x, d):
        return d["u_t"] + d["u"] * d["u_x"] - self.nu * d["u_xx"]

``self.nu`` then reads as a 0-dim tensor of the network's dtype that carries gradients to its parameter, so
every optimizer (L-BFGS, Adam, Levenberg-Marquardt) fits it with the network. A positive coefficient is
trained through its logarithm, nu = exp(theta), as Raissi et al.'s inverse Burgers code does for the
viscosity (Raissi, Perdikaris and Karniadakis, J. Comput. Phys. 378, 2019, sec. 4.1): the optimizer may then
step freely, and nu never changes sign.

The values live on the problem instance: training the same instance twice starts the second run from the values
the first one identified (build a fresh problem to start from the initial guesses again; the CLI always does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# History columns and metrics keys the training loop writes itself: an unknown may not take one of these names.
RESERVED = ("step", "stage", "grid_size", "time", "evaluations", "n_interior", "loss", "rel_l2", "mse", "max_abs",
            "lambda", "step_norm", "trials", "gradient_norm", "loss_after", "rho")


@dataclass(frozen=True)
class Unknown:
    """The declaration of a coefficient to identify.

    Args:
        initial: the starting value (> 0 when ``positive``).
        positive: train it through its logarithm, so that it stays > 0 (a viscosity, a diffusivity).
        true: the value the data were made with, when known: metrics then report the relative error.
    """

    initial: float
    positive: bool = False
    true: float | None = None

    def __post_init__(self):
        if isinstance(self.initial, bool) or not isinstance(self.initial, (int, float)) \
                or not math.isfinite(self.initial):
            raise ValueError(f"an Unknown's initial value must be a finite number, got {self.initial!r}")
        if not isinstance(self.positive, bool):
            raise TypeError(f"an Unknown's positive must be true or false, got {self.positive!r}")
        if self.positive and self.initial <= 0:
            raise ValueError(f"a positive Unknown needs an initial value > 0 (it is trained as log(value)), "
                             f"got {self.initial!r}")
        if self.true is not None and (isinstance(self.true, bool) or not isinstance(self.true, (int, float))
                                      or not math.isfinite(self.true)):
            raise ValueError(f"an Unknown's true value must be a finite number or None, got {self.true!r}")
        if self.positive and self.true is not None and self.true <= 0:
            raise ValueError(f"a positive Unknown cannot have the true value {self.true!r}; set positive=False")


class Coefficients(torch.nn.Module):
    """A problem's unknown coefficients: one scalar parameter each (the log of the value when positive)."""

    def __init__(self):
        super().__init__()
        self.raw = torch.nn.ParameterDict()
        self.declared: dict[str, Unknown] = {}

    def declare(self, name: str, unknown: Unknown) -> None:
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"an unknown coefficient needs a plain attribute name, got {name!r}")
        if name in RESERVED or name.startswith(("loss_", "rel_l2_", "mse_", "max_abs_")):
            raise ValueError(f"{name!r} names a column the training history already has; call the unknown "
                             "something else")
        start = math.log(unknown.initial) if unknown.positive else float(unknown.initial)
        reference = next(iter(self.raw.values()), None)
        dtype = reference.dtype if reference is not None else torch.float64
        device = reference.device if reference is not None else None
        self.raw[name] = torch.nn.Parameter(torch.tensor(start, dtype=dtype, device=device))
        self.declared[name] = unknown

    def __contains__(self, name: str) -> bool:
        return name in self.declared

    def __len__(self) -> int:
        return len(self.declared)

    def value(self, name: str) -> torch.Tensor:
        """The coefficient as a 0-dim tensor with a graph to its parameter."""
        raw = self.raw[name]
        return raw.exp() if self.declared[name].positive else raw

    def values(self) -> dict[str, float]:
        """Current values by name, as numbers."""
        with torch.no_grad():
            return {name: float(self.value(name)) for name in self.declared}

    def report(self) -> dict[str, dict]:
        """For metrics.json: each unknown's value, initial and true values and relative error (when true is known)."""
        report = {}
        for name, value in self.values().items():
            declared = self.declared[name]
            entry = {"value": value, "initial": declared.initial, "positive": declared.positive}
            if declared.true is not None:
                entry["true"] = declared.true
                entry["abs_error"] = abs(value - declared.true)
                if declared.true != 0:
                    entry["rel_error"] = entry["abs_error"] / abs(declared.true)
            report[name] = entry
        return report


def coefficients_of(problem) -> Coefficients | None:
    """The problem's :class:`Coefficients`, or None when it declares no unknown."""
    found = problem.__dict__.get("_coefficients")
    return found if found is not None and len(found) else None


def unknown_parameters(problem) -> list[torch.Tensor]:
    """The parameters of the problem's unknowns (an empty list when it has none)."""
    found = coefficients_of(problem)
    return list(found.parameters()) if found is not None else []


PREFIX = "@unknowns."  # state-dict keys of the unknowns beside a model's (no module key starts with "@")


def full_state(model: torch.nn.Module, coefficients: Coefficients | None) -> dict:
    """A copy of the model's state dict with the unknowns' parameters under ``PREFIX`` keys: what the training
    loop restores on divergence or an interrupt, and what a checkpoint's resume section holds."""
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    if coefficients is not None:
        state.update({PREFIX + key: value.detach().clone() for key, value in coefficients.state_dict().items()})
    return state


def load_full_state(model: torch.nn.Module, coefficients: Coefficients | None, state: dict) -> None:
    """Load what :func:`full_state` returned (a plain model state dict too)."""
    model.load_state_dict({key: value for key, value in state.items() if not key.startswith(PREFIX)})
    saved = {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}
    names = {key.removeprefix("raw.") for key in saved}
    declared = set(coefficients.declared) if coefficients is not None else set()
    if names != declared:
        raise ValueError(f"the saved state holds the unknown coefficients {sorted(names)}, the problem declares "
                         f"{sorted(declared)}; resume with the problem the run was made with")
    if coefficients is not None:
        coefficients.load_state_dict(saved)
