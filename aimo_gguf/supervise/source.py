"""``run``'s engine in a supervised child process: a native crash costs the problems in flight, never the run.

``SupervisedSource`` is a results source for ``pipeline.runner`` (as
``LocalSource`` and ``RayReplicas`` are): the runner keeps the journal, the
outputs, the signals, the clock and the progress bar in this process, and the
engine, the Solver and the tool sandboxes live in one engine process
(``supervise.child``, driven through ``ProcessHandle``). The child gets the
problems still to solve in one ``solve`` call, tells which it has taken, and
sends each result as it is decided.

The restart policy. When the child dies without its goodbye (a signal: a
``GGML_ASSERT`` abort, a segfault, an illegal instruction, the OOM killer;
or a non-zero exit), one line says how (the signal and llama.cpp's last
error line), every finished problem is already kept, and a new child loads
the model again:

- the problems that were in flight get one more try, each alone (one at a
  time, before the others), so a problem that kills the engine again is
  found; a problem in flight at ``STRIKES`` crashes gets the fallback
  (``problems_lost_to_crashes``) and is not journaled, so ``--resume`` tries
  it again;
- a SIGILL before the child's first engine step is the CPU's, not a
  problem's: the new child loads with ``--no-repack`` (the probe's safe
  setting), and no problem is blamed;
- at most ``MAX_RESTARTS`` restarts in a run; one more crash ends the run as
  any engine error does (what finished written, the fallback for the rest,
  exit 1, ``--resume`` goes on);
- the reload counts against ``--time-limit`` like the first load did: the
  restarted child gets the time left, and no restart is tried when less is
  left than the last load took (the problems left get the fallback).
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..engine.api import EngineStats, LoadInfo
from ..errors import EngineError
from ..fit.plan import LoadPlan
from ..pipeline.problems import Problem
from ..replicas.handle import (
    Died,
    Failed,
    Finished,
    Loaded,
    LoadFailed,
    Progress,
    ReplicaCounters,
    Solved,
    Work,
)
from ..solving.solver import Clock, ProblemResult
from ..styles.tir import ToolStats
from .child import Load
from .handle import ProcessHandle, ProcessLauncher

MAX_RESTARTS = 3  # engine restarts in one run; the next crash ends it
STRIKES = 2  # a problem in flight at this many crashes gets the fallback
WAIT_SECONDS = 0.1  # one wait for the child's records: also how often signals and the deadline are looked at
LATE_SECONDS = 1.0  # past the deadline, the most the child is waited for (it cuts its own problems there)


class SupervisedSource:
    """The engine in a child process, as a context manager: entering starts it and waits for its load."""

    failures = 0  # Ray replicas lost: none here (crashes are counted apart)

    def __init__(self, config: RunConfig, model_path: str | Path, *, graded: bool = False, traces: bool = False,
                 verbose: bool = False, deadline: float | None = None, clock: Clock = time.monotonic,
                 token_budget: int | None = None, plan: LoadPlan | None = None) -> None:
        self.config = config
        self.launcher = ProcessLauncher(Load(config=config, model_path=str(model_path), number=0, graded=graded,
                                             traces=traces, verbose=verbose, token_budget=token_budget, plan=plan))
        self.deadline, self.clock = deadline, clock
        self.crashes = 0  # engine processes that died
        self.lost = 0  # problems given the fallback for crashing it STRIKES times
        self.notes: list[str] = []  # what the crashes changed, for the summary's notes
        self.info: LoadInfo | None = None
        self.failure: EngineError | None = None  # no child could load: results() raises it
        self.prompt_style = ""
        self.handle: ProcessHandle | None = None
        self._children = 0
        self._repack = config.repack
        self._load_seconds = 0.0
        self._ended: list[ReplicaCounters] = []  # the last counters of every child that ended
        self._counters = ReplicaCounters()  # the current child's, from its Solved and Finished records
        self._live: ReplicaCounters | None = None  # newer, from its Progress records: the progress bar only
        self._tool_stats: ToolStats | None = None

    def __enter__(self) -> SupervisedSource:
        try:
            self._start()
        except EngineError as e:  # crashes while loading used up the restarts: the run still writes its files
            self.failure = e
            self.info = _no_load_info(self.launcher.spec, notes=tuple(self.notes))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    # --- the child ----------------------------------------------------------------------------------------

    def _start(self) -> None:
        """A child loaded (restarted after deaths while loading, within the policy); a load error raises."""
        while True:
            changes = {} if self._repack == self.config.repack else {"repack": self._repack}
            self.handle = self.launcher.start(number=self._children, **changes)
            self._children += 1
            began = self.clock()
            self.handle.load()
            event = self._await_load()
            if isinstance(event, Loaded):
                self._load_seconds = self.clock() - began
                if self.info is None:
                    self.info, self.prompt_style = event.info, event.prompt_style
                self._counters = ReplicaCounters()
                return
            if isinstance(event, LoadFailed):
                raise event.error
            self._crashed(event, blamed=set(), stage="while loading the model")

    def _await_load(self):
        while True:
            for event in self.handle.events():
                if isinstance(event, (Loaded, LoadFailed, Died)):
                    return event
            self.launcher.wait([self.handle], timeout=WAIT_SECONDS)

    def _crashed(self, death: Died, *, blamed: set[int], stage: str) -> None:
        """Count a death, say it in one line, and decide the next child's settings; raise past the policy."""
        self.crashes += 1
        self._ended.append(self._counters)
        self._counters, self._live = ReplicaCounters(), None
        handle = self.handle
        handle.close()
        cpu = handle.signal_name == "SIGILL" and not handle.decoding and self._repack
        if cpu:
            self._repack = False
            note = "the engine process died of SIGILL before its first decode: restarted with --no-repack"
            self.notes.append(note)
        restarts = self.crashes  # each crash is followed by one restart
        what = f"aimo-gguf: {death.why} ({stage}"
        what += f"; {len(blamed)} problems in flight)" if blamed else ")"
        if restarts > MAX_RESTARTS:
            print(f"{what}: no restart left ({MAX_RESTARTS} in a run)", file=sys.stderr, flush=True)
            raise EngineError(f"the engine process crashed {self.crashes} times ({death.why}): the journal keeps "
                              f"what finished, rerun with --resume")
        print(f"{what}: restarting the engine" + (" with --no-repack" if cpu else "")
              + f" ({restarts} of {MAX_RESTARTS} restarts)", file=sys.stderr, flush=True)

    def _time_for_reload(self) -> bool:
        return self.deadline is None or self.deadline - self.clock() > self._load_seconds

    # --- the run ------------------------------------------------------------------------------------------

    def results(self, problems: Sequence[Problem], *, deadline: float | None = None, clock: Clock = time.monotonic,
                on_step: Callable[[], None] | None = None, tracer=None, tool_stats: ToolStats | None = None,
                margin: float = 0.0) -> Iterator[ProblemResult]:
        """Solve ``problems`` in the child; yield each result (``index`` = position in ``problems``) as it is
        decided. A problem with no result (out of time, lost to crashes) is the caller's fallback."""
        if self.failure is not None:
            raise self.failure
        self._tool_stats = tool_stats
        jobs: deque[tuple[list[int], bool]] = deque([(list(range(len(problems))), False)])  # (positions, alone)
        strikes: Counter = Counter()
        late = min(LATE_SECONDS, margin / 2) if margin else LATE_SECONDS
        while jobs:
            if deadline is not None and clock() >= deadline:
                return
            positions, alone = jobs.popleft()
            pending = dict.fromkeys(positions)
            deadline_at = None if deadline is None else time.time() + (deadline - clock())
            waiting = sum(len(p) for p, _ in jobs)
            self.handle.solve(Work([(i, problems[i]) for i in positions], deadline_at=deadline_at,
                                   parallel=1 if alone else 0, waiting_elsewhere=waiting))
            death, finished = None, False
            while not finished and death is None:  # to its Finished: a later call must not take it for its own
                self.launcher.wait([self.handle], timeout=WAIT_SECONDS)
                for event in self.handle.events():
                    if isinstance(event, Solved):
                        pending.pop(event.result.index, None)
                        self._count(event.counters)
                        for trace in event.traces if tracer is not None else ():
                            tracer.write(trace)
                        yield event.result
                    elif isinstance(event, Progress):
                        self._live = event.counters
                    elif isinstance(event, Finished):
                        self._count(event.counters)
                        finished = True  # what is left had no time to start: the caller's fallbacks
                    elif isinstance(event, Failed):
                        raise event.error or EngineError(f"the engine process failed: {event.why}")
                    elif isinstance(event, Died):
                        death = event
                if on_step is not None:
                    on_step()
                if death is None and pending and deadline is not None and clock() > deadline + late:
                    return  # the child was told to stop at the deadline; what has not come back is lost
            if death is not None:
                self._requeue(death, pending, jobs, strikes)
                if not self._time_for_reload():
                    print("aimo-gguf: no time left to reload the engine: the problems left get the fallback",
                          file=sys.stderr, flush=True)
                    return
                self._start()

    def _requeue(self, death: Died, pending: dict, jobs: deque, strikes: Counter) -> None:
        """After a death: the problems in flight each alone at the front (or lost at their last strike), then
        the call's problems not taken yet, then the rest of the queue."""
        in_flight = [i for i in pending if i in self.handle.in_flight]
        untaken = [i for i in pending if i not in self.handle.in_flight]
        cpu = self.handle.signal_name == "SIGILL" and not self.handle.decoding and self._repack
        self._crashed(death, blamed=set() if cpu else set(in_flight), stage="while solving")
        retry = []
        for i in in_flight:
            strikes[i] += not cpu
            if strikes[i] >= STRIKES:
                self.lost += 1
                print(f"aimo-gguf: problem at row {i + 1} was in flight at {STRIKES} engine crashes: it gets the "
                      f"fallback", file=sys.stderr, flush=True)
            else:
                retry.append(i)
        if untaken:
            jobs.appendleft((untaken, False))
        for i in reversed(retry):
            jobs.appendleft(([i], True))

    # --- counters -----------------------------------------------------------------------------------------

    def _count(self, counters: ReplicaCounters) -> None:
        self._counters, self._live = counters, None
        if self._tool_stats is not None:
            self._tool_stats.assign(ToolStats.merged(c.tools for c in self._all() if c.tools is not None))

    def _all(self, live: bool = False) -> list[ReplicaCounters]:
        current = self._live if live and self._live is not None else self._counters
        return [*self._ended, current]

    @property
    def peak_rss_mb(self) -> float:
        """The largest peak resident memory of the engine processes (where the model is), MiB."""
        return max(c.peak_rss_mb for c in self._all(live=True))

    @property
    def stats(self) -> EngineStats:
        """Every child's engine counters, summed (the current one's as of its last record)."""
        return EngineStats.merged(c.engine for c in self._all(live=True) if c.engine is not None)

    def final_counters(self) -> None:
        self._live = None

    def replica_rows(self) -> None:
        return None

    def progress_note(self) -> str:
        return f"engine crashes={self.crashes}" if self.crashes else ""

    @property
    def loaded_info(self) -> LoadInfo | None:
        """The load's info as the last child ran (``repack`` off after a SIGILL restart)."""
        if self.info is None:
            return None
        notes = tuple(dict.fromkeys((*self.info.notes, *self.notes)))  # a load that never came holds them already
        return replace(self.info, repack=self.info.repack and self._repack, notes=notes)


def _no_load_info(load: Load, *, notes: tuple[str, ...]) -> LoadInfo:
    """What the summary records when no engine process loaded: the model asked for, nothing loaded."""
    config = load.config
    batch = config.batch_size if isinstance(config.batch_size, int) else 0
    return LoadInfo(model_path=load.model_path, description="", n_layers=0, n_params=0, size_bytes=0,
                    n_gpu_layers_requested=0, n_gpu_layers=0, gpu_offload_supported=False, n_ctx_seq=0,
                    n_seq_max=batch, kv_unified=False, kv_type="", share_prompts=False, cache_prompts=False,
                    threads=config.threads or 0, notes=notes, load_seconds=0.0)
