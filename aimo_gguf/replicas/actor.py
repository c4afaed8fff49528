"""One replica: a Ray actor that loads the model once and runs the usual Solver on what it is given.

The class is plain Python (``ray.remote`` is applied by the driver, with the
resources of the run), so nothing here imports Ray. ``solve`` is a generator
method: Ray streams each decided problem back as soon as it is decided, with
the sample traces of that problem and the replica's counters so far, and ends
with a ``done`` record. A replica that dies mid-call simply stops streaming:
what it had sent is kept by the driver, the rest goes to another replica.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..config import RunConfig
from ..engine.api import EngineStats
from ..errors import AimoError
from ..pipeline.problems import Problem
from ..solving.solver import ProblemResult, Solver
from ..styles import style_for
from ..styles.tir import ToolStats

RESULT = "result"
DONE = "done"


@dataclass
class ReplicaCounters:
    """A replica's engine and tool counters at one moment (plain data: it crosses processes)."""

    engine: dict = field(default_factory=dict)  # EngineStats as a dict, finish_reasons a plain dict
    tools: dict = field(default_factory=dict)  # ToolStats' counters
    busy_seconds: float = 0.0  # inside solve calls
    problems: int = 0  # problems decided


@dataclass
class Streamed:
    """One record of ``Replica.solve``'s stream."""

    kind: str  # RESULT or DONE
    counters: ReplicaCounters
    result: ProblemResult | None = None  # index = the driver's position of the problem
    traces: list[dict] = field(default_factory=list)  # the problem's samples, with --traces


class _Traces:
    """The trace sink of a replica's Solver: records kept until their problem is decided."""

    def __init__(self) -> None:
        self.by_problem: dict[str, list[dict]] = {}

    def write(self, record: dict) -> None:
        self.by_problem.setdefault(record["id"], []).append(record)


class Replica:
    """A model loaded once on this node's share of the resources, and the Solver over it."""

    def __init__(self, config: RunConfig, model_path: str, *, graded: bool, traces: bool, verbose: bool) -> None:
        self.config = config
        self.model_path = Path(model_path)
        self.graded, self.traces, self.verbose = graded, traces, verbose
        self.engine = None
        self.style = None  # the prompt family, worked out once at the load
        self.tool_stats = ToolStats() if config.tir else None
        self.busy = 0.0
        self.problems = 0

    def load(self) -> dict:
        """Load the engine; the load's failure comes back as data, not as a dead actor, so the driver
        can tell a bad model (one clear error) from a lost process (replaced)."""
        from ..fit.plan import load_engine

        try:
            self.engine = load_engine(self.config, self.model_path, verbose=self.verbose, graded=self.graded,
                                      traces=self.traces)
            self.style = style_for(self.engine, self.config)
        except AimoError as e:
            return {"error": type(e).__name__, "message": str(e), "node": _node(), "pid": os.getpid()}
        return {"info": self.engine.info, "prompt_style": self.style.name, "node": _node(), "pid": os.getpid()}

    def counters(self) -> ReplicaCounters:
        stats = {}
        if self.engine is not None:  # not asdict(): it would rebuild the Counter from (reason, n) pairs
            stats = {f.name: getattr(self.engine.stats, f.name) for f in fields(EngineStats)}
            stats["finish_reasons"] = dict(stats["finish_reasons"])
        tools = {}
        if self.tool_stats is not None:
            t = self.tool_stats
            tools = dict(calls=t.calls, ok=t.ok, errors=t.errors, timeouts=t.timeouts, seconds=t.seconds,
                         samples_with_tools=t.samples_with_tools)
        return ReplicaCounters(engine=stats, tools=tools, busy_seconds=self.busy, problems=self.problems)

    def solve(self, problems: list[tuple[int, Problem]], *, deadline_at: float | None, parallel: int,
              waiting_elsewhere: int) -> Iterator[Streamed]:
        """Solve ``problems`` (driver position, problem); ``deadline_at`` is a ``time.time()`` value (the
        run's deadline, on the driver's clock: nodes are assumed to keep NTP time)."""
        start = time.monotonic()
        deadline = None if deadline_at is None else start + (deadline_at - time.time())
        sink = _Traces() if self.traces else None
        solver = Solver(self.engine, self.config, traces=sink, deadline=deadline, tool_stats=self.tool_stats,
                        parallel=parallel, waiting_elsewhere=waiting_elsewhere, style=self.style)
        positions = [position for position, _ in problems]
        mark = start
        try:
            for result in solver.solve([problem for _, problem in problems]):
                now = time.monotonic()
                self.busy += now - mark
                mark = now
                self.problems += 1
                records = sink.by_problem.pop(result.id, []) if sink is not None else []
                result = replace(result, index=positions[result.index])
                yield Streamed(RESULT, self.counters(), result=result, traces=records)
        finally:
            self.busy += time.monotonic() - mark
        yield Streamed(DONE, self.counters())

    def pid(self) -> int:
        return os.getpid()


def _node() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        return "?"
