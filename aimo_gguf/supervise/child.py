"""The engine process: ``python -m aimo_gguf.supervise.child FD``, driven by its parent over a connection.

The parent (``supervise.handle.ProcessHandle``) sends three commands, as
pickled tuples: ``("load", Load)``, ``("solve", Work)`` and ``("close",)``.
The child answers with the replica-handle protocol's records
(``replicas.handle``: ``Loaded``, ``LoadFailed``, ``Solved``, ``Finished``,
``Progress``, ``Failed``) and three of its own, which let the parent tell
what a death costs: ``("started", position)`` when the Solver takes a problem
(it is in flight from then on), ``("decoding",)`` after its first engine step
(a SIGILL before it is the CPU's, not a problem's), and ``("bye",)`` before an
orderly exit. Nothing is sent per token: a problem, its result, and the
counters every ``PROGRESS_SECONDS``.

The child ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C reaches the whole
process group; the parent decides when the engine ends, after writing what
finished), and the kernel kills it when its parent ends (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

from ..config import RunConfig
from ..errors import AimoError
from ..fit.plan import LoadPlan
from ..pipeline.problems import Problem
from ..pipeline.summary import peak_rss_mb
from ..replicas.handle import (
    Failed,
    Finished,
    Loaded,
    LoadFailed,
    ProblemTraces,
    Progress,
    ReplicaCounters,
    Solved,
    Work,
)
from .faults import Fault

PROGRESS_SECONDS = 2.0  # how often a busy child sends its counters (the progress bar's tokens/s)
LOADER_ENV = "AIMO_GGUF_CHILD_LOADER"  # tests only: "module:function" replacing fit.plan.load_engine


@dataclass(frozen=True)
class Load:
    """What the ``load`` command carries: the run's settings and where the engine's model is."""

    config: RunConfig
    model_path: str
    number: int  # which child of the run this is (0 first, then each restart): the fault hook's "once"
    graded: bool = False
    traces: bool = False
    verbose: bool = False
    token_budget: int | None = None  # most tokens per engine step (the AIMO3 adapter's), None: the engine's
    replicas: int = 1  # the AIMO3 adapter's engines, one per GPU, as one pool in this process
    plan: LoadPlan | None = None  # the parent's load plan (header and GPUs read once); None: the child plans


class _Announced(Sequence):
    """The problems of one solve call; the Solver taking one (iterating) tells the parent first."""

    def __init__(self, problems: list[Problem], on_take: Callable[[int], None]) -> None:
        self.problems, self.on_take = problems, on_take

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, i):
        return self.problems[i]

    def __iter__(self) -> Iterator[Problem]:
        for i, problem in enumerate(self.problems):
            self.on_take(i)
            yield problem


class Child:
    """One engine and the Solver over it, answering its parent's commands until ``close``."""

    def __init__(self, conn: Connection, fault: Fault | None) -> None:
        self.conn, self.fault = conn, fault
        self.engine = None
        self.load: Load | None = None
        self.style = None  # the prompt family, worked out once at the load
        self.tool_stats = None
        self.busy = 0.0
        self.problems = 0
        self.decoding = False

    def serve(self) -> None:
        while True:
            try:
                command = self.conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if command[0] == "load":
                self._load(command[1])
            elif command[0] == "solve":
                self._solve(command[1])
            else:
                self.conn.send(("bye",))
                return

    def counters(self) -> ReplicaCounters:
        engine = self.engine.stats.snapshot() if self.engine is not None else None
        tools = self.tool_stats.snapshot() if self.tool_stats is not None else None
        return ReplicaCounters(engine=engine, tools=tools, busy_seconds=self.busy, problems=self.problems,
                               peak_rss_mb=peak_rss_mb())

    def _load(self, load: Load) -> None:
        from ..styles import style_for
        from ..styles.tir import ToolStats

        self.load = load
        if self.fault is not None:
            self.fault.number = load.number
        try:
            if load.replicas > 1:
                from ..fit.plan import load_engine_pool

                self.engine = load_engine_pool(load.config, load.replicas, verbose=load.verbose,
                                               token_budget=load.token_budget)
            else:
                self.engine = _loader()(load.config, Path(load.model_path), verbose=load.verbose,
                                        graded=load.graded, traces=load.traces, token_budget=load.token_budget,
                                        plan=load.plan)
            self.style = style_for(self.engine, load.config)  # once, for every problem it is sent
        except AimoError as e:
            if self.engine is not None:
                self.engine.close()
                self.engine = None
            self.conn.send(LoadFailed(e))
            return
        if self.fault is not None:
            self.fault.at("load")
        self.tool_stats = ToolStats() if load.config.tir else None
        self.conn.send(Loaded(self.engine.info, self.style.name, node=os.uname().nodename, pid=os.getpid()))

    def _solve(self, work: Work) -> None:
        from ..solving.solver import Solver

        start = time.monotonic()
        deadline = None if work.deadline_at is None else start + (work.deadline_at - time.time())
        sink = ProblemTraces() if self.load.traces else None
        positions = [position for position, _ in work.problems]
        problems = [problem for _, problem in work.problems]
        if self.fault is not None:
            self.fault.arm(problems)
        last_progress = start

        def on_step() -> None:
            nonlocal last_progress
            if self.fault is not None:  # first: a fault at the first step is one inside the first decode
                self.fault.at("decode")
            if not self.decoding:
                self.decoding = True
                self.conn.send(("decoding",))
            now = time.monotonic()
            if now - last_progress >= PROGRESS_SECONDS:
                last_progress = now
                self.conn.send(Progress(self.counters()))

        def on_take(i: int) -> None:
            if self.fault is not None:
                self.fault.take(i)
            self.conn.send(("started", positions[i]))

        solver = Solver(self.engine, self.load.config, traces=sink, deadline=deadline, tool_stats=self.tool_stats,
                        on_step=on_step, parallel=work.parallel, waiting_elsewhere=work.waiting_elsewhere,
                        style=self.style)
        mark = start
        try:
            for result in solver.solve(_Announced(problems, on_take)):
                now = time.monotonic()
                self.busy += now - mark
                mark = now
                self.problems += 1
                records = sink.by_problem.pop(result.id, []) if sink is not None else []
                self.conn.send(Solved(replace(result, index=positions[result.index]), self.counters(), records))
        except AimoError as e:
            self.conn.send(Failed(f"{type(e).__name__}: {e}", e))
            return
        except Exception as e:  # noqa: BLE001 - a bug: the parent says so in one line, the traceback is here
            traceback.print_exc(file=sys.stderr)
            self.conn.send(Failed(f"{type(e).__name__}: {e}"))
            return
        finally:
            self.busy += time.monotonic() - mark
        self.conn.send(Finished(self.counters()))


def _loader():
    """``fit.plan.load_engine``, or the tests' stand-in named by LOADER_ENV."""
    name = os.environ.get(LOADER_ENV)
    if not name:
        from ..fit.plan import load_engine

        return load_engine
    import importlib

    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _die_with_parent() -> None:
    """SIGKILL from the kernel when the parent's launching thread ends (a parent killed by SIGKILL too)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(ctypes.c_int(1), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
                   ctypes.c_ulong(0))  # PR_SET_PDEATHSIG


def main(argv: list[str]) -> None:
    fd, parent = int(argv[1]), int(argv[2])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:  # the parent ended before the line above: nobody is left to serve
        os._exit(1)
    Child(Connection(fd), Fault.from_env()).serve()


if __name__ == "__main__":
    main(sys.argv)
