"""kanpde: physics-informed Kolmogorov-Arnold Networks for PDEs, with honest MLP-PINN baselines.

The public surface: define a :class:`Problem` on a :class:`Box` with named conditions
(:func:`dirichlet`, :func:`neumann`, :func:`periodic`, :class:`Condition`), pick a :class:`KAN` or :class:`MLP`, and
:func:`train` it in :class:`Stage` s (with :class:`LevenbergMarquardt` or a ``torch.optim`` optimizer); everything
else is internal.
"""

import os

# OpenMP threads that busy-wait between parallel regions make a shared 2-core machine 5-10x slower
# (measured: KAN step 0.80 s with OMP_WAIT_POLICY=ACTIVE vs 0.11 s PASSIVE under load). The policy is read
# when torch's OpenMP runtime starts, so it is set here, before torch is imported; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kanpde.nn import KAN, MLP, count_parameters  # noqa: E402
from kanpde.observations import observations, read_observations  # noqa: E402
from kanpde.optim import LevenbergMarquardt  # noqa: E402
from kanpde.problem import Box, Condition, Problem, dirichlet, neumann, periodic  # noqa: E402
from kanpde.results import load_checkpoint  # noqa: E402
from kanpde.sampling import Sampler  # noqa: E402
from kanpde.training import Result, Stage, train  # noqa: E402
from kanpde.unknowns import Unknown  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Box", "Condition", "KAN", "LevenbergMarquardt", "MLP", "Problem", "Result", "Sampler", "Stage", "Unknown",
           "count_parameters", "dirichlet", "load_checkpoint", "neumann", "observations", "periodic", "read_observations",
           "train"]
