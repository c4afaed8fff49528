"""The AIMO3 adapter's engine in a child process that lives across ``predict`` calls.

``ServedEngine.solve`` sends one problem to the engine process and waits
within the call's share. When the process dies (a native crash) the call is
answered from what it has: a retry on a fresh engine when the share still
holds a reload and some time to solve, else nothing (the adapter's
fallback). A fresh engine starts loading at once, so the next call finds it
ready or nearly; nothing of this raises into the gateway. A SIGILL before the
engine's first decode restarts it with ``--no-repack``; ``MAX_LOAD_DEATHS``
deaths in a row while loading stop the restarts (every later call gets the
fallback at once). A child still busy ``OVERRUN_SECONDS`` past the share is
killed and replaced: the gateway gets its answer.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..engine.api import EngineStats, LoadInfo
from ..errors import EngineError
from ..pipeline.problems import Problem
from ..replicas.handle import (
    Died,
    Failed,
    Finished,
    Loaded,
    LoadFailed,
    ReplicaCounters,
    Solved,
    Work,
)
from ..solving.solver import Clock, ProblemResult
from ..styles.tir import ToolStats
from .child import Load
from .faults import Fault
from .handle import ProcessHandle, ProcessLauncher

WAIT_SECONDS = 0.1
OVERRUN_SECONDS = 60.0  # past its share, the most a call waits for the engine's last step before killing it
MAX_LOAD_DEATHS = 3  # engine processes in a row that die while loading before the adapter stops restarting
SOLVE_AFTER_RELOAD = 0.25  # a retry needs the reload's time and at least this part of the share left after it


class ServedEngine:
    """One engine process for a series of one-problem calls; ``start`` loads it (and raises a load error)."""

    def __init__(self, config: RunConfig, model_path: str | Path, *, verbose: bool = False,
                 token_budget: int | None = None, replicas: int = 1, clock: Clock = time.monotonic) -> None:
        Fault.check_env()  # a test hook found in a real environment is said, a bad one refused
        self.launcher = ProcessLauncher(Load(config=config, model_path=str(model_path), number=0, verbose=verbose,
                                             token_budget=token_budget, replicas=replicas))
        self.config, self.clock = config, clock
        self.crashes = 0
        self.info: LoadInfo | None = None
        self.prompt_style = ""
        self.handle: ProcessHandle | None = None
        self.tool_stats = ToolStats() if config.tir else None
        self._loaded = False
        self._children = 0
        self._load_deaths = 0
        self._repack = config.repack
        self._load_started = 0.0
        self._load_seconds = 0.0
        self._sent = 0.0  # when the current call's problem went to the engine
        self._ended: list[ReplicaCounters] = []
        self._counters = ReplicaCounters()

    def start(self) -> None:
        """Load the first engine process: a load error raises (the notebook's cell fails, as in-process)."""
        self._launch()
        while not self._loaded:
            if self.handle is None:
                raise EngineError(f"the engine process died while loading the model {MAX_LOAD_DEATHS} times")
            self._await_load(deadline=None)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    @property
    def stats(self) -> EngineStats:
        return EngineStats.merged(c.engine for c in (*self._ended, self._counters) if c.engine is not None)

    # --- one problem --------------------------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        """No engine process, and none coming: MAX_LOAD_DEATHS loads died in a row."""
        return self.handle is None and self._load_deaths >= MAX_LOAD_DEATHS

    def solve(self, problem: Problem, *, deadline: float) -> ProblemResult | None:
        """The problem's result by ``deadline`` (a ``clock`` value), or None: no engine, no time, or the
        engine died on it (twice, when the share allowed a retry)."""
        for attempt in range(2):
            if not self._ready(deadline):
                return None
            result, died = self._one(problem, deadline)
            if not died:
                return result
            left = deadline - self.clock()
            if attempt or left < self._load_seconds + SOLVE_AFTER_RELOAD * max(0.0, deadline - self._sent):
                return None
            _log(f"{problem.id}: retrying on the fresh engine ({left:.0f} s of the share left)")
        return None

    def _one(self, problem: Problem, deadline: float) -> tuple[ProblemResult | None, bool]:
        self._sent = self.clock()
        deadline_at = time.time() + (deadline - self._sent)
        self.handle.solve(Work([(0, problem)], deadline_at=deadline_at, parallel=0, waiting_elsewhere=0))
        result = None
        while True:
            for event in self.handle.events():
                if isinstance(event, Solved):
                    result = event.result
                    self._count(event.counters)
                elif isinstance(event, Finished):
                    self._count(event.counters)
                    return result, False
                elif isinstance(event, Failed):
                    raise event.error or EngineError(f"the engine process failed: {event.why}")
                elif isinstance(event, Died):
                    self._died(event, stage=f"while solving {problem.id}")
                    return None, True
            if self.clock() > deadline + OVERRUN_SECONDS:
                _log(f"{problem.id}: the engine is still busy {OVERRUN_SECONDS:.0f} s past the share: replacing it")
                self.handle.close()
                self._ended.append(self._counters)
                self._counters = ReplicaCounters()
                self._launch()
                return result, False
            self.launcher.wait([self.handle], timeout=WAIT_SECONDS)

    # --- the process --------------------------------------------------------------------------------------

    def _launch(self) -> None:
        """A new engine process, loading (not awaited)."""
        changes = {} if self._repack == self.config.repack else {"repack": self._repack}
        self.handle = self.launcher.start(number=self._children, **changes)
        self._children += 1
        self._loaded = False
        self._load_started = self.clock()
        self.handle.load()

    def _ready(self, deadline: float) -> bool:
        """A loaded engine, waiting for one that loads until ``deadline``."""
        while self.handle is not None and not self._loaded:
            if not self._await_load(deadline=deadline):
                return False
        return self.handle is not None

    def _await_load(self, *, deadline: float | None) -> bool:
        """Wait for the loading process's answer; False at ``deadline`` (it goes on loading)."""
        while True:
            for event in self.handle.events():
                if isinstance(event, Loaded):
                    self._loaded, self._load_deaths = True, 0
                    self._load_seconds = self.clock() - self._load_started
                    if self.info is None:
                        self.info, self.prompt_style = event.info, event.prompt_style
                    self._counters = ReplicaCounters()
                    return True
                if isinstance(event, LoadFailed):
                    if self.info is None:
                        raise event.error
                    _log(f"the engine failed to load again ({event.error}): no more restarts")
                    self.close()
                    return True
                if isinstance(event, Died):
                    self._load_deaths += 1
                    self._died(event, stage="while loading the model")
                    return True
            if deadline is not None and self.clock() >= deadline:
                return False
            self.launcher.wait([self.handle], timeout=WAIT_SECONDS)

    def _died(self, death: Died, *, stage: str) -> None:
        """Count a death and start the next engine, unless loads keep dying."""
        self.crashes += 1
        handle = self.handle
        handle.close()
        self._ended.append(self._counters)
        self._counters = ReplicaCounters()
        if handle.signal_name == "SIGILL" and not handle.decoding and self._repack:
            self._repack = False
            stage += "; restarting with --no-repack"
        if self._load_deaths >= MAX_LOAD_DEATHS:
            _log(f"{death.why} ({stage}): {MAX_LOAD_DEATHS} loads died in a row, no more restarts: every later "
                 f"problem gets the fallback")
            self.handle = None
            return
        _log(f"{death.why} ({stage}): a fresh engine is loading")
        self._launch()

    def _count(self, counters: ReplicaCounters) -> None:
        self._counters = counters
        if self.tool_stats is not None:
            tools = [c.tools for c in (*self._ended, counters) if c.tools is not None]
            self.tool_stats.assign(ToolStats.merged(tools))

    @property
    def loaded_info(self) -> LoadInfo | None:
        return None if self.info is None else replace(self.info, repack=self.info.repack and self._repack)


def _log(message: str) -> None:
    print(f"aimo-gguf: {message}", file=sys.stderr, flush=True)
