"""Replicas as Ray actors: the handle over one actor, the launcher that makes them, and a run's Ray session.

``RayReplicas`` joins (or starts) the cluster, plans the replicas against its
resources (``replicas.plan``) and hands the run a ``Dispatcher`` over
``RayHandle``s; leaving it ends the actors and, when the run started or joined
the cluster itself, leaves it. Ray's errors are turned into the handle
protocol's events here: a task that raised is ``Failed`` (or ``LoadFailed``),
a process or node that went away is ``Died``. The ``ray`` module is passed in
(``cluster.require_ray``), never imported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from ..errors import AimoError, ModelError
from ..solving.solver import Clock
from . import dispatch
from .actor import Replica
from .cluster import CONNECT_SECONDS, first_line, join_cluster, require_ray, unmasked
from .dispatch import Dispatcher
from .handle import Died, Event, Failed, LoadFailed, Progress, Solved, Work
from .plan import plan_replicas

STATS_SECONDS = 2.0  # how often a busy replica is asked for its counters (the progress bar's tokens/s)
SHUTDOWN_SECONDS = 2.0  # kept back from a deadline when the run started its cluster: ray.shutdown takes ~1.3 s


class RayHandle:
    """One ``actor.Replica`` on Ray behind the replica-handle protocol."""

    def __init__(self, ray, actor, *, number: int) -> None:
        self.ray, self.actor, self.number = ray, actor, number
        self.pid = 0  # its process, once loaded (the fault tests kill it by this id)
        self.loading = None  # the load call in flight
        self.stream = None  # the solve call in flight: a stream of Solved, then Finished
        self.poll = None  # a counters() call in flight
        self.polled_at = 0.0
        self.closed = False

    def load(self) -> None:
        self.loading = self.actor.load.remote()

    def solve(self, work: Work) -> None:
        self.stream = self.actor.solve.remote(work)
        self.polled_at = time.monotonic()

    def waiting_on(self) -> list:
        """The calls whose answers are events: what ``RayLauncher.wait`` waits for."""
        return [ref for ref in (self.loading, self.stream) if ref is not None]

    def events(self) -> list[Event]:
        if self.closed:
            return []
        found: list[Event] = []
        if self.loading is not None and self._ready(self.loading):
            ref, self.loading = self.loading, None
            found.append(self._load_answer(ref))
        if self.stream is not None and self._ready(self.stream):
            event = self._next_record()
            if not isinstance(event, Solved):
                self.stream = None  # Finished, Failed or Died: the call is over
            found.append(event)
        found.extend(self._progress())
        return found

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _ready(self, ref) -> bool:
        ready, _ = unmasked(self.ray.wait, [ref], num_returns=1, timeout=0)
        return bool(ready)

    def _load_answer(self, ref) -> Event:
        ray = self.ray
        try:
            answer = unmasked(ray.get, ref)  # Loaded, or LoadFailed for aimo-gguf's own errors
        except ray.exceptions.RayTaskError as e:  # load() failed outside aimo-gguf's errors (a bug, a crash)
            cause = getattr(e, "cause", None) or e
            return LoadFailed(ModelError(f"replica {self.number} failed while loading the model: "
                                         f"{first_line(cause)}"))
        except ray.exceptions.RayError:  # its process or node is gone (RayActorError, ObjectLostError, ...)
            return Died("out of memory, or killed: see the Ray log above")
        self.pid = getattr(answer, "pid", 0)
        return answer

    def _next_record(self) -> Event:
        ray = self.ray
        try:
            return unmasked(ray.get, next(self.stream))
        except StopIteration:
            return Died("its stream ended early")
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            return Failed(first_line(cause or e), error=cause if isinstance(cause, AimoError) else None)
        except ray.exceptions.RayError as e:  # its process or node is gone (RayActorError, ObjectLostError, ...)
            return Died(first_line(e))

    def _progress(self) -> list[Event]:
        """The counters now and then while it solves (``Progress``); a lost replica is seen by its stream."""
        if self.poll is not None and self._ready(self.poll):
            ref, self.poll = self.poll, None
            try:
                return [Progress(unmasked(self.ray.get, ref))]
            except Exception:  # noqa: BLE001 - only progress
                return []
        now = time.monotonic()
        if self.stream is not None and self.poll is None and now - self.polled_at >= STATS_SECONDS:
            self.polled_at = now
            self.poll = self.actor.counters.remote()
        return []


class RayLauncher:
    """Replica actors of one model with the plan's resources; ``wait`` is one ``ray.wait`` over them all."""

    def __init__(self, ray, remote, *, config: RunConfig, model_path: str, graded: bool, traces: bool,
                 verbose: bool) -> None:
        self.ray, self.remote = ray, remote
        self.config, self.model_path = config, model_path
        self.graded, self.traces, self.verbose = graded, traces, verbose

    def start(self, *, number: int) -> RayHandle:
        actor = self.remote.remote(self.config, self.model_path, number=number, graded=self.graded,
                                   traces=self.traces, verbose=self.verbose)
        return RayHandle(self.ray, actor, number=number)

    def wait(self, handles: Sequence[RayHandle], *, timeout: float) -> None:
        refs = [ref for handle in handles for ref in handle.waiting_on()]
        if refs:
            unmasked(self.ray.wait, refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)


class RayReplicas:
    """Replicas of one model on a Ray cluster, as a context manager: entering starts and loads them and gives
    the run its ``Dispatcher``.

    ``config.ray``: "local" starts a local cluster (or uses the one this process
    already joined); anything else is an address to join. Replicas get
    ``config.gpus_per_replica`` GPUs each (default 1 where the cluster has GPUs)
    and ``config.threads`` threads (default: this machine's physical cores over
    the replicas on it). ``deadline`` (a ``clock`` value, the run's) bounds the
    loads: entering returns once one replica has loaded, or at the deadline
    with none (the dispatcher's ``info`` then describes no load, and the run
    writes fallbacks).
    """

    def __init__(self, config: RunConfig, model_path: str | Path, *, graded: bool = False, traces: bool = False,
                 verbose: bool = False, deadline: float | None = None, clock: Clock = time.monotonic) -> None:
        self.ray = require_ray()
        self.config = config
        self.model_path = str(model_path)
        self.graded, self.traces, self.verbose = graded, traces, verbose
        self.deadline, self.clock = deadline, clock
        self.dispatcher: Dispatcher | None = None
        self.started = False  # this run called ray.init (and so calls ray.shutdown)
        self.started_local = False  # ... and that started a local cluster, whose shutdown takes seconds

    def __enter__(self) -> Dispatcher:
        try:
            self._connect()
            self.dispatcher = self._dispatcher()
            self.dispatcher.start()
        except BaseException:
            self.close()
            raise
        return self.dispatcher

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every replica and, when this run started or joined the cluster, leave it."""
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = self.started_local = False

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return  # the caller's cluster (a notebook, a test): used, and left running
        timeout = CONNECT_SECONDS
        if self.deadline is not None:
            timeout = max(0.1, min(timeout, self.deadline - self.clock()))
        join_cluster(self.ray, self.config, timeout=timeout)
        self.started = True
        self.started_local = self.config.ray == "local"

    def _dispatcher(self) -> Dispatcher:
        """The plan, checked against the cluster now (so nothing waits forever for resources that are not
        there), and the dispatcher over actors with its resources."""
        from ..engine import default_threads

        ray = self.ray
        total, free = ray.cluster_resources(), ray.available_resources()  # what other work holds is not free
        plan = plan_replicas(self.config, gpus=total.get("GPU", 0.0), cpus=total.get("CPU", 0.0),
                             free_gpus=free.get("GPU", 0.0), free_cpus=free.get("CPU", 0.0),
                             threads_here=default_threads(), load_timeout=dispatch.LOAD_TIMEOUT)
        config = replace(self.config, threads=plan.threads, cache_prompts=plan.cache_prompts)
        remote = ray.remote(num_cpus=plan.cpus_each, num_gpus=plan.gpus_each, max_concurrency=2,
                            max_restarts=0)(Replica)
        launcher = RayLauncher(ray, remote, config=config, model_path=self.model_path, graded=self.graded,
                               traces=self.traces, verbose=self.verbose)
        return Dispatcher(launcher, config, replicas=plan.replicas, model_path=self.model_path,
                          deadline=self.deadline, clock=self.clock,
                          keep_back=SHUTDOWN_SECONDS if self.started_local else 0.0, notes=plan.notes,
                          short_of=f": the Ray cluster may lack the {plan.cpus_each} CPUs and {plan.gpus_each:g} "
                                   f"GPUs each asks for")
