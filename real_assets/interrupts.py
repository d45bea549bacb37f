"""SIGINT and SIGTERM for the command line: both stop the command as `Interrupted`, never silently.

Dagster's in-process execution installs its own SIGINT handler for the length of a run (and maps SIGTERM to
it): a signal there becomes `DagsterExecutionInterruptedError` inside a step's body, but one that lands
while Dagster sets up or closes a run is only recorded, and forgotten when the run ends, or is raised in
a finalizer where Python prints "Exception ignored" and carries on. So every signal is also written to a
wakeup pipe (`signal.set_wakeup_fd`, which sees the signal whatever Python handler is installed) and the
demo asks `received()` after each run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pipe: tuple[int, int] | None = None
_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """The command received SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a command a signal ended."""
        return 128 + self.signum


def _raise(signum: int, _frame) -> None:
    raise Interrupted(signum)


def _quiet_unraisable(default):
    def hook(unraisable) -> None:
        # An interrupt raised in a finalizer cannot propagate; `received()` reports it instead.
        if isinstance(unraisable.exc_value, KeyboardInterrupt) or type(
            unraisable.exc_value
        ).__name__.endswith("InterruptedError"):
            return
        default(unraisable)

    return hook


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """For the length of a command: SIGINT and SIGTERM raise `Interrupted` in the main thread, and every
    one of them is recorded on the wakeup pipe (see the module docstring). What was installed before is
    put back after (a command run inside another program, such as a test, leaves it as it was)."""
    global _pipe
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    hook = sys.unraisablehook
    if _pipe is None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        _pipe = (read, write)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise)
    wakeup = signal.set_wakeup_fd(_pipe[1], warn_on_full_buffer=False)
    sys.unraisablehook = _quiet_unraisable(hook)
    received()  # forget what an earlier command in this process left
    try:
        yield
    finally:
        signal.set_wakeup_fd(wakeup)
        sys.unraisablehook = hook
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _drain() -> None:
    global _pending
    if _pipe is None:
        return
    with contextlib.suppress(BlockingIOError):
        while data := os.read(_pipe[0], 512):
            for signum in data:
                if signum in STOP_SIGNALS:
                    _pending = signum


def pending() -> int | None:
    """The stop signal received and not yet taken by `received()`, or None. Code that ends a step asks it to
    tell an error a signal caused (an interrupted DuckDB query, a library's own exception) from the step's
    own."""
    _drain()
    return _pending


def received() -> int | None:
    """The stop signal received since the last call (the last one if several), or None."""
    global _pending
    _drain()
    found, _pending = _pending, None
    return found


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off while cleaning up after an interrupt (a second Ctrl-C must not leave
    the clean-up half done); they are recorded, not acted on."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: None)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
