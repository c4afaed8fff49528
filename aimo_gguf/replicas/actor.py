"""One replica: a Ray actor that loads the model once and runs the usual Solver on what it is given.

The class is plain Python (``ray.remote`` is applied by ``replicas.on_ray``,
with the resources of the run), so nothing here imports Ray. It speaks the
records of ``replicas.handle``: ``load`` answers ``Loaded`` or ``LoadFailed``,
and ``solve`` is a generator method: Ray streams each decided problem back as
a ``Solved`` as soon as it is decided, with the sample traces of that problem
and the replica's counters so far, and ends with ``Finished``. A replica that
dies mid-call simply stops streaming: what it had sent is kept by the driver,
the rest goes to another replica.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..errors import AimoError
from ..solving.solver import Solver
from ..styles import style_for
from ..styles.tir import ToolStats
from .cluster import node_address
from .handle import (
    Finished,
    Loaded,
    LoadFailed,
    ProblemTraces,
    ReplicaCounters,
    Solved,
    Work,
)


class Replica:
    """A model loaded once on this node's share of the resources, and the Solver over it."""

    def __init__(self, config: RunConfig, model_path: str, *, number: int, graded: bool, traces: bool,
                 verbose: bool) -> None:
        self.config = config
        self.model_path = Path(model_path)
        self.number = number
        self.graded, self.traces, self.verbose = graded, traces, verbose
        self.engine = None
        self.style = None  # the prompt family, worked out once at the load
        self.tool_stats = ToolStats() if config.tir else None
        self.busy = 0.0
        self.problems = 0

    def load(self) -> Loaded | LoadFailed:
        """Load the engine; the load's failure comes back as data, not as a dead actor, so the driver
        can tell a bad model (one clear error) from a lost process (replaced)."""
        from ..fit.plan import load_engine

        try:
            self.engine = load_engine(self.config, self.model_path, verbose=self.verbose, graded=self.graded,
                                      traces=self.traces)
            self.style = style_for(self.engine, self.config)
        except BaseException as e:
            if self.engine is not None:  # the family failed on a loaded model: free its memory now, not at exit
                self.engine.close()
                self.engine = None
            if not isinstance(e, AimoError):
                raise
            return LoadFailed(type(e)(f"replica {self.number} ({node_address()}): {e}"))
        return Loaded(self.engine.info, self.style.name, node=node_address(), pid=os.getpid())

    def counters(self) -> ReplicaCounters:
        engine = self.engine.stats.snapshot() if self.engine is not None else None
        tools = self.tool_stats.snapshot() if self.tool_stats is not None else None
        return ReplicaCounters(engine=engine, tools=tools, busy_seconds=self.busy, problems=self.problems)

    def solve(self, work: Work) -> Iterator[Solved | Finished]:
        """Solve ``work.problems``; its deadline is on the driver's clock, turned into this node's."""
        start = time.monotonic()
        deadline = None if work.deadline_at is None else start + (work.deadline_at - time.time())
        sink = ProblemTraces() if self.traces else None
        solver = Solver(self.engine, self.config, traces=sink, deadline=deadline, tool_stats=self.tool_stats,
                        parallel=work.parallel, waiting_elsewhere=work.waiting_elsewhere, style=self.style)
        positions = [position for position, _ in work.problems]
        mark = start
        try:
            for result in solver.solve([problem for _, problem in work.problems]):
                now = time.monotonic()
                self.busy += now - mark
                mark = now
                self.problems += 1
                records = sink.by_problem.pop(result.id, []) if sink is not None else []
                result = replace(result, index=positions[result.index])
                yield Solved(result, self.counters(), traces=records)
        finally:
            self.busy += time.monotonic() - mark
        yield Finished(self.counters())
