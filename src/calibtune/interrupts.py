"""Ctrl-C and SIGTERM: stop between units of work, leave the run folder resumable.

Inside `stop_on_signals()` a SIGINT or SIGTERM raises `Interrupted` (a KeyboardInterrupt, so
no `except Exception` swallows it) at once: the unit of work in progress — a chunk of items, a
training step, an E-step — is discarded, and what was saved before stays. A unit that must not
be cut (a checkpoint being written) runs inside `finish_first()`: a signal received there is
raised when it ends; a second signal does not wait. The command line turns `Interrupted` into
one line saying how to resume and the exit status 128 + signal (130 / 143).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []
_depth = [0]  # finish_first() nesting


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM stopped the command; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: object) -> None:
    if _depth[0] and not _pending:  # a save in progress: finish it, then stop
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT / SIGTERM raise `Interrupted` inside (the previous handlers come back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _pending.clear()


@contextlib.contextmanager
def finish_first() -> Iterator[None]:
    """A unit of work a signal must not cut: the first signal is raised when it ends."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        signum = _pending.pop() if not _depth[0] and _pending else None
    if signum is not None:
        raise Interrupted(signum)
