"""The driver of a replica run: replicas loaded, problems handed out as replicas free up, results streamed back.

``Dispatcher`` is a results source for ``aimo_gguf.pipeline.runner``: the runner
keeps the one journal, submission, summary and trace file, and counts every
result exactly as it does for a single engine; this module only decides which
replica solves what. It sees replicas through ``replicas.handle`` alone, so it
runs the same over Ray actors (``replicas.on_ray``) or any other handle. Each
replica gets a few whole problems at a time (enough to fill its batch), never
a fixed share of the run, so a slow replica holds back nobody. A replica whose
process or node is lost stops its stream: its problems without a result go
back to the front of the queue, it is counted, and a replacement is started
(at most ``MAX_LOSSES_PER_REPLICA`` times for each replica asked for, so a
machine that keeps killing them does not loop). A load is awaited only until
``LOAD_TIMEOUT`` or the run's deadline, whichever comes first: the run goes on
with the replicas that loaded.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from ..config import RunConfig
from ..engine.api import EngineStats, LoadInfo
from ..errors import EngineError, InputError
from ..pipeline.problems import Problem
from ..solving.solver import Clock, ProblemResult
from ..styles.tir import ToolStats
from .handle import (
    Died,
    Event,
    Failed,
    Finished,
    Launcher,
    Loaded,
    LoadFailed,
    Progress,
    ReplicaCounters,
    ReplicaHandle,
    ReplicaState,
    Solved,
    Work,
)

WAIT_SECONDS = 0.1  # one wait for events: also how often stop signals and the deadline are looked at
LOAD_TIMEOUT = 900.0  # a replica not loaded by then is lost (a cluster short of what it asks for); none: an error
MAX_LOSSES_PER_REPLICA = 2  # replacements allowed for each replica asked for (a slot)
LATE_SECONDS = 1.0  # after the replicas' deadline, the most the driver waits for their last (cut) results

LOADING, IDLE, BUSY, LOST, CLOSED = (ReplicaState.LOADING, ReplicaState.IDLE, ReplicaState.BUSY, ReplicaState.LOST,
                                     ReplicaState.CLOSED)


@dataclass
class Member:
    """The driver's view of one replica (a replacement is a new member)."""

    number: int
    slot: int  # the replica asked for that this one is (a replacement takes its lost member's slot)
    handle: ReplicaHandle
    load_started: float  # a ``clock`` value
    load_by: float | None  # a ``clock`` value: not loaded by then, it is lost without replacement
    state: ReplicaState = LOADING
    node: str = "?"
    pid: int = 0
    info: LoadInfo | None = None
    counters: ReplicaCounters | None = None  # from its stream: what the summary counts
    live: ReplicaCounters | None = None  # from Progress while it runs: only for the progress bar
    outstanding: set[int] = field(default_factory=set)  # positions of its solve call without a result yet

    def row(self) -> dict:
        c = self.counters or ReplicaCounters()
        generated = c.engine.generated_tokens if c.engine is not None else 0
        seconds = round(c.busy_seconds, 3)
        return {"replica": self.number, "node": self.node, "pid": self.pid, "problems": c.problems,
                "generated_tokens": generated, "busy_seconds": seconds,
                "tokens_per_second": round(generated / seconds, 2) if seconds > 0 else 0.0,
                "lost": self.state is LOST}


class Dispatcher:
    """Replicas from ``launcher``, ``replicas`` of them, as a results source: ``start`` loads them.

    ``deadline`` (a ``clock`` value, the run's) bounds the loads; ``keep_back``
    seconds of it are kept for ending the replicas (a local cluster's shutdown);
    ``short_of`` completes the error when no replica loads in ``LOAD_TIMEOUT``.
    """

    crashes = lost = 0  # a lost replica is replaced and its problems requeued (``failures``), not retried here
    peak_rss_mb = 0.0  # the summary's is the driver's; each replica's memory is its own (README)

    def __init__(self, launcher: Launcher, config: RunConfig, *, replicas: int, model_path: str,
                 deadline: float | None = None, clock: Clock = time.monotonic, keep_back: float = 0.0,
                 notes: Sequence[str] = (), short_of: str = "") -> None:
        self.launcher, self.config, self.n_replicas = launcher, config, replicas
        self.model_path, self.deadline, self.clock = model_path, deadline, clock
        self.keep_back, self.notes, self.short_of = keep_back, tuple(notes), short_of
        self.members: list[Member] = []
        self.failures = 0  # replicas lost
        self.stats = EngineStats()
        self.info: LoadInfo | None = None
        self.prompt_style = ""  # the replicas' prompt family, from their loads
        self.losses: Counter = Counter()  # per slot: members lost
        self.tool_stats: ToolStats | None = None  # the run's, from ``results``: the replicas' tool counters

    def cut(self, deadline: float | None) -> float | None:
        """The replicas' deadline: the run's, less the time kept back to end them."""
        return None if deadline is None else deadline - self.keep_back

    # --- loading ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every replica and wait for one to load (the others join the run as they load), or for the
        loads' time limit: at ``LOAD_TIMEOUT`` with none loaded that is an error, at the deadline the run goes
        on without replicas, as one out of time (``info`` then describes no load)."""
        load_by = self.load_by()
        for slot in range(self.n_replicas):
            self.start_member(slot, load_by)
        while self.loading() and not self.alive():
            self.launcher.wait([m.handle for m in self.loading()], timeout=WAIT_SECONDS)
            for member in self.loading():
                for event in member.handle.events():
                    self._first_load(member, event)
            loading = self.loading()
            if self.alive() or not loading or self.clock() < min(m.load_by for m in loading):
                continue
            if self.deadline is not None and self.clock() >= self.cut(self.deadline):
                self.drop_loads()
                break
            raise EngineError(f"{len(loading)} replicas did not load within {LOAD_TIMEOUT:.0f} s{self.short_of}")
        loaded = [m.info for m in self.members if m.info is not None]
        if loaded:
            self.info = replace(loaded[0], notes=self.notes + loaded[0].notes)
        else:  # the deadline came first: the run ends as one out of time, with every fallback written
            notes = (*self.notes, "--ray: no replica loaded within --time-limit: every problem gets the fallback")
            self.info = no_load_info(self.model_path, self.config, notes)

    def _first_load(self, member: Member, event: Event) -> None:
        """An answer to a load before the run: a failed load is the run's error (the model, the options)."""
        if isinstance(event, LoadFailed):
            raise event.error
        if isinstance(event, Died):
            raise EngineError(f"replica {member.number} died while loading the model ({event.why})")
        if isinstance(event, Loaded):
            self._loaded(member, event)

    def _loaded(self, member: Member, event: Loaded) -> None:
        member.node, member.pid, member.info = event.node, event.pid, event.info
        member.state = IDLE
        self.prompt_style = event.prompt_style

    def load_by(self) -> float:
        """When a load starting now is given up: ``LOAD_TIMEOUT`` from now, or the deadline if sooner."""
        by = self.clock() + LOAD_TIMEOUT
        deadline = self.cut(self.deadline)
        return by if deadline is None else min(by, deadline)

    def start_member(self, slot: int, load_by: float) -> Member:
        number = len(self.members)
        member = Member(number=number, slot=slot, handle=self.launcher.start(number=number),
                        load_started=self.clock(), load_by=load_by)
        self.members.append(member)
        member.handle.load()
        return member

    def loading(self) -> list[Member]:
        return [m for m in self.members if m.state is LOADING]

    def alive(self) -> bool:
        return any(m.state in (IDLE, BUSY) for m in self.members)

    def drop_loads(self) -> None:
        """End the replicas still loading: no more work will come for them."""
        for member in self.loading():
            member.handle.close()
            member.state = CLOSED

    def close(self) -> None:
        """End every replica."""
        for member in self.members:
            member.handle.close()

    # --- the run ------------------------------------------------------------------------------------------

    def results(self, problems: Sequence[Problem], *, deadline: float | None = None, clock: Clock = time.monotonic,
                on_step: Callable[[], None] | None = None, tracer=None, tool_stats=None,
                margin: float = 0.0) -> Iterator[ProblemResult]:
        """Solve ``problems`` on the replicas; yield each result (``index`` = position in ``problems``) as it
        arrives. ``deadline`` is a ``clock`` value: replicas cut at it (``keep_back`` earlier), and the driver
        stops waiting a little later (what is still out then gets no result: the caller writes fallbacks).
        Replicas still loading join as they finish; one not loaded by its ``load_by`` is lost, not replaced."""
        queue = deque(range(len(problems)))
        deadline = self.cut(deadline)
        late = min(LATE_SECONDS, margin / 2)
        deadline_at = None if deadline is None else time.time() + (deadline - clock())
        self.tool_stats = tool_stats
        try:
            while True:
                out_of_time = deadline is not None and clock() >= deadline
                if not out_of_time:
                    for member in [m for m in self.members if m.state is IDLE]:
                        if not queue:
                            break
                        self._submit(member, queue, problems, deadline_at)
                if not self._busy():
                    if self.loading() and (out_of_time or not queue):
                        self.drop_loads()  # nothing is left for them to do (or no time to do it in)
                    if not self.loading():
                        if queue and not out_of_time and not self.alive():
                            raise EngineError(f"every replica was lost ({self.failures} in all), {len(queue)} "
                                              f"problems unsolved: the journal keeps what finished, rerun with "
                                              f"--resume")
                        break
                active = [m for m in self.members if m.state in (LOADING, BUSY)]
                self.launcher.wait([m.handle for m in active], timeout=WAIT_SECONDS)
                if on_step is not None:
                    on_step()
                for member in active:  # before the deadline's check: a result that arrived is kept
                    for event in member.handle.events():
                        yield from self._on_event(member, event, queue, tracer)
                if deadline is not None and clock() > deadline + late:
                    break  # the replicas were told to stop at the deadline; what has not come back is lost
                self._expire_loads(queue)
                self._sum()
        finally:
            for member in self._busy():
                member.handle.close()  # best effort: its results can no longer be taken

    def _busy(self) -> list[Member]:
        return [m for m in self.members if m.state is BUSY]

    def _submit(self, member: Member, queue: deque, problems: Sequence[Problem], deadline_at: float | None) -> None:
        """Hand ``member`` the next problems: enough to fill its batch, but no more than its share of the
        queue, so every free replica gets some."""
        samples = self.config.samples
        own = max(1, member.info.n_seq_max // samples)
        alive = [m for m in self.members if m.state in (IDLE, BUSY)]
        take = max(1, min(own, math.ceil(len(queue) / len(alive))))
        chunk = [queue.popleft() for _ in range(min(take, len(queue)))]
        parallel = sum(max(1, m.info.n_seq_max // samples) for m in alive)
        waiting = len(queue) + sum(len(m.outstanding) for m in self._busy())
        member.state, member.outstanding = BUSY, set(chunk)
        member.handle.solve(Work(problems=[(i, problems[i]) for i in chunk], deadline_at=deadline_at,
                                 parallel=parallel, waiting_elsewhere=waiting))

    def _on_event(self, member: Member, event: Event, queue: deque, tracer) -> Iterator[ProblemResult]:
        if member.state in (LOST, CLOSED):
            return  # an event that was already on its way
        if isinstance(event, Solved):
            member.counters = event.counters
            self._sum()  # before the result: the runner reads the counters when it counts it
            member.outstanding.discard(event.result.index)
            if tracer is not None:
                for trace in event.traces:
                    tracer.write(trace)
            yield event.result
        elif isinstance(event, Finished):
            member.counters = event.counters
            member.state, member.outstanding = IDLE, set()  # what is left had no time: the caller's fallbacks
        elif isinstance(event, Progress):
            member.live = event.counters
        elif isinstance(event, Loaded):
            self._loaded(member, event)
        elif isinstance(event, LoadFailed):  # the first load showed the model loads: this replica's, not replaced
            self.lose(member, queue, why=f"its load failed: {event.error}", replace=False)
        elif isinstance(event, Failed):
            if isinstance(event.error, InputError):
                raise event.error  # the input itself: every replica would fail on it
            self.lose(member, queue, why=event.why)  # its engine failed (an EngineError, a bug): not the run
        elif isinstance(event, Died):
            self.lose(member, queue, why="died while loading" if member.state is LOADING else event.why)

    def _expire_loads(self, queue: deque) -> None:
        """Replicas past their load's time limit: lost, and not replaced (the cluster lacks the room)."""
        now = self.clock()
        for member in self.loading():
            if member.load_by is not None and now >= member.load_by:
                self.lose(member, queue, why=f"not loaded after {now - member.load_started:.0f} s", replace=False)

    def lose(self, member: Member, queue: deque, *, why: str, replace: bool = True) -> None:
        """A replica is gone: count it, put its unanswered problems first in line, start another in its slot
        (``MAX_LOSSES_PER_REPLICA`` times per slot at most, and not where ``replace`` is False)."""
        outstanding = member.outstanding
        member.state, member.outstanding = LOST, set()
        self.failures += 1
        self.losses[member.slot] += 1
        member.handle.close()
        queue.extendleft(sorted(outstanding, reverse=True))
        again = replace and self.losses[member.slot] <= MAX_LOSSES_PER_REPLICA
        print(f"aimo-gguf: replica {member.number} (pid {member.pid} on {member.node}) was lost ({why}): "
              f"{len(outstanding)} unfinished problems go to the others"
              + ("; starting a replacement" if again else "; no replacement"), file=sys.stderr, flush=True)
        if again:
            self.start_member(member.slot, self.load_by())

    def _sum(self) -> None:
        """The replicas' counters summed into ``stats`` (and the tools' into the run's ToolStats)."""
        latest = []
        for member in self.members:
            counters, live = member.counters, member.live
            if live is not None and (counters is None or live.busy_seconds > counters.busy_seconds):
                counters = live
            if counters is not None:
                latest.append(counters)
        self.stats = EngineStats.merged(c.engine for c in latest if c.engine is not None)
        if self.tool_stats is not None:  # the replicas' totals replace the driver's, which counts no calls of its own
            self.tool_stats.assign(ToolStats.merged(c.tools for c in latest if c.tools is not None))

    def final_counters(self) -> None:
        """Only the streamed counters (a Progress one may be newer than what was counted)."""
        for member in self.members:
            member.live = None
        self._sum()

    def replica_rows(self) -> list[dict]:
        """Per replica: node, process, problems decided, generated tokens, busy seconds, tokens/s, lost."""
        return [m.row() for m in self.members if m.info is not None or m.state is LOST]

    def progress_note(self) -> str:
        """``replicas=2/2 done=5+6``: replicas up of those asked for, problems each decided, losses."""
        alive = sum(1 for m in self.members if m.state in (IDLE, BUSY))
        done = "+".join(str((m.counters or ReplicaCounters()).problems) for m in self.members if m.info is not None)
        return f"replicas={alive}/{self.n_replicas} done={done}" + (f" lost={self.failures}" if self.failures else "")


def no_load_info(model_path: str, config: RunConfig, notes: tuple[str, ...]) -> LoadInfo:
    """What the summary records for a run whose replicas never loaded: the model asked for, nothing loaded."""
    batch = config.batch_size if isinstance(config.batch_size, int) else 0
    return LoadInfo(model_path=model_path, description="", n_layers=0, n_params=0, size_bytes=0,
                    n_gpu_layers_requested=0, n_gpu_layers=0, gpu_offload_supported=False, n_ctx_seq=0,
                    n_seq_max=batch, kv_unified=False, kv_type="", share_prompts=False, cache_prompts=False,
                    threads=config.threads or 0, notes=notes, load_seconds=0.0)
