"""Engines in threads as one BatchEngine (the Kaggle adapter on several GPUs), on fake engines."""

from __future__ import annotations

import threading

import pytest
from fakes import FakeEngine, boxed, problems_of

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import FINISH_CANCELLED, BatchEngine
from aimo_gguf.engine.pool import EnginePool
from aimo_gguf.errors import InputError
from aimo_gguf.kaggle import ANSWER_RANGE, KaggleSolver
from aimo_gguf.solving.solver import Solver


def pool_of(*engines) -> EnginePool:
    return EnginePool(list(engines))


def test_a_pool_declares_the_engine_interface_and_adds_the_batches():
    pool = pool_of(FakeEngine(lambda p, s: "", batch_size=2), FakeEngine(lambda p, s: "", batch_size=3))
    assert isinstance(pool, BatchEngine)
    assert pool.batch_size == 5 and pool.info.n_seq_max == 5
    assert pool.tokenize("ab") == [97, 98] and pool.chat_template is not None


class HeldEngine(FakeEngine):
    """A FakeEngine whose samples cannot finish before ``gate`` opens: both engines fill their batch first."""

    def __init__(self, *args, gate: threading.Event, **kw) -> None:
        super().__init__(*args, **kw)
        self.gate = gate

    def _finish(self, request):
        self.gate.wait(timeout=10)
        return super()._finish(request)


def test_one_problem_s_samples_are_shared_out_and_voted_on_together():
    gate = threading.Event()
    a, b = (HeldEngine(lambda p, s: boxed(12), batch_size=2, gate=gate) for _ in range(2))

    def open_once_both_pulled():
        while len(a.pulled) + len(b.pulled) < 4:
            threading.Event().wait(0.001)
        gate.set()

    threading.Thread(target=open_once_both_pulled, daemon=True).start()
    config = RunConfig(samples=4, early_stop=False)
    [result] = list(Solver(pool_of(a, b), config).solve(problems_of(1)))
    assert result.answer == 12 and result.votes == 4 and result.samples == 4
    assert len(a.pulled) == 2 and len(b.pulled) == 2  # half the samples on each
    assert sorted(r.key[1] for r in a.pulled + b.pulled) == [0, 1, 2, 3]


def test_a_decided_shared_vote_stops_the_samples_on_every_engine():
    slow = 100_000
    steps = lambda p, s: slow if s == 3 else 1  # noqa: E731 - three quick samples decide it; the fourth is long
    # Each step takes a millisecond, as a real one does at least: free fake steps would outrun any cancel.
    a = FakeEngine(lambda p, s: boxed(12), batch_size=2, steps=steps, step_seconds=0.001)
    b = FakeEngine(lambda p, s: boxed(12), batch_size=2, steps=steps, step_seconds=0.001)
    pool = pool_of(a, b)
    [result] = list(Solver(pool, RunConfig(samples=4)).solve(problems_of(1)))
    assert result.answer == 12 and result.early_stopped and result.votes == 3
    assert pool.stats.finish_reasons[FINISH_CANCELLED] == 1
    assert a.steps + b.steps < 1000  # the long sample was cut at once, on whichever engine ran it


def test_several_problems_flow_through_a_pool_and_every_thread_ends():
    a = FakeEngine(lambda p, s: boxed(p), batch_size=2, steps=lambda p, s: 1 + (p + s) % 3)
    b = FakeEngine(lambda p, s: boxed(p), batch_size=1, steps=lambda p, s: 2)
    results = list(Solver(pool_of(a, b), RunConfig(samples=3)).solve(problems_of(7)))
    assert sorted((r.index, r.answer) for r in results) == [(i, i) for i in range(7)]
    assert a.pulled and b.pulled
    assert not [t for t in threading.enumerate() if t.name.startswith("aimo-gguf-engine-")]


class Broken(FakeEngine):
    def generate(self, requests, *, on_step=None):
        next(iter(requests))
        raise RuntimeError("CUDA error: an illegal memory access")


def test_an_engine_that_fails_fails_the_pool_and_the_adapter_still_answers(capsys):
    good = FakeEngine(lambda p, s: boxed(5), batch_size=2, steps=lambda p, s: 50)
    solver = KaggleSolver(engine=pool_of(good, Broken(lambda p, s: "", batch_size=2)), total_seconds=60,
                          safety_seconds=1, samples=4, fallback_answer=3)
    frame = solver.predict("x", "What is 2 + 3?")
    assert frame["answer"].to_list() == [3] and solver.stats.failures == 1
    assert "illegal memory access" in capsys.readouterr().err
    assert not [t for t in threading.enumerate() if t.name.startswith("aimo-gguf-engine-")]


def test_the_adapter_on_a_pool_answers_in_the_gateway_s_range():
    a = FakeEngine(lambda p, s: boxed(123456), batch_size=2)
    b = FakeEngine(lambda p, s: boxed(123456), batch_size=2)
    solver = KaggleSolver(engine=pool_of(a, b), total_seconds=60, safety_seconds=1, samples=4, max_answer=10**6)
    frame = solver.predict("x", "What is big?")
    assert frame["answer"].to_list() == [ANSWER_RANGE[1]]  # the gateway's range, whatever the vote said
    assert solver.stats.answered == 1 and solver.stats.failures == 0


@pytest.mark.parametrize("replicas", [0, -1, 1.5, True])
def test_bad_replicas_are_an_input_error(replicas):
    with pytest.raises(InputError, match="replicas"):
        KaggleSolver(engine=FakeEngine(lambda p, s: ""), replicas=replicas)


def test_the_pool_s_counters_are_a_new_sum_each_time():
    a, b = FakeEngine(lambda p, s: boxed(1)), FakeEngine(lambda p, s: boxed(1))
    pool = pool_of(a, b)
    before = pool.stats
    list(Solver(pool, RunConfig(samples=2, early_stop=False)).solve(problems_of(2)))
    after = pool.stats
    assert before.generated_tokens == 0 and after.generated_tokens == a.stats.generated_tokens + b.stats.generated_tokens
    assert after is not pool.stats  # nobody holding a snapshot sees it frozen: they read .stats again


def test_the_adapter_refuses_ray_options():
    with pytest.raises(InputError, match="engines in threads"):
        KaggleSolver(engine=FakeEngine(lambda p, s: ""), ray="local")
