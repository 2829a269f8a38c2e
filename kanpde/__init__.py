"""kanpde: physics-informed Kolmogorov-Arnold Networks for PDEs, with honest MLP-PINN baselines.

The public surface: define a :class:`Problem` on a :class:`Box` with named conditions
(:func:`dirichlet`, :func:`neumann`, :class:`Condition`), pick a :class:`KAN` or :class:`MLP`, and
:func:`train` it in :class:`Stage` s; everything else is internal.
"""

from kanpde.nn import KAN, MLP, count_parameters
from kanpde.problem import Box, Condition, Problem, dirichlet, neumann
from kanpde.results import load_checkpoint
from kanpde.sampling import Sampler
from kanpde.training import Result, Stage, train

__version__ = "0.1.0"

__all__ = ["Box", "Condition", "KAN", "MLP", "Problem", "Result", "Sampler", "Stage", "count_parameters",
           "dirichlet", "load_checkpoint", "neumann", "train"]
