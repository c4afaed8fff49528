"""Ctrl-C and SIGTERM stop a run the same way: what finished is written, the rest gets fallbacks.

Kaggle and most schedulers stop a job with SIGTERM, whose default action
kills the process on the spot. ``stop_signals()`` turns SIGINT and SIGTERM
into a ``Stopped`` exception in the main thread, once: a second signal while
the results are being written is noted, not raised, so the writing finishes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report it


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopState:
    """Which signal stopped the run (None: none did)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._armed = True

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else EXIT_CODES.get(self.signum, 128 + self.signum)

    def stop(self, signum: int) -> None:
        """Record ``signum``; raise Stopped the first time only."""
        if self.signum is None:
            self.signum = signum
        if self._armed:
            self._armed = False
            raise Stopped(signum)

    def disarm(self) -> None:
        """From now on signals are only recorded: the results are being written."""
        self._armed = False


@contextlib.contextmanager
def stop_signals() -> Iterator[StopState]:
    """Within the block, SIGINT and SIGTERM raise ``Stopped`` once. Outside the main thread
    (where Python cannot install handlers) nothing changes but Ctrl-C's own KeyboardInterrupt."""
    state = StopState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {}
    for signum in SIGNALS:
        previous[signum] = signal.signal(signum, lambda n, frame: state.stop(n))
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
