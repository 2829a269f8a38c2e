"""``python -m kanpde bench``: step time, memory, time to accuracy and the Levenberg-Marquardt iteration cost.

The runner is :mod:`kanpde.bench.run`; the pieces are :mod:`~kanpde.bench.step` (step time and memory),
:mod:`~kanpde.bench.accuracy` (time to accuracy against pykan and DeepXDE), :mod:`~kanpde.bench.lm` (one
LM iteration and its parts) and :mod:`~kanpde.bench.report` (tables). Submodules are imported on use, so
``python -m kanpde.bench.step`` and friends run as scripts without a second copy of themselves.
"""


def main(argv=None) -> int:
    from kanpde.bench.run import main as run_main

    return run_main(argv)
