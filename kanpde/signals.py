"""SIGINT and SIGTERM as one exception, so a run stopped by Ctrl-C, SLURM or a closed terminal saves its work.

Python turns SIGINT into ``KeyboardInterrupt`` but lets SIGTERM kill the process on the spot: no
metrics.json, no checkpoint. While :func:`interrupts_raise` is active both raise :class:`Interrupted` (a
``KeyboardInterrupt``, so every handler of Ctrl-C also handles SIGTERM), which names the signal and the exit
code a shell expects for it (128 + signal number: 130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run was stopped by ``signum``; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_of(error: BaseException) -> int:
    """The signal behind an interrupt: its own for :class:`Interrupted`, SIGINT for a plain Ctrl-C."""
    return error.signum if isinstance(error, Interrupted) else int(signal.SIGINT)


def describe(signum: int, step: int) -> str:
    """The message metrics.json carries for a run stopped by ``signum`` at ``step``."""
    if signum == signal.SIGINT:
        return f"interrupted by the user (SIGINT) at step {step}"
    return f"stopped by {signal.Signals(signum).name} at step {step}"


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread.

    Signal handlers can only be set from the main thread; elsewhere (a launcher's worker thread) this does
    nothing and the defaults stay. The previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def interrupts_held() -> Iterator[list[int]]:
    """While active, SIGINT and SIGTERM are recorded, not raised: the run folder is written whole.

    Yields the list of signals received meanwhile (the caller may still exit with the first one's code).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in HANDLED}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
