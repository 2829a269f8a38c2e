"""A/B step time of the B-spline KAN before and after the edge-basis abstraction (issue 15), interleaved.

Runs one forward-derivative training step (kanpde.bench.step's Poisson step, KAN [2,10,1] cubic, grid 20,
N = 10,000, float64, one thread) with kan.py from git revision b6c3691 (before the bases) and with the
current kan.py, 40 shuffled rounds, and prints the median and minimum wall time (ms) of each:
    OMP_WAIT_POLICY=PASSIVE python results/bench/step_time_bases/ab_bspline.py
"""

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kanpde.bench.step import Variant, make_points, make_step
from kanpde.nn import KAN

BEFORE = "b6c3691"
folder = Path(tempfile.mkdtemp()) / "kan_before"
folder.mkdir()
(folder / "__init__.py").write_text("")
(folder / "kan.py").write_text(subprocess.run(["git", "show", f"{BEFORE}:kanpde/nn/kan.py"], check=True,
                                              capture_output=True, text=True).stdout)
sys.path.insert(0, str(folder.parent))
from kan_before.kan import KAN as KANBefore  # noqa: E402

torch.set_num_threads(1)
points = make_points(10_000, torch.float64)
variant = Variant("kan", (2, 10, 1), 20, "forward")
models = {"before": KANBefore([2, 10, 1], grid_size=20, order=3, seed=0).double(),
          "after": KAN([2, 10, 1], grid_size=20, order=3, seed=0).double()}
steps = {name: make_step(variant, model) for name, model in models.items()}
losses = {name: step(points) for name, step in steps.items()}
assert losses["before"] == losses["after"], losses  # the same arithmetic
times = {name: [] for name in steps}
rng = random.Random(0)
for _ in range(40):
    names = list(steps)
    rng.shuffle(names)
    for name in names:
        tick = time.perf_counter()
        steps[name](points)
        times[name].append(time.perf_counter() - tick)
for name, values in times.items():
    print(f"{name}: median {1e3 * statistics.median(values):.1f} ms, min {1e3 * min(values):.1f} ms")
