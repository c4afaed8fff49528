"""Replicas whose every event is scripted: ``FakeReplica`` declares ``aimo_gguf.replicas.handle.ReplicaHandle``
and ``FakeLauncher`` its ``Launcher``, so the driver (``replicas.dispatch``) is tested with no Ray and no model.

A ``FakeReplica`` answers ``load()`` with its ``load`` events and each ``solve(work)`` with the events its next
script returns for that work (``answer_all`` by default: every problem solved, then ``Finished``). Events are
handed out on the driver's next ``events()`` call, as a real handle hands out what arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fakes import Clock, fake_info

from aimo_gguf.engine.api import EngineStats
from aimo_gguf.replicas.handle import (
    Event,
    Finished,
    Launcher,
    Loaded,
    ReplicaCounters,
    ReplicaHandle,
    Solved,
    Work,
)
from aimo_gguf.solving.solver import ProblemResult

Script = Callable[[Work], list[Event]]


def result(index: int, *, answer: int | None = None) -> ProblemResult:
    return ProblemResult(index=index, id=f"p{index}", answer=index if answer is None else answer, votes=2, valid=2,
                         samples=2, fallback=False, too_long=False, early_stopped=False, majority=True,
                         correct=None)


def counters(problems: int) -> ReplicaCounters:
    """The counters after ``problems`` decided, 10 generated tokens and a second each."""
    return ReplicaCounters(engine=EngineStats(generated_tokens=10 * problems), busy_seconds=float(problems),
                           problems=problems)


def answer_all(work: Work) -> list[Event]:
    """Every problem of ``work`` decided, then the call's end (counters counted from the call's start)."""
    events: list[Event] = [Solved(result(i), counters(n + 1)) for n, (i, _) in enumerate(work.problems)]
    return [*events, Finished(counters(len(work.problems)))]


def answer_then(first: int, last: Event) -> Script:
    """The first ``first`` problems of the call decided, then ``last`` (a Died, a Failed)."""
    return lambda work: [*answer_all(work)[:min(first, len(work.problems))], last]


def loaded(*, batch: int = 2, pid: int = 7) -> Loaded:
    return Loaded(fake_info(batch_size=batch), "plain", node="n", pid=pid)


class FakeReplica(ReplicaHandle):
    def __init__(self, *, load: Sequence[Event] = (), scripts: Sequence[Script] = ()) -> None:
        self.load_events, self.scripts = list(load), list(scripts)
        self.works: list[Work] = []  # every solve call's work, in order
        self.pending: list[Event] = []
        self.decided = 0  # problems decided since it loaded
        self.closed = False

    def load(self) -> None:
        self.pending.extend(self.load_events)

    def solve(self, work: Work) -> None:
        self.works.append(work)
        script = self.scripts.pop(0) if self.scripts else answer_all
        base = self.decided
        for event in script(work):
            if isinstance(event, (Solved, Finished)):  # a script counts from its call: the protocol's are totals
                self.decided = base + event.counters.problems
                event = replace(event, counters=counters(self.decided))
            self.pending.append(event)

    def events(self) -> list[Event]:
        found, self.pending = self.pending, []
        return [] if self.closed else found

    def close(self) -> None:
        self.closed = True


class FakeLauncher(Launcher):
    """Hands out ``replicas`` in order, then replicas that never load; each ``wait`` moves ``clock`` by
    ``step``."""

    def __init__(self, replicas: Sequence[FakeReplica], *, clock: Clock | None = None, step: float = 0.0) -> None:
        self.replicas, self.clock, self.step = list(replicas), clock, step
        self.started: list[FakeReplica] = []

    def start(self, *, number: int) -> FakeReplica:
        replica = self.replicas[number] if number < len(self.replicas) else FakeReplica()
        self.started.append(replica)
        return replica

    def wait(self, handles: Sequence[ReplicaHandle], *, timeout: float) -> None:
        if self.clock is not None:
            self.clock.now += self.step
