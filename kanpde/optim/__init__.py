"""Optimizers behind one interface: ``step(objective) -> StepReport``.

* :class:`TorchOptimizer` wraps any ``torch.optim`` optimizer (Adam, L-BFGS): it sees the loss and its
  gradient through a closure.
* :class:`LevenbergMarquardt` sees the residual vector: its Gauss-Newton products J^T J and J^T R.

The training loop builds them with :func:`make_optimizer` from a config factory and never asks which
kind it holds.
"""

from kanpde.optim.base import AbstractOptimizer, StepReport, TorchOptimizer, make_optimizer
from kanpde.optim.lm import LevenbergMarquardt

__all__ = ["AbstractOptimizer", "LevenbergMarquardt", "StepReport", "TorchOptimizer", "make_optimizer"]
