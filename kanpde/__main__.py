"""``python -m kanpde ...``"""

import os
import sys

from kanpde.cli import main


def run() -> int:
    """:func:`kanpde.cli.main`; output piped into a reader that stops early (``kanpde list | head -3``) ends
    quietly, as other command-line tools do, instead of in a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe shows up here when the output was buffered
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit and would report the same error: point it at devnull first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
