"""The optimizer interface of the training loop, and the adapter for ``torch.optim`` optimizers."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from kanpde.jacobian import ParameterIndex


@dataclass
class StepReport:
    """What one optimizer step tells the training loop.

    Attributes:
        loss: the loss at the parameters *before* the step; a finite value certifies them.
        info: diagnostics for the history row (e.g. damping, step norm), numbers only.
        converged: non-empty when the optimizer can make no further progress, saying why; the loop then
            ends the stage.
    """

    loss: float
    info: dict[str, float] = field(default_factory=dict)
    converged: str = ""


class ResidualObjective(Protocol):
    """What a least-squares optimizer sees of the training objective: residual products, not a model."""

    def gauss_newton(self, index: ParameterIndex):
        """J^T J (upper triangle, ``jtj_upper``), J^T R (``jtr``) and the loss at the current parameters."""

    def trial_loss(self, index: ParameterIndex) -> float:
        """||R||^2 at the current parameters (after a trial step)."""


class AbstractOptimizer(abc.ABC):
    """An optimizer the training loop drives: ``step(objective)`` changes the parameters in place.

    ``objective`` is a :class:`kanpde.objective.LeastSquares`: first-order methods call its ``backward()``,
    least-squares methods its ``gauss_newton(index)`` and ``trial_loss(index)`` (see :class:`ResidualObjective`).
    """

    @abc.abstractmethod
    def step(self, objective) -> StepReport:
        ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TorchOptimizer(AbstractOptimizer):
    """A ``torch.optim.Optimizer`` driven through its closure: one ``step`` is one ``optimizer.step``."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def step(self, objective) -> StepReport:
        dtype = self.optimizer.param_groups[0]["params"][0].dtype

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            # In the parameters' dtype: L-BFGS's line search compares these losses; float32 would round them.
            return torch.tensor(sum(objective.backward().values()), dtype=dtype)

        loss = self.optimizer.step(closure)
        return StepReport(math.nan if loss is None else float(loss))

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def make_optimizer(factory: Callable, model: torch.nn.Module, unknowns: Sequence[torch.Tensor] = ()
                   ) -> AbstractOptimizer:
    """``factory(parameters)`` (a Hydra ``_partial_``) as an :class:`AbstractOptimizer`: the model's parameters, then
    ``unknowns`` (a problem's unknown coefficients, :mod:`kanpde.unknowns`)."""
    built = factory([*model.parameters(), *unknowns])
    if isinstance(built, AbstractOptimizer):
        return built
    if isinstance(built, torch.optim.Optimizer):
        return TorchOptimizer(built)
    raise TypeError(f"an optimizer factory returned {type(built).__name__}; expected a torch.optim.Optimizer "
                    "or a kanpde.optim.AbstractOptimizer (set _target_ to torch.optim.* or kanpde.optim.*)")
