"""A replica that is a local child process: the replica-handle protocol over a socket pair.

``ProcessHandle`` starts ``supervise.child`` and talks to it with pickled
records over a ``multiprocessing.connection.Connection``: commands out,
``replicas.handle`` events back (read by a thread, so the driver never
blocks on the child). The child's stdout and stderr come back through one
pipe, are echoed to this process's stderr (its warnings are the run's), and
their last lines are kept: when the child dies without its goodbye, ``Died``
names the signal and llama.cpp's last error line. The handle also keeps what
a supervisor needs to price a death: the positions the child has taken and
not answered (``in_flight``) and whether it has decoded at all
(``decoding``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

from ..replicas.handle import Died, Event, Failed, Finished, Solved, Work
from ..sandbox.process import start_process
from .child import Load

TAIL_LINES = 40  # the child's last output lines kept for the one-line reason of its death
CLOSE_SECONDS = 5.0  # an idle child's orderly exit (the engine freed) before it is killed
EXIT_SECONDS = 5.0  # after its connection closed, how long a child may take to exit before it is killed
ERROR_LINE = re.compile(r"error|assert|abort|fault|illegal|fatal|failed|exception|cuda", re.IGNORECASE)


class ProcessHandle:
    """One engine process (``ReplicaHandle``); ``load`` starts it. ``wake`` is set whenever an event arrives."""

    def __init__(self, load: Load, *, wake: threading.Event) -> None:
        self.spec, self.wake = load, wake
        self.pid = 0
        self.in_flight: set[int] = set()  # positions the child took in the current solve and has not answered
        self.decoding = False  # the child's engine has run a step
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.exit_code: int | None = None
        self._events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._busy = False
        self._closing = False
        self._goodbye = False
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._threads: list[threading.Thread] = []

    def load(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = start_process(
                [sys.executable, "-m", "aimo_gguf.supervise.child", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=_child_env())
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._conn = Connection(ours.detach())
        for target, name in ((self._echo, "engine-output"), (self._read, "engine-events")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._send(("load", self.spec))

    def solve(self, work: Work) -> None:
        with self._lock:
            self.in_flight.clear()
            self._busy = True
        self._send(("solve", work))

    def events(self) -> list[Event]:
        with self._lock:
            events, self._events = list(self._events), deque()
        return events

    def close(self) -> None:
        """End the child: an idle one is asked to exit (its engine freed), a busy one is killed at once."""
        if self._closing or self._proc is None:
            self._closing = True
            return
        self._closing = True
        if not self._busy:
            self._send(("close",))
            try:
                self._proc.wait(timeout=CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        for thread in self._threads:
            thread.join(timeout=EXIT_SECONDS)
        if self._conn is not None:
            self._conn.close()

    # --- the threads --------------------------------------------------------------------------------------

    def _send(self, command: tuple) -> None:
        try:
            self._conn.send(command)
        except (OSError, ValueError):
            pass  # the child is gone: its reader thread reports the death

    def _kill(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.kill()
            except OSError:
                pass
        self.exit_code = self._proc.wait()

    def _read(self) -> None:
        """The child's records into ``events`` until its connection closes; then its death, if it was one."""
        try:
            while True:
                self._take(self._conn.recv())
        except (EOFError, OSError, ValueError):
            pass
        except Exception as e:  # noqa: BLE001 - a record that does not unpickle: the child is no use any more
            self.tail.append(f"unreadable record from the engine process: {type(e).__name__}: {e}")
            self._proc.kill()
        try:
            self.exit_code = self._proc.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._kill()
        self._threads[0].join(timeout=EXIT_SECONDS)  # its last output lines, for the reason
        if not self._closing and not self._goodbye:
            self._push(Died(self.death()))

    def _take(self, record) -> None:
        if isinstance(record, tuple):
            if record[0] == "started":
                with self._lock:
                    self.in_flight.add(record[1])
            elif record[0] == "decoding":
                self.decoding = True
            elif record[0] == "bye":
                self._goodbye = True
            return
        with self._lock:
            if isinstance(record, Solved):
                self.in_flight.discard(record.result.index)
            elif isinstance(record, (Finished, Failed)):
                self._busy = False
                self.in_flight.clear()
        self._push(record)

    def _push(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
        self.wake.set()

    def _echo(self) -> None:
        """The child's output lines to our stderr (best effort: a closed terminal must not stop the reading)."""
        for raw in iter(self._proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            try:
                print(line, file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass
        self._proc.stdout.close()

    def death(self) -> str:
        """One line: how the child ended, and its last error line."""
        code = self.exit_code
        if code is not None and code < 0:
            try:
                what = f"died of {signal.Signals(-code).name}"
            except ValueError:
                what = f"died of signal {-code}"
        else:
            what = f"exited with code {code} without finishing"
        last = next((line.strip() for line in reversed(self.tail) if ERROR_LINE.search(line)), "")
        return f"the engine process (pid {self.pid}) {what}" + (f": {last}" if last else "")

    @property
    def signal_name(self) -> str | None:
        """The signal that ended the child, if one did."""
        code = self.exit_code
        if code is None or code >= 0:
            return None
        try:
            return signal.Signals(-code).name
        except ValueError:
            return None


class ProcessLauncher:
    """Engine processes for one run (``Launcher``): each ``start`` is a new child of ``load``'s settings."""

    def __init__(self, load: Load) -> None:
        self.spec = load
        self.wake = threading.Event()

    def start(self, *, number: int, **changes) -> ProcessHandle:
        """A new child (not loading yet); ``changes`` replace settings of the run's config (a restart's
        ``repack=False``; the child then plans its own load, for the settings it has)."""
        if not changes:
            return ProcessHandle(replace(self.spec, number=number), wake=self.wake)
        config = replace(self.spec.config, **changes)
        return ProcessHandle(replace(self.spec, number=number, config=config, plan=None), wake=self.wake)

    def wait(self, handles: Sequence[ProcessHandle], *, timeout: float) -> None:
        self.wake.wait(timeout)
        self.wake.clear()


def _child_env() -> dict:
    """This environment, with this aimo_gguf first on the path (also when it runs from a checkout)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
