"""The driver of a Ray run: replicas started, problems handed out as replicas free up, results streamed back.

``RayReplicas`` is a results source for ``aimo_gguf.pipeline.runner``: the runner keeps
the one journal, submission, summary and trace file, and counts every result
exactly as it does for a single engine; this module only decides which
replica solves what. Each replica gets a few whole problems at a time (enough
to fill its batch), never a fixed share of the run, so a slow replica holds
back nobody. A replica whose process or node is lost stops its stream: its
problems without a result go back to the front of the queue, it is counted,
and a replacement is started (at most ``MAX_LOSSES_PER_REPLICA`` times for
each replica asked for, so a machine that keeps killing them does not loop).
A load is awaited only until ``LOAD_TIMEOUT`` or the run's deadline, whichever
comes first: the run goes on with the replicas that loaded.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .. import errors
from ..config import RunConfig
from ..engine.api import EngineStats, LoadInfo
from ..errors import EngineError, InputError, ModelError
from ..pipeline.problems import Problem
from ..solving.solver import Clock, ProblemResult
from ..styles.tir import ToolStats
from .actor import DONE, RESULT, Replica, ReplicaCounters
from .cluster import CONNECT_SECONDS, first_line, join_cluster

WAIT_SECONDS = 0.1  # one ray.wait: also how often stop signals and the deadline are looked at
STATS_SECONDS = 2.0  # how often busy replicas are asked for their counters (the progress bar's tokens/s)
LOAD_TIMEOUT = 900.0  # a replica not loaded by then is lost (a cluster short of what it asks for); none: an error
MAX_LOSSES_PER_REPLICA = 2  # replacements allowed for each replica asked for (a slot)
SHUTDOWN_SECONDS = 2.0  # kept back from a deadline when the run started its cluster: ray.shutdown takes ~1.3 s
LATE_SECONDS = 1.0  # after the replicas' deadline, the most the driver waits for their last (cut) results


def require_ray():
    """The ``ray`` module, or the one-line error naming the extra."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'aimo-gguf[ray]'") from None
    return ray


@dataclass
class _Member:
    """The driver's view of one replica (one actor: a replacement is a new member)."""

    number: int
    slot: int  # the replica asked for that this one is (a replacement takes its lost member's slot)
    actor: object
    load_started: float = 0.0  # a ``clock`` value
    load_by: float | None = None  # a ``clock`` value: not loaded by then, it is lost without replacement
    node: str = "?"
    pid: int = 0
    info: LoadInfo | None = None
    counters: ReplicaCounters | None = None  # from its stream: what the summary counts
    live: ReplicaCounters | None = None  # polled while it runs: only for the progress bar
    poll: object | None = None  # a counters() call in flight
    busy: bool = False
    lost: bool = False

    def row(self) -> dict:
        c = self.counters or ReplicaCounters()
        generated = c.engine.get("generated_tokens", 0)
        seconds = round(c.busy_seconds, 3)
        return {"replica": self.number, "node": self.node, "pid": self.pid, "problems": c.problems,
                "generated_tokens": generated, "busy_seconds": seconds,
                "tokens_per_second": round(generated / seconds, 2) if seconds > 0 else 0.0, "lost": self.lost}


@dataclass
class _Call:
    """One ``solve`` call in flight: its member and the positions it has not answered yet."""

    member: _Member
    outstanding: set[int]


class RayReplicas:
    """Replicas of one model on a Ray cluster, as a context manager: entering starts and loads them.

    ``config.ray``: "local" starts a local cluster (or uses the one this process
    already joined); anything else is an address to join. Replicas get
    ``config.gpus_per_replica`` GPUs each (default 1 where the cluster has GPUs)
    and ``config.threads`` threads (default: this machine's physical cores over
    the replicas on it). ``deadline`` (a ``clock`` value, the run's) bounds the
    loads: entering returns once one replica has loaded, or at the deadline
    with none (``info`` then describes no load, and the run writes fallbacks).
    """

    def __init__(self, config: RunConfig, model_path: str | Path, *, graded: bool = False, traces: bool = False,
                 verbose: bool = False, deadline: float | None = None, clock: Clock = time.monotonic) -> None:
        self.ray = require_ray()
        self.requested = config
        self.model_path = str(model_path)
        self.graded, self.traces, self.verbose = graded, traces, verbose
        self.deadline, self.clock = deadline, clock  # the run's (a ``clock`` value): the loads wait no longer
        self.members: list[_Member] = []
        self.failures = 0
        self.stats = EngineStats()
        self.info: LoadInfo | None = None
        self.prompt_style = ""  # the replicas' prompt family, from their loads
        self._started = False  # this run called ray.init (and so calls ray.shutdown)
        self._started_local = False  # ... and that started a local cluster, whose shutdown takes seconds
        self._notes: list[str] = []
        self._remote = None
        self._polled_at = 0.0
        self._losses: Counter = Counter()  # per slot: members lost
        self._loads: dict[object, _Member] = {}  # load calls in flight (replicas not loaded yet)
        self._tool_stats: ToolStats | None = None  # the run's, from ``results``: the replicas' tool counters

    # --- the cluster and the replicas -----------------------------------------------------------------

    def __enter__(self) -> RayReplicas:
        try:
            self._connect()
            self._plan()
            load_by = self._load_by()
            for slot in range(self.n_replicas):
                self._start_member(slot, load_by)
            self._await_first_load()
        except BaseException:
            self.close()
            raise
        loaded = [m.info for m in self.members if m.info is not None]
        if loaded:
            first = loaded[0]
            self.info = replace(first, notes=tuple(self._notes) + first.notes)
        else:  # the deadline came first: the run ends as one out of time, with every fallback written
            self._notes.append("--ray: no replica loaded within --time-limit: every problem gets the fallback")
            self.info = _no_load_info(self.model_path, self.config, tuple(self._notes))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every replica and, when this run started or joined the cluster, leave it."""
        ray = self.ray
        for member in self.members:
            self._kill(member)
        self._loads.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = self._started_local = False

    def _kill(self, member: _Member) -> None:
        try:
            self.ray.kill(member.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return  # the caller's cluster (a notebook, a test): used, and left running
        timeout = CONNECT_SECONDS
        if self.deadline is not None:
            timeout = max(0.1, min(timeout, self.deadline - self.clock()))
        join_cluster(self.ray, self.requested, timeout=timeout)
        self._started = True
        self._started_local = self.requested.ray == "local"

    def _plan(self) -> None:
        """How many replicas, with what each: checked against the cluster now, so nothing waits forever
        for resources that are not there."""
        ray, config = self.ray, self.requested
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        per = config.gpus_per_replica
        if per is None:
            per = 1.0 if gpus else 0.0
        if per > 0 and not gpus:
            raise InputError(f"--gpus-per-replica {per:g}: the Ray cluster has no GPU (CPU replicas: "
                             f"--gpus-per-replica 0 or leave it out)")
        replicas = config.replicas
        if replicas is None:
            if not per:
                raise InputError("--ray on a cluster without GPUs needs --replicas N (N CPU replicas)")
            replicas = max(1, int(gpus // per))
        if per * replicas > gpus + 1e-9:
            raise InputError(f"{replicas} replicas x {per:g} GPUs need {per * replicas:g} GPUs; the Ray cluster "
                             f"has {gpus:g}")
        from ..engine import default_threads

        threads = config.threads or max(1, default_threads() // replicas)  # as if all ran on this machine
        cpus_each = 1 if per else threads
        if cpus_each * replicas > cpus + 1e-9:
            raise InputError(f"{replicas} replicas x {cpus_each} threads need {cpus_each * replicas} CPUs; the Ray "
                             f"cluster has {cpus:g} (fewer --replicas or --threads)")
        self.n_replicas, self.gpus_each, self.cpus_each = replicas, per, cpus_each
        free = ray.available_resources()  # what other work holds now is not there for the replicas
        free_gpus, free_cpus = free.get("GPU", 0.0), free.get("CPU", 0.0)
        if per * replicas > free_gpus + 1e-9 or cpus_each * replicas > free_cpus + 1e-9:
            self._notes.append(f"--ray: the cluster has {free_cpus:g} CPUs and {free_gpus:g} GPUs free now (the rest "
                               f"is in use): replicas that do not fit wait for them, at most {LOAD_TIMEOUT:.0f} s "
                               f"or until the deadline; the run goes on with those that load")
        # A greedy answer must not depend on which replica solved it, nor on what its slots held before:
        # prompt reuse per slot is bitwise only when it is off (see --cache-prompts), so it is off unless asked.
        cache = config.cache_prompts
        if cache is None:
            cache = False
            self._notes.append("--ray: --cache-prompts is off unless asked for, so an answer does not depend on "
                               "which replica solved it")
        self.config = replace(config, threads=threads, cache_prompts=cache)
        where = "a local Ray cluster" if config.ray == "local" else f"the Ray cluster at {config.ray}"
        what = f"{per:g} GPU" if per else f"{threads} CPU thread{'s' if threads > 1 else ''}"
        self._notes.append(f"{replicas} replicas on {where}, {what} each")
        options = dict(num_cpus=cpus_each, num_gpus=per, max_concurrency=2, max_restarts=0)
        self._remote = self.ray.remote(**options)(Replica)

    def _cut(self, deadline: float | None) -> float | None:
        """The replicas' deadline: the run's, less the time a local cluster this run started takes to stop."""
        if deadline is None or not self._started_local:
            return deadline
        return deadline - SHUTDOWN_SECONDS

    def _load_by(self) -> float:
        """When a load starting now is given up: ``LOAD_TIMEOUT`` from now, or the deadline if sooner."""
        by = self.clock() + LOAD_TIMEOUT
        deadline = self._cut(self.deadline)
        return by if deadline is None else min(by, deadline)

    def _start_member(self, slot: int, load_by: float) -> _Member:
        """A new actor for ``slot``, its load started (in ``_loads`` until it answers)."""
        actor = self._remote.remote(self.config, self.model_path, graded=self.graded, traces=self.traces,
                                    verbose=self.verbose)
        member = _Member(number=len(self.members), slot=slot, actor=actor, load_started=self.clock(),
                         load_by=load_by)
        self.members.append(member)
        self._loads[actor.load.remote()] = member
        return member

    def _await_first_load(self) -> None:
        """Wait for one replica to load (the others go on loading and join the run as they finish), or for
        the loads' time limit: at ``LOAD_TIMEOUT`` with none loaded that is an error, at the deadline the run
        goes on without replicas, as one out of time."""
        ray, loads = self.ray, self._loads
        while loads and not self._alive():
            ready, _ = _unmasked(ray.wait, list(loads), num_returns=1, timeout=WAIT_SECONDS)
            for ref in ready:
                member = loads.pop(ref)
                if not self._loaded(member, ref):
                    raise EngineError(f"replica {member.number} died while loading the model (out of memory, "
                                      f"or killed): see the Ray log above")
            if self._alive() or not loads or self.clock() < min(m.load_by for m in loads.values()):
                continue
            if self.deadline is not None and self.clock() >= self._cut(self.deadline):
                self._drop_loads()
                return
            raise EngineError(f"{len(loads)} replicas did not load within {LOAD_TIMEOUT:.0f} s: the Ray "
                              f"cluster may lack the {self.cpus_each} CPUs and {self.gpus_each:g} GPUs each asks for")

    def _drop_loads(self) -> None:
        """End the replicas still loading: no more work will come for them."""
        for member in self._loads.values():
            self._kill(member)
        self._loads.clear()

    def _loaded(self, member: _Member, ref) -> bool:
        """A finished load: True when the replica is ready, False when it died; a load error raises."""
        ray = self.ray
        try:
            answer = _unmasked(ray.get, ref)
        except ray.exceptions.RayTaskError as e:  # load() failed outside aimo-gguf's errors (a bug, a crash)
            cause = getattr(e, "cause", None) or e
            raise ModelError(f"replica {member.number} failed while loading the model: {first_line(cause)}") from None
        except ray.exceptions.RayError:  # its process or node is gone (RayActorError, ObjectLostError, ...)
            return False
        member.node, member.pid = answer["node"], answer["pid"]
        if "error" in answer:
            kind = getattr(errors, answer["error"], errors.AimoError)
            raise kind(f"replica {member.number} ({member.node}): {answer['message']}")
        member.info = answer["info"]
        self.prompt_style = answer.get("prompt_style", self.prompt_style)
        return True

    # --- the run ------------------------------------------------------------------------------------------

    def results(self, problems: Sequence[Problem], *, deadline: float | None = None, clock: Clock = time.monotonic,
                on_step: Callable[[], None] | None = None, tracer=None, tool_stats=None,
                margin: float = 0.0) -> Iterator[ProblemResult]:
        """Solve ``problems`` on the replicas; yield each result (``index`` = position in ``problems``) as it
        arrives. ``deadline`` is a ``clock`` value: replicas cut at it (``SHUTDOWN_SECONDS`` earlier when
        this run started a local cluster, which it must also stop), and the driver stops waiting a little
        later (what is still out then gets no result: the caller writes fallbacks). Replicas still loading
        join as they finish; one not loaded by its ``load_by`` is lost without replacement."""
        ray, loads = self.ray, self._loads
        queue = deque(range(len(problems)))
        deadline = self._cut(deadline)
        late = min(LATE_SECONDS, margin / 2)
        deadline_at = None if deadline is None else time.time() + (deadline - clock())
        calls: dict[object, _Call] = {}
        self._tool_stats = tool_stats
        try:
            while True:
                out_of_time = deadline is not None and clock() >= deadline
                if not out_of_time:
                    for member in self._idle():
                        if not queue:
                            break
                        gen, call = self._submit(member, queue, problems, calls, deadline_at)
                        calls[gen] = call
                if not calls:
                    if loads and (out_of_time or not queue):
                        self._drop_loads()  # nothing is left for them to do (or no time to do it in)
                    if not loads:
                        if queue and not out_of_time and not self._alive():
                            raise EngineError(f"every replica was lost ({self.failures} in all), {len(queue)} "
                                              f"problems unsolved: the journal keeps what finished, rerun with "
                                              f"--resume")
                        break
                ready, _ = _unmasked(ray.wait, [*calls, *loads], num_returns=1, timeout=WAIT_SECONDS)
                if on_step is not None:
                    on_step()
                for obj in ready:  # before the deadline's check: a result that arrived is kept
                    if obj in loads:
                        self._join(loads.pop(obj), obj, queue)
                        continue
                    yield from self._receive(obj, calls, queue, tracer)
                if deadline is not None and clock() > deadline + late:
                    break  # the replicas were told to stop at the deadline; what has not come back is lost
                self._expire_loads(queue)
                self._poll()
        finally:
            for gen in calls:
                try:
                    ray.cancel(gen)
                except Exception:  # noqa: BLE001 - best effort: close() kills the actors anyway
                    pass

    def _join(self, member: _Member, ref, queue: deque) -> None:
        """A load that finished during the run: the replica takes work, or (dead, failed) is lost; a load
        error is this replica's (the first load already showed the model loads), so it is not replaced."""
        try:
            if self._loaded(member, ref):
                return
        except errors.AimoError as e:
            self._lose(member, set(), queue, why=f"its load failed: {e}", replace=False)
            return
        self._lose(member, set(), queue, why="died while loading")

    def _expire_loads(self, queue: deque) -> None:
        """Replicas past their load's time limit: lost, and not replaced (the cluster lacks the room)."""
        now = self.clock()
        for ref, member in list(self._loads.items()):
            if member.load_by is not None and now >= member.load_by:
                del self._loads[ref]
                self._lose(member, set(), queue, why=f"not loaded after {now - member.load_started:.0f} s",
                           replace=False)

    def _idle(self) -> list[_Member]:
        return [m for m in self.members if m.info is not None and not m.lost and not m.busy]

    def _alive(self) -> bool:
        return any(m.info is not None and not m.lost for m in self.members)

    def _submit(self, member: _Member, queue: deque, problems: Sequence[Problem], calls: dict,
                deadline_at: float | None) -> tuple[object, _Call]:
        """Hand ``member`` the next problems: enough to fill its batch, but no more than its share of the
        queue, so every free replica gets some."""
        samples = self.config.samples
        own = max(1, member.info.n_seq_max // samples)
        alive = [m for m in self.members if m.info is not None and not m.lost]
        take = max(1, min(own, math.ceil(len(queue) / len(alive))))
        chunk = [queue.popleft() for _ in range(min(take, len(queue)))]
        parallel = sum(max(1, m.info.n_seq_max // samples) for m in alive)
        waiting = len(queue) + sum(len(c.outstanding) for c in calls.values())
        gen = member.actor.solve.remote([(i, problems[i]) for i in chunk], deadline_at=deadline_at,
                                        parallel=parallel, waiting_elsewhere=waiting)
        member.busy = True
        return gen, _Call(member, set(chunk))

    def _receive(self, gen, calls: dict, queue: deque, tracer) -> Iterator[ProblemResult]:
        ray = self.ray
        call = calls[gen]
        member = call.member
        try:
            record = _unmasked(ray.get, next(gen))
        except StopIteration:
            record = None  # the stream ended without its done record
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, InputError):
                raise cause from None  # the input itself: every replica would fail on it
            del calls[gen]  # its engine failed (an EngineError, a crash): the replica is lost, not the run
            self._lose(member, call.outstanding, queue, why=first_line(cause or e))
            return
        except ray.exceptions.RayError as e:  # its process or node is gone (RayActorError, ObjectLostError, ...)
            del calls[gen]
            self._lose(member, call.outstanding, queue, why=first_line(e))
            return
        if record is None:
            del calls[gen]
            self._lose(member, call.outstanding, queue, why="its stream ended early")
            return
        member.counters = record.counters
        self._sum()
        if record.kind == RESULT:
            result = record.result
            call.outstanding.discard(result.index)
            if tracer is not None:
                for trace in record.traces:
                    tracer.write(trace)
            yield result
        elif record.kind == DONE:
            del calls[gen]
            member.busy = False  # what is still outstanding had no time to start: the caller's fallbacks

    def _lose(self, member: _Member, outstanding: set[int], queue: deque, *, why: str, replace: bool = True) -> None:
        """A replica is gone: count it, put its unanswered problems first in line, start another in its slot
        (``MAX_LOSSES_PER_REPLICA`` times per slot at most, and not where ``replace`` is False)."""
        member.lost, member.busy = True, False
        self.failures += 1
        self._losses[member.slot] += 1
        self._kill(member)
        queue.extendleft(sorted(outstanding, reverse=True))
        again = replace and self._losses[member.slot] <= MAX_LOSSES_PER_REPLICA
        print(f"aimo-gguf: replica {member.number} (pid {member.pid} on {member.node}) was lost ({why}): "
              f"{len(outstanding)} unfinished problems go to the others"
              + ("; starting a replacement" if again else "; no replacement"), file=sys.stderr, flush=True)
        if again:
            self._start_member(member.slot, self._load_by())

    def _poll(self) -> None:
        """Ask busy replicas for their counters now and then: the progress bar's tokens/s between results."""
        ray, now = self.ray, time.monotonic()
        for member in self.members:
            if member.poll is not None:
                ready, _ = _unmasked(ray.wait, [member.poll], timeout=0)
                if ready:
                    try:
                        member.live = _unmasked(ray.get, ready[0])
                    except Exception:  # noqa: BLE001 - only progress: a lost replica is seen by its stream
                        pass
                    member.poll = None
        if now - self._polled_at >= STATS_SECONDS:
            self._polled_at = now
            for member in self.members:
                if member.busy and member.poll is None:
                    member.poll = member.actor.counters.remote()
        self._sum()

    def _sum(self) -> None:
        """The replicas' counters summed into ``stats`` (and the tools' into the run's ToolStats)."""
        total = EngineStats()
        reasons: Counter = Counter()
        tools: Counter = Counter()
        for member in self.members:
            counters = member.counters
            if member.live is not None and (counters is None or member.live.busy_seconds > counters.busy_seconds):
                counters = member.live
            if counters is None:
                continue
            for f in fields(EngineStats):
                value = counters.engine.get(f.name)
                if f.name == "finish_reasons":
                    reasons.update(value or {})
                elif value is not None:
                    setattr(total, f.name, getattr(total, f.name) + value)
            tools.update(counters.tools)
        total.finish_reasons = reasons
        for f in fields(EngineStats):
            setattr(self.stats, f.name, getattr(total, f.name))
        t = self._tool_stats
        if t is not None:
            with t._lock:  # the replicas' totals replace the driver's, which counts no calls of its own
                t.calls, t.ok, t.errors, t.timeouts = tools["calls"], tools["ok"], tools["errors"], tools["timeouts"]
                t.seconds, t.samples_with_tools = tools["seconds"], tools["samples_with_tools"]

    def final_counters(self) -> None:
        """Only the streamed counters (a polled one may be newer than what was counted)."""
        for member in self.members:
            member.live = None
        self._sum()

    def replica_rows(self) -> list[dict]:
        """Per replica: node, process, problems decided, generated tokens, busy seconds, tokens/s, lost."""
        return [m.row() for m in self.members if m.info is not None or m.lost]

    def progress_note(self) -> str:
        """``replicas=2/2 done=5+6``: replicas up of those asked for, problems each decided, losses."""
        alive = sum(1 for m in self.members if m.info is not None and not m.lost)
        done = "+".join(str((m.counters or ReplicaCounters()).problems) for m in self.members if m.info is not None)
        return f"replicas={alive}/{self.n_replicas} done={done}" + (f" lost={self.failures}" if self.failures else "")


def _no_load_info(model_path: str, config: RunConfig, notes: tuple[str, ...]) -> LoadInfo:
    """What the summary records for a run whose replicas never loaded: the model asked for, nothing loaded."""
    batch = config.batch_size if isinstance(config.batch_size, int) else 0
    return LoadInfo(model_path=model_path, description="", n_layers=0, n_params=0, size_bytes=0,
                    n_gpu_layers_requested=0, n_gpu_layers=0, gpu_offload_supported=False, n_ctx_seq=0,
                    n_seq_max=batch, kv_unified=False, kv_type="", share_prompts=False, cache_prompts=False,
                    threads=config.threads or 0, notes=notes, load_seconds=0.0)


def _unmasked(call, *args, **kwargs):
    """``call(...)``, but a stop signal raised inside Ray's C++ (a ``Stopped`` or KeyboardInterrupt from the
    handler, wrapped by Cython in a SystemError) comes out as itself, for the runner to write the results."""
    try:
        return call(*args, **kwargs)
    except SystemError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise
