"""``SandboxPool``: persistent Sandboxes keyed by sample, their calls on background threads.

A decode loop hands code to ``submit`` and polls the Future; it never waits
on a worker. Releasing a sample (``release``) cancels its waiting calls and
hands its worker to the pool's reaper thread, which kills it, waits for it and
removes its folder: none of that happens on the caller's thread.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .process import (
    DEFAULT_LIMITS,
    Sandbox,
    SandboxError,
    SandboxLimits,
    ToolResult,
    remove_stale_folders,
)


@dataclass
class _Lane:
    """The calls of one key: its Sandbox and the calls waiting for it, run in order."""

    sandbox: Sandbox | None = None
    waiting: deque = field(default_factory=deque)  # (code, Future) pairs
    scheduled: bool = False  # a step of this lane is queued or running on the executor
    released: bool = False


class SandboxPool:
    """Persistent Sandboxes keyed by sample, whose calls run on background threads.

    ``submit`` returns at once with a Future. Calls for one key run in order on
    that key's Sandbox (created at its first call); calls for different keys run
    at the same time, at most ``workers`` at once.
    """

    def __init__(self, limits: SandboxLimits = DEFAULT_LIMITS, *, workers: int | None = None,
                 preload: bool = True) -> None:
        """``workers``: calls running at once (default: the CPU count, at least 2)."""
        self.limits = limits
        self.preload = preload
        self.workers = workers or max(2, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox")
        # Its own thread, so a teardown never waits behind long calls.
        self._reaper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-reaper")
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()
        self._closed = False
        remove_stale_folders()

    def submit(self, key: Hashable, code: str) -> Future[ToolResult]:
        """Queue ``code`` for sample ``key``; the Future gives its ToolResult."""
        future: Future[ToolResult] = Future()
        with self._lock:
            if self._closed:
                raise SandboxError("This SandboxPool is closed; create a new one.")
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            lane.waiting.append((code, future))
            if not lane.scheduled:
                lane.scheduled = True
                self._executor.submit(self._step, lane)
        return future

    def release(self, key: Hashable) -> None:
        """The sample is done: cancel its waiting calls; its Sandbox (and a call still running in it)
        is killed and removed on the reaper thread. Returns at once."""
        with self._lock:
            lane = self._lanes.pop(key, None)
            if lane is None:
                return
            lane.released = True
            waiting = list(lane.waiting)
            lane.waiting.clear()
            sandbox = lane.sandbox
        for _, future in waiting:
            future.cancel()
        if sandbox is not None:
            self._retire(sandbox)

    def _retire(self, sandbox: Sandbox) -> None:
        try:
            self._reaper.submit(sandbox.close)
        except RuntimeError:  # the pool is shutting down: close it here
            sandbox.close()

    @property
    def keys(self) -> list[Hashable]:
        """Keys not yet released."""
        with self._lock:
            return list(self._lanes)

    def close(self) -> None:
        """Release every key, stop the threads and wait for every worker to be gone."""
        with self._lock:
            self._closed = True
            keys = list(self._lanes)
        for key in keys:
            self.release(key)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._reaper.shutdown(wait=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _step(self, lane: _Lane) -> None:
        """Run the lane's oldest waiting call, then queue the next one (fair among keys)."""
        with self._lock:
            item = lane.waiting.popleft() if lane.waiting and not lane.released else None
        if item is not None:
            code, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._sandbox_of(lane).run(code))
                except BaseException as error:  # noqa: BLE001 - the caller sees it through the Future
                    future.set_exception(error)
        with self._lock:
            again = bool(lane.waiting) and not lane.released
            lane.scheduled = again
            if again:
                try:
                    self._executor.submit(self._step, lane)
                except RuntimeError:  # shut down meanwhile
                    lane.scheduled = False
            released, sandbox = lane.released, lane.sandbox
        if released and sandbox is not None:
            self._retire(sandbox)

    def _sandbox_of(self, lane: _Lane) -> Sandbox:
        if lane.sandbox is None:
            sandbox = Sandbox(self.limits, preload=self.preload)
            with self._lock:
                lane.sandbox = sandbox
                released = lane.released
            if released:
                self._retire(sandbox)
                raise SandboxError("The sample was released before its code ran.")
        return lane.sandbox
