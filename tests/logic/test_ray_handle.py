"""Ray's answers turned into the replica-handle protocol's events, on a fake ``ray`` (no cluster): a task that
raised is Failed (or LoadFailed, one line naming the replica), a process or node that went away is Died."""

from __future__ import annotations

import pytest
from fake_replicas import counters, loaded, result

from aimo_gguf.errors import EngineError, InputError, ModelError
from aimo_gguf.replicas.handle import (
    Died,
    Failed,
    Finished,
    Loaded,
    LoadFailed,
    ReplicaHandle,
    Solved,
    Work,
)
from aimo_gguf.replicas.on_ray import RayHandle, RayLauncher

ray = pytest.importorskip("ray")


class FakeRay:
    """What a handle calls of ``ray``, with the real exceptions: a "ref" is its own value (an exception is
    raised by ``get``) and always ready."""

    exceptions = ray.exceptions

    def __init__(self) -> None:
        self.killed: list = []

    def get(self, ref):
        if isinstance(ref, BaseException):
            raise ref
        return ref

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []

    def kill(self, actor, no_restart=True):
        self.killed.append(actor)


class FakeActor:
    """``load`` answers ``load_answer``; ``solve`` streams ``records`` (a record that is an exception raises)."""

    def __init__(self, *, load_answer=None, records=()) -> None:
        self.load = _Remote(lambda: load_answer)
        self.solve = _Remote(lambda work: iter(records))
        self.counters = _Remote(lambda: counters(0))


class _Remote:
    def __init__(self, call) -> None:
        self.call = call

    def remote(self, *args, **kwargs):
        return self.call(*args, **kwargs)


def _handle(**actor) -> tuple[RayHandle, FakeRay]:
    fake = FakeRay()
    handle = RayLauncher(fake, _Remote(lambda *a, **k: FakeActor(**actor)), config=None, model_path="m.gguf",
                         graded=False, traces=False, verbose=False).start(number=3)
    assert isinstance(handle, ReplicaHandle)
    return handle, fake


def _solving(records) -> RayHandle:
    handle, _ = _handle(records=records)
    handle.solve(Work(problems=[], deadline_at=None, parallel=1, waiting_elsewhere=0))
    return handle


def _task_error(cause: BaseException):
    return ray.exceptions.RayTaskError("solve", "Traceback ...", cause)


@pytest.mark.parametrize(("error", "kind", "why"), [
    (ray.exceptions.ObjectLostError("ab" * 14, None, ""), Died, "ObjectLostError"),
    (ray.exceptions.ActorDiedError(), Died, "ActorDiedError"),
    (_task_error(EngineError("llama_decode failed")), Failed, "EngineError: llama_decode failed"),
    (_task_error(RuntimeError("a bug")), Failed, "RuntimeError: a bug"),
    (_task_error(InputError("no such prompt family")), Failed, "InputError: no such prompt family"),
], ids=["object-lost", "actor-died", "engine-error", "other-error", "input-error"])
def test_a_ray_error_in_a_stream_is_one_event_that_ends_the_call(error, kind, why):
    handle = _solving([Solved(result(0), counters(1)), error, Finished(counters(1))])
    first, second = handle.events(), handle.events()
    assert [type(e) for e in first] == [Solved]
    assert [type(e) for e in second] == [kind] and second[0].why.startswith(why)
    if kind is Failed:  # aimo-gguf's own errors travel as themselves: an InputError ends the run
        cause = error.cause
        assert (second[0].error is cause) is isinstance(cause, (EngineError, InputError))
    assert handle.events() == [] and handle.waiting_on() == []  # the call is over


@pytest.mark.parametrize("records", [[], [Solved(result(0), counters(1))]], ids=["empty", "cut"])
def test_a_stream_that_ends_without_finished_is_a_death(records):
    handle = _solving(records)
    events = [e for _ in range(len(records) + 1) for e in handle.events()]
    assert events[-1] == Died("its stream ended early")


@pytest.mark.parametrize(("answer", "expected"), [
    (loaded(pid=42), loaded(pid=42)),
    (LoadFailed(ModelError("replica 3 (n): not a GGUF file")), LoadFailed(ModelError("replica 3 (n): not a GGUF file"))),
    (_task_error(ValueError("bad tensor")),
     LoadFailed(ModelError("replica 3 failed while loading the model: ValueError: bad tensor"))),
    (ray.exceptions.ActorDiedError(), Died("out of memory, or killed: see the Ray log above")),
], ids=["loaded", "our-error", "other-error", "died"])
def test_a_load_answers_one_event(answer, expected):
    handle, _ = _handle(load_answer=answer)
    handle.load()
    events = handle.events()
    assert len(events) == 1 and type(events[0]) is type(expected)
    if isinstance(expected, LoadFailed):
        assert type(events[0].error) is type(expected.error) and str(events[0].error) == str(expected.error)
    else:
        assert events[0] == expected
    assert handle.pid == (42 if isinstance(expected, Loaded) else 0)
    assert handle.events() == []


def test_close_kills_the_actor_once_and_silences_it():
    handle, fake = _handle(records=[Finished(counters(0))])
    handle.solve(Work(problems=[], deadline_at=None, parallel=1, waiting_elsewhere=0))
    handle.close()
    handle.close()
    assert len(fake.killed) == 1 and handle.events() == []
