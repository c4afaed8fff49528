"""The replica-handle protocol: how a driver loads, feeds and hears from one replica, wherever it runs.

A replica is an engine and the usual ``Solver`` over it, living somewhere the
driver cannot call into directly: a Ray actor (``replicas.on_ray``), a thread,
or a local child process. The driver (``replicas.dispatch``) sees it only
through a ``ReplicaHandle``; everything else crosses as the plain, picklable
records below, so a handle can send them over Ray, a queue or a pipe.

The life of a handle:

1. ``load()`` starts loading the model and returns at once. Exactly one of
   ``Loaded`` (ready for work), ``LoadFailed`` (the load raised: the model or
   the options are at fault, a new replica would fail alike) or ``Died`` (the
   process went away while loading: a new one may well load) follows.
2. ``solve(work)`` hands a loaded, idle replica a few whole problems and
   returns at once. One ``Solved`` per problem follows as each is decided (in
   deciding order), then ``Finished`` (the call is over: a problem with no
   result had no time before ``work.deadline_at``), or instead ``Failed`` (the
   call raised: the replica may be alive, the driver ends it) or ``Died``. A
   handle takes one ``solve`` at a time; ``Progress`` may arrive in between.
3. ``events()`` returns what arrived since the last call, without waiting;
   ``Launcher.wait`` is the one blocking call, over all of a driver's handles.
4. ``close()`` ends the replica (kills its process where it has one) and may
   be called at any time, more than once; no event follows it.

``Died.why`` and ``Failed.why`` are one line each (the signal, the last error
line): the driver prints them. Every ``Solved``, ``Finished`` and ``Progress``
carries the replica's counters so far (``ReplicaCounters``: totals, not
increments, so a lost record loses nothing). Importing this module loads
neither Ray nor llama.cpp.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..engine.api import EngineStats, LoadInfo
    from ..errors import AimoError
    from ..pipeline.problems import Problem
    from ..solving.solver import ProblemResult
    from ..styles.tir import ToolStats


class ReplicaState(enum.Enum):
    """The driver's view of one replica (a replacement is a new replica: LOST and CLOSED are final)."""

    LOADING = "loading"  # load() called, no answer yet
    IDLE = "idle"  # loaded, no work in hand
    BUSY = "busy"  # a solve() call is out
    LOST = "lost"  # died, failed, or never loaded in time: counted, and it takes no more work
    CLOSED = "closed"  # ended by the driver before it loaded: no work was left for it


@dataclass
class ReplicaCounters:
    """A replica's engine and tool counters at one moment, totals since it loaded (plain data)."""

    engine: EngineStats | None = None  # None until the engine loaded
    tools: ToolStats | None = None  # with --tir only
    busy_seconds: float = 0.0  # inside solve calls
    problems: int = 0  # problems decided
    peak_rss_mb: float = 0.0  # the replica process's peak resident memory so far, MiB


@dataclass(frozen=True)
class Work:
    """What one ``solve`` call hands a replica."""

    problems: Sequence[tuple[int, Problem]]  # (the driver's position, the problem): results carry the position
    deadline_at: float | None  # a time.time() value: the run's deadline (nodes are assumed to keep NTP time)
    parallel: int  # problems being solved at once over every replica (the Solver's time shares)
    waiting_elsewhere: int  # problems queued or in other replicas' hands (the Solver's time shares)


@dataclass(frozen=True)
class Loaded:
    info: LoadInfo
    prompt_style: str  # the prompt family its Solver uses (harmony, think, plain)
    node: str = "?"  # where it runs (an IP address, a host name)
    pid: int = 0  # its process


@dataclass(frozen=True)
class LoadFailed:
    error: AimoError  # the load's own error, its message naming the replica: the run shows it as is


@dataclass(frozen=True)
class Solved:
    result: ProblemResult  # ``index``: the driver's position of the problem (its pair's first in Work.problems)
    counters: ReplicaCounters
    traces: list[dict] = field(default_factory=list)  # the problem's samples, when the handle was asked for traces


@dataclass(frozen=True)
class Finished:
    counters: ReplicaCounters


@dataclass(frozen=True)
class Progress:
    counters: ReplicaCounters  # only for a progress bar: the next Solved or Finished says what counts


@dataclass(frozen=True)
class Failed:
    why: str  # one line
    error: AimoError | None = None  # when it was one of aimo-gguf's errors (an InputError ends the whole run)


@dataclass(frozen=True)
class Died:
    why: str  # one line: the signal, the lost node, the last error line


Event = Loaded | LoadFailed | Solved | Finished | Progress | Failed | Died


@runtime_checkable
class ReplicaHandle(Protocol):
    """One replica as the driver drives it (see the module's docstring for the order of events)."""

    def load(self) -> None: ...

    def solve(self, work: Work) -> None: ...

    def events(self) -> list[Event]: ...

    def close(self) -> None: ...


@runtime_checkable
class Launcher(Protocol):
    """Where replicas come from: each ``start`` makes a new one (not loading yet); ``wait`` blocks until one
    of ``handles`` has events, at most ``timeout`` seconds (a stop signal may end it sooner)."""

    def start(self, *, number: int) -> ReplicaHandle: ...

    def wait(self, handles: Sequence[ReplicaHandle], *, timeout: float) -> None: ...


class ProblemTraces:
    """The trace sink of a replica's Solver: records kept until their problem is decided, then sent with
    its ``Solved``."""

    def __init__(self) -> None:
        self.by_problem: dict[str, list[dict]] = {}

    def write(self, record: dict) -> None:
        self.by_problem.setdefault(record["id"], []).append(record)
