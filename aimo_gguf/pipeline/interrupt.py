"""Ctrl-C, SIGTERM and SIGHUP stop a run the same way: what finished is written, the rest gets fallbacks.

Kaggle and most schedulers stop a job with SIGTERM, a closed terminal or a
dropped ssh session sends SIGHUP; the default action of both kills the
process on the spot. ``stop_signals()`` turns SIGINT, SIGTERM and SIGHUP into
a ``Stopped`` exception in the main thread while it is armed. After a hangup
the terminal refuses every write (EIO): a progress bar or a note written there
must not cost the results, so stdout and stderr that no longer take writes are
pointed at /dev/null when the signal arrives. A reader that goes away without a
signal (``|& tee log`` where tee dies, ``2>&1 | head``) fails a write with EPIPE
instead: ``quiet_failures()`` makes such a write point the stream at /dev/null
too, so the run goes on and writes its files.

A signal can land while the main thread runs a Python callback from C (llama.cpp's
log callback, called all through a model load): an exception raised there
is swallowed by ctypes. So the handler also records the signal, and the run
calls ``check()`` at safe points (after the load, after every engine step),
which raises ``Stopped`` for a signal that was recorded but not raised. Once
the run has its answers and starts writing them it ``disarm()``s: later
signals are only recorded, and the writing finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODES = {s: 128 + s for s in SIGNALS}  # 130, 143, 129: as shells report a process the signal ended


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopState:
    """The first stop signal received (None: none was), and whether one still raises."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = True

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def stop(self, signum: int) -> None:
        """The signal handler: record the signal, and raise while armed."""
        detach_dead_terminal()
        if self.signum is None:
            self.signum = signum
        if self.armed:
            raise Stopped(self.signum)

    def check(self) -> None:
        """A safe point: raise for a signal that arrived (and may have been swallowed) while armed."""
        if self.armed and self.signum is not None:
            raise Stopped(self.signum)

    def disarm(self) -> None:
        """From now on signals are only recorded: the results are being written."""
        self.armed = False


def detach_dead_terminal() -> None:
    """Point stdout and stderr at /dev/null where they no longer take writes (a terminal that hung up)."""
    for fd in (1, 2):
        try:
            os.write(fd, b"")  # nothing is written; a hung-up terminal still answers EIO
        except OSError:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                continue
            os.dup2(null, fd)
            os.close(null)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopState]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise ``Stopped`` while the state is armed. Outside the
    main thread (where Python cannot install handlers) nothing changes but Ctrl-C's own
    KeyboardInterrupt."""
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


class _Guarded:
    """A text stream whose failing write or flush (EPIPE, EIO: its reader or terminal is gone) points its file
    descriptor at /dev/null and is dropped: progress and notes are worth less than the run's files."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._drop()

    def _drop(self) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())  # the buffered rest, flushed at exit, goes nowhere too
            os.close(null)
        except (OSError, ValueError):
            pass
        self._stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process's stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_failures() -> Iterator[None]:
    """Within the block, a write to stderr that fails drops stderr instead of raising (see ``_Guarded``)."""
    original = sys.stderr
    sys.stderr = _Guarded(original)
    try:
        yield
    finally:
        sys.stderr = original
