"""Levenberg-Marquardt: the least-squares optimizer that takes small networks to the limit of their ansatz.

The loss is ||R(theta)||^2 (:mod:`kanpde.objective`). Each iteration forms A = J^T J and g = J^T R once and
solves, for trial dampings lambda,

    (A + lambda D) delta = -g,      D = diag(A) (Marquardt's scaling, floored),

accepting delta when it lowers the loss. lambda follows Nielsen's rule (H. B. Nielsen, *Damping parameter
in Marquardt's method*, IMM-REP-1999-05, eq. 4.2; also Madsen, Nielsen and Tingleff, *Methods for
non-linear least squares problems*, 2004, sec. 3.2): with the gain ratio rho = actual / predicted decrease,
an accepted step scales lambda by max(1/3, 1 - (2 rho - 1)^3) and resets nu = 2; a rejected one multiplies
lambda by nu and doubles nu. Nothing needs tuning per problem: lambda adapts within a few iterations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve

from kanpde.jacobian import ParameterIndex
from kanpde.optim.base import AbstractOptimizer, StepReport


class LevenbergMarquardt(AbstractOptimizer):
    """Levenberg-Marquardt on the objective's residual vector.

    Args:
        params: the parameters to fit (all of a model's, usually).
        damping: initial lambda, relative to diag(J^T J).
        max_trials: damped solves per iteration before giving up on it (each costs one loss evaluation).
        xtol: converged when ||delta|| <= xtol (||theta|| + xtol).
        ftol: converged when an accepted step lowers the loss by less than ftol times the loss.
        gtol: converged when max |2 J^T R| <= gtol.
        max_damping: converged (no descent found) when lambda exceeds this.
        min_scaling: floor of D relative to max diag(J^T J). Measured on `solve poisson` (seeds 0 / 1 / 2, MSE):
            1.4e-15 / 4.8e-15 / 2.2e-14 with 1e-4; seed 0: 2.2e-14 with 1e-3, 9.7e-15 with 1e-6 (seed 1: 3.0e-14),
            1.3e-13 with 1e-12 (seed 1: 3.6e-13).
        max_parameters: refuse larger models before any work: J^T J takes P^2 numbers and the solve P^3 / 3
            operations (30,701 parameters: 7.5 GB in float64).
    """

    def __init__(self, params: Iterable[torch.Tensor], damping: float = 1e-3, max_trials: int = 20,
                 xtol: float = 1e-12, ftol: float = 1e-12, gtol: float = 0.0, max_damping: float = 1e12,
                 min_scaling: float = 1e-4, max_parameters: int = 6000):
        for name, value in (("damping", damping), ("max_damping", max_damping)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Levenberg-Marquardt {name} must be a finite number > 0, got {value!r}")
        for name, value in (("xtol", xtol), ("ftol", ftol), ("gtol", gtol), ("min_scaling", min_scaling)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Levenberg-Marquardt {name} must be a finite number >= 0, got {value!r}")
        if int(max_trials) != max_trials or max_trials < 1:
            raise ValueError(f"Levenberg-Marquardt max_trials must be an integer >= 1, got {max_trials!r}")
        parameters = [p for p in params if p.requires_grad]
        if not parameters:
            raise ValueError("Levenberg-Marquardt got no parameters that require grad")
        self.index = ParameterIndex(parameters)
        check_size(self.index.size, max_parameters, parameters[0].dtype)
        self.damping, self.nu = float(damping), 2.0
        self.max_trials, self.max_damping = int(max_trials), float(max_damping)
        self.xtol, self.ftol, self.gtol = float(xtol), float(ftol), float(gtol)
        self.max_parameters, self.min_scaling = int(max_parameters), float(min_scaling)

    def step(self, objective) -> StepReport:
        products = objective.gauss_newton(self.index)
        loss, gradient = products.loss, products.jtr
        info = {"lambda": self.damping, "step_norm": 0.0, "trials": 0,
                "gradient_norm": 2 * float(gradient.abs().max())}
        if not math.isfinite(loss):
            return StepReport(loss, info)  # the loop reports the divergence
        if info["gradient_norm"] <= self.gtol:
            return StepReport(loss, info, converged=f"gradient below gtol={self.gtol:g}")
        jtj = products.jtj_upper  # Cholesky reads the upper triangle only
        diagonal = jtj.diagonal()
        # Marquardt's scaling, floored at min_scaling times its largest entry: directions few points see
        # (coefficients of knots at the edge of the data, a flat output layer at the start) stay damped.
        scaling = diagonal.clamp(min=float(diagonal.max()) * self.min_scaling + torch.finfo(jtj.dtype).tiny)
        theta = self.index.vector()
        for trial in range(1, self.max_trials + 1):
            info["trials"] = trial
            system = jtj.clone()
            system.diagonal().add_(self.damping * scaling)
            delta = solve_upper(system, gradient)
            if delta is None:  # not positive definite in floating point: more damping
                self._reject()
                continue
            delta = -delta
            # Decrease predicted by the linear model, ||R||^2 - ||R + J delta||^2, from the normal equations.
            predicted = float(-(delta @ gradient) + self.damping * (delta * scaling) @ delta)
            self.index.add_(delta)
            new_loss = objective.trial_loss(self.index)
            if math.isfinite(new_loss) and new_loss < loss and predicted > 0:
                rho = (loss - new_loss) / predicted
                info.update(step_norm=float(delta.norm()), loss_after=new_loss, rho=rho)
                self.damping = max(self.damping * max(1 / 3, 1 - (2 * rho - 1) ** 3), 1e-15)
                self.nu = 2.0
                info["lambda"] = self.damping
                return StepReport(loss, info, converged=self._converged(loss, new_loss, delta, theta))
            self.index.set_(theta)
            self._reject()
            if self.damping > self.max_damping:
                break
        info["lambda"] = self.damping
        return StepReport(loss, info, converged=f"no step lowered the loss (lambda {self.damping:.1e})")

    def _reject(self) -> None:
        self.damping *= self.nu
        self.nu *= 2

    def _converged(self, loss: float, new_loss: float, delta: torch.Tensor, theta: torch.Tensor) -> str:
        if float(delta.norm()) <= self.xtol * (float(theta.norm()) + self.xtol):
            return f"step below xtol={self.xtol:g}"
        if loss - new_loss <= self.ftol * loss:
            return f"loss change below ftol={self.ftol:g}"
        return ""

    def state_dict(self) -> dict:
        return {"damping": self.damping, "nu": self.nu}

    def load_state_dict(self, state: dict) -> None:
        self.damping, self.nu = float(state["damping"]), float(state["nu"])


def solve_upper(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """x with system x = rhs for a symmetric positive definite ``system`` (P, P) given by its upper triangle
    (overwritten); None when the Cholesky factorisation fails. LAPACK in place on the CPU, torch elsewhere."""
    if system.device.type == "cpu" and system.dtype in (torch.float64, torch.float32):
        # The C-ordered upper triangle is the Fortran-ordered lower one: factor it in place, no copy.
        try:
            factor = cho_factor(system.numpy().T, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        return torch.from_numpy(cho_solve(factor, rhs.numpy(), check_finite=False))
    factor, failed = torch.linalg.cholesky_ex(system, upper=True)
    if int(failed):
        return None
    return torch.cholesky_solve(rhs.unsqueeze(1), factor, upper=True).squeeze(1)


def check_size(n_parameters: int, max_parameters: int, dtype: torch.dtype = torch.float64) -> None:
    """Refuse a dense Gauss-Newton solve over more than ``max_parameters`` parameters, saying what it would cost."""
    if n_parameters > max_parameters:
        size = torch.finfo(dtype).bits // 8
        gib = n_parameters**2 * size / 2**30
        raise ValueError(
            f"Levenberg-Marquardt on {n_parameters:,} parameters needs a {n_parameters:,} x {n_parameters:,} "
            f"Gauss-Newton matrix ({gib:.1f} GiB) and a dense solve each iteration; the limit is "
            f"max_parameters={max_parameters:,}. Train this model with L-BFGS, use a smaller one (e.g. "
            f"model.hidden=[20,20,20]), or raise optim.lm.max_parameters if you have the memory")
