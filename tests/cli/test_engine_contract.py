"""One contract, two engines: the real Engine (on SmolLM2) and the tests' FakeEngine behave alike.

Both declare ``BatchEngine``. The contract the solver relies on: requests are
pulled lazily, only when a slot is free; a cancelled request ends before
the next step; each request ends with the right finish reason; every pulled
request comes back exactly once, in finishing order; ``on_step`` follows
every step; ``tokenize`` takes any text, a code point UTF-8 cannot encode
(a lone surrogate) read as U+FFFD.
"""

from __future__ import annotations

import inspect

import pytest
from fakes import FakeEngine

from aimo_gguf.engine import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_TOO_LONG,
    BatchEngine,
    Engine,
    Request,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.model)])
def engine(request):
    if request.param == "fake":
        yield FakeEngine(lambda p, s: "x" * 100, batch_size=3, n_ctx_seq=64, steps="tokens")
        return
    from aimo_gguf.gguf.files import default_model_path

    with Engine(default_model_path(), ctx=64, batch_size=3, threads=2, ignore_eos=True) as real:
        yield real


def requests_of(engine, budgets, *, prompt="Count to ten."):
    tokens = engine.tokenize(prompt)
    return [Request(key=(i, 0), prompt=tokens, max_tokens=m, seed=i, sampling=GREEDY) for i, m in enumerate(budgets)]


class Recorder:
    """A lazy source of requests that remembers what was pulled, and when."""

    def __init__(self, requests):
        self.requests, self.pulled = requests, []

    def __iter__(self):
        for r in self.requests:
            self.pulled.append(r.key)
            yield r


def test_both_engines_declare_the_interface(engine):
    assert isinstance(engine, BatchEngine)
    assert BatchEngine in type(engine).__mro__  # declared, not merely shaped like it
    for name in ("tokenize", "generate"):
        assert inspect.signature(getattr(type(engine), name)) == inspect.signature(getattr(Engine, name))


def test_requests_are_pulled_only_when_a_slot_is_free(engine):
    source = Recorder(requests_of(engine, [2, 6, 6, 6, 6]))
    stream = engine.generate(source)
    first = next(stream)
    assert first.request.key == (0, 0)
    assert source.pulled == [(0, 0), (1, 0), (2, 0)]  # three slots: nothing more pulled yet
    rest = list(stream)
    assert len(source.pulled) == 5 and len(rest) == 4


def test_completions_come_in_finishing_order_each_once_with_its_reason(engine):
    requests = requests_of(engine, [6, 2, 4])
    too_long = Request(key=(9, 0), prompt=[1] * engine.n_ctx_seq, max_tokens=4, seed=0, sampling=GREEDY)
    done = list(engine.generate([too_long, *requests]))
    assert [c.request.key for c in done] == [(9, 0), (1, 0), (2, 0), (0, 0)]
    assert [c.finish_reason for c in done] == [FINISH_TOO_LONG, FINISH_LENGTH, FINISH_LENGTH, FINISH_LENGTH]
    assert [len(c.tokens) for c in done] == [0, 2, 4, 6]


def test_a_cancelled_request_ends_before_the_next_step(engine):
    requests = requests_of(engine, [30, 30])
    events = []

    def on_step():
        events.append("step")
        if events.count("step") == 3:
            requests[0].cancelled = True
            events.append("cancelled")

    for completion in engine.generate(requests, on_step=on_step):
        events.append((completion.request.key, completion.finish_reason))
    at = events.index("cancelled")
    assert events[at + 1] == ((0, 0), FINISH_CANCELLED)  # no step in between
    assert ((1, 0), FINISH_LENGTH) in events
    assert events.count("step") >= 30


@pytest.mark.parametrize("text", ["\ud800", "x = \ud800\udfff!", "\udcff.gguf", "42\ud83d"])
def test_tokenize_takes_any_text(engine, text):
    """Text UTF-8 cannot encode (a tool printed chr(0xd800), a JSON problem holds "\\ud800") reads as U+FFFD:
    before, the real engine raised UnicodeEncodeError and the run ended."""
    plain = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    for special in (True, False):
        assert engine.tokenize(text, parse_special=special) == engine.tokenize(plain, parse_special=special)
