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

A stage's ``time_decay`` = c weights the PDE residual's square by exp(-c (t - t_0)) (:func:`time_decay`), a
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
from collections.abc import Callable, Sequence

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


def time_decay(problem: Problem, rate: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The scale exp(-rate (t - t_0) / 2) of the PDE residual at points x (N, n_vars) -> (N,), so that its square
    is weighted by exp(-rate (t - t_0)); None for rate 0. The objective applies it
    (:meth:`kanpde.objective.LeastSquares.set_residual_scale`): the problem itself is never changed."""
    rate = check_decay(rate)
    if not rate:
        return None
    if TIME not in problem.domain.variables:
        raise ValueError(f"a time decay weights the residual along the variable 't', but {problem.name}'s "
                         f"variables are {problem.domain.variables}")
    index = problem.domain.variables.index(TIME)
    start = problem.domain.lower[index]

    def scale(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * rate * (x[:, index] - start))

    return scale


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
