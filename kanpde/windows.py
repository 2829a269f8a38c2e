"""Training that follows time: growing time windows, and a residual weighted towards early times.

A PINN trained on the whole space-time domain at once may fit a wrong solution that satisfies the
residual almost everywhere: later times are fitted before the initial condition has propagated to them
(Wang, Sankaran and Perdikaris, *Respecting causality is all you need for training physics-informed neural
networks*, 2022; on Allen-Cahn, vanilla PINNs end near rel_l2 1). Growing the time interval of the
collocation points, as in Wight and Zhao (*Solving Allen-Cahn and Cahn-Hilliard equations using the
adaptive physics informed neural networks*, 2020, "time-adaptive approach I") and Mattey and Ghosh
(bc-PINN, 2022), makes training follow time: each stage starts from the previous stage's network, which
already holds the solution up to its window's end, and extends it a little further.

Here a stage's ``time_window`` (:class:`kanpde.training.Stage`) is T_k, in the units of the problem's
variable ``t``; at the stage's start every point set (interior and each condition's) is drawn afresh from
the domain cut to t in [t_0, T_k], with the sampler's usual counts, so early windows are sampled densely.
One network covers all windows (unlike bc-PINN's one network per window), so the final stages see the
whole domain; a stage without a window trains on the whole domain.

A stage's ``time_decay`` = c weights the PDE residual's square by exp(-c (t - t_0)) (:class:`TimeDecay`), a
fixed form of Wang et al.'s causal weights. Why it helps: a residual r left at time s perturbs the solution,
and where the dynamics is unstable (Allen-Cahn's u = 0, growing at rate a = 5) the perturbation grows like
exp(a (t - s)); errors made early cost most at the end, and a uniform mean square underrates them.

Measured on Allen-Cahn with Levenberg-Marquardt (results/allen_cahn/README.md): with 2,500 points seeds 1 / 2
ended at rel_l2 5.6e-2 / 3.6e-2 without the decay and 1.0e-2 / 3.2e-3 with c = 5; with 10,000 points and c = 5
all three seeds end at 6.6e-4 to 2.8e-3. Growing windows did not help there (seed 1, 10,000 points, c = 5:
5.0e-3 with windows, 6.6e-4 without), so Allen-Cahn's default uses the decay alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from kanpde.problem import Box, Problem

TIME = "t"


def check_window(value) -> float:
    """A time window's end must be a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"stage time_window must be a finite number (the end of the training interval in t) or "
                         f"null, got {value!r}")
    return float(value)


def check_decay(value) -> float:
    """A time decay rate must be a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"stage time_decay must be a finite number >= 0 (the rate c of the residual weight "
                         f"exp(-c (t - t_0)); 0: off), got {value!r}")
    return float(value)


class TimeDecay:
    """Weights ``problem``'s PDE residual by exp(-rate (t - t_0) / 2) (its square by exp(-rate (t - t_0))) while
    installed; ``rate`` may change between stages (0 leaves the residual as it is).

    The weighted residual is set on the problem instance (the objective calls ``problem.residual``), and
    :meth:`remove` restores the class's own. Residuals may be one tensor (N,), a dict or a tuple of them.
    """

    def __init__(self, problem: Problem, rate: float = 0.0):
        if TIME not in problem.domain.variables:
            raise ValueError(f"a time decay weights the residual along the variable 't', but {problem.name}'s "
                             f"variables are {problem.domain.variables}")
        if isinstance(problem.__dict__.get("residual"), _Weighted):
            raise ValueError(f"{problem.name}'s residual is already weighted by a TimeDecay; remove() that one first")
        index = problem.domain.variables.index(TIME)
        self.problem, self.rate, self.start = problem, check_decay(rate), problem.domain.lower[index]
        self._saved = problem.__dict__.get("residual", _MISSING)  # a residual the user set on the instance
        unweighted = problem.residual

        def residual(x: torch.Tensor, d):
            value = unweighted(x, d)
            if not self.rate:
                return value
            weight = torch.exp(-0.5 * self.rate * (x[:, index] - self.start))  # (N,)
            if isinstance(value, Mapping):
                return {name: weight * part for name, part in value.items()}
            if isinstance(value, (tuple, list)):
                return type(value)(weight * part for part in value)
            return weight * value

        problem.residual = _Weighted(residual)

    def remove(self) -> None:
        """Give the problem back the residual it had (the class's, or one set on the instance)."""
        if self._saved is _MISSING:
            self.problem.__dict__.pop("residual", None)
        else:
            self.problem.__dict__["residual"] = self._saved


_MISSING = object()


class _Weighted:
    """A residual function wrapped by :class:`TimeDecay` (recognisable, so that two decays never stack)."""

    def __init__(self, function):
        self.function = function

    def __call__(self, x, d):
        return self.function(x, d)


def window_domain(problem: Problem, window: float | None) -> Box:
    """The problem's domain with t cut to [t_0, ``window``] (the whole domain for None)."""
    box = problem.domain
    if window is None:
        return box
    index = box.variables.index(TIME)
    upper = list(box.upper)
    upper[index] = min(float(window), box.upper[index])
    return Box(box.variables, box.lower, upper)


def check_windows(problem: Problem, stages: Sequence, sampler) -> None:
    """Refuse time windows the problem or the sampler cannot honour, before any training.

    A window needs a variable named ``t``, an end inside (t_0, t_1], no condition on the final face t = t_1 while
    cut short, and a sampler that does not redraw points over the whole domain (``resample_every``, ``adaptive``).
    """
    box = problem.domain
    if any(getattr(stage, "time_decay", 0.0) for stage in stages) and TIME not in box.variables:
        raise ValueError(f"stage time_decay weights the residual along the variable 't', but {problem.name}'s "
                         f"variables are {box.variables}; drop time_decay from the schedule for a problem without time")
    windows = [stage.time_window for stage in stages if getattr(stage, "time_window", None) is not None]
    if not windows:
        return
    if any(later < earlier for earlier, later in zip(windows, windows[1:])):
        raise ValueError(f"stage time windows must grow (each stage's end at or after the previous one's), got "
                         f"{windows}: a shorter window would stop training the times already covered")
    if TIME not in box.variables:
        raise ValueError(f"stage time_window cuts the variable 't', but {problem.name}'s variables are "
                         f"{box.variables}; drop time_window from the schedule for a problem without time")
    index = box.variables.index(TIME)
    start, end = box.lower[index], box.upper[index]
    for window in windows:
        if not start < window <= end + 1e-12 * max(1.0, abs(end)):
            raise ValueError(f"stage time_window={window:g} must lie in (t_0, t_1] = ({start:g}, {end:g}]: "
                             "it is the end of the stage's time interval")
    for name, condition in problem.conditions().items():
        if condition.points is not None:  # observations keep their own points in every window
            continue
        faces = box.faces(condition.on)
        if any(face == index and math.isclose(bound, end) for face, bound in faces) and min(windows) < end:
            raise ValueError(f"condition {name!r} sits on the final face t={end:g}, outside a time window ending "
                             f"before it; time windows suit initial-value problems")
    if getattr(sampler, "resample_every", 0) or getattr(sampler, "adaptive", None) is not None:
        raise ValueError("stage time_window draws each window's points itself; sampler.resample_every and "
                         "sampler.adaptive would draw over the whole domain: set them to 0 / null with time windows")
