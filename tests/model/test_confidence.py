"""Tier 3: the engine's confidence signals on the real SmolLM2-135M, against NumPy on its own logits."""

from __future__ import annotations

import numpy as np
import pytest

from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.engine.confidence import ConfidenceSettings
from aimo_gguf.gguf.files import default_model_path

GREEDY = SamplingParams(temperature=0)
SETTINGS = ConfidenceSettings(group_window=8, tail_window=5)
QUESTIONS = [f"Question {i}: what is {i} times {i + 3}? Answer:" for i in range(16)]


def run(engine: Engine, prompts, max_tokens=24, sampling=GREEDY):
    requests = [Request(key=i, prompt=p, max_tokens=max_tokens, seed=i, sampling=sampling)
                for i, p in enumerate(prompts)]
    return {c.request.key: c for c in engine.generate(requests)}


def from_logits(engine: Engine, prompt, tokens):
    """The aggregates computed directly from the model's logits over prompt + generated tokens."""
    x = engine.logits(list(prompt) + list(tokens)).astype(np.float64)[len(prompt) - 1:len(prompt) - 1 + len(tokens)]
    lp = x - (np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1))[:, None]
    top = np.sort(lp, 1)[:, -5:]
    h, c = -(np.exp(top) * top).sum(1), -top.mean(1)
    chosen = lp[np.arange(len(tokens)), tokens]
    groups = [c[j - 8:j].mean() for j in range(8, len(c) + 1)]
    return dict(tokens=len(tokens), mean_entropy=h.mean(), mean_confidence=c.mean(), mean_logprob=chosen.mean(),
                lowest_group_confidence=min(groups), tail_entropy=h[-5:].mean(), tail_confidence=c[-5:].mean())


@pytest.fixture(scope="module", params=["batched", "chain", "backend"])
def engine(request):
    # Every sampling path computes the same signals: NumPy over the logits, token_signals, or llama.cpp's
    # graph (backend sampling on the CPU backend here).
    with Engine(default_model_path(), ctx=256, batch_size=16, threads=2, ignore_eos=True,
                confidence=SETTINGS, sampler=request.param) as e:
        assert e.info.sampler == request.param
        yield e


def test_the_aggregates_equal_numpy_on_the_models_own_logits(engine):
    prompts = [engine.tokenize(q) for q in QUESTIONS[:4]]
    sampled = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)  # signals of the raw distribution
    for sampling in (GREEDY, sampled):
        done = run(engine, prompts, sampling=sampling)
        for i, prompt in enumerate(prompts):
            got, want = done[i].confidence, from_logits(engine, prompt, done[i].tokens)
            for name, value in want.items():
                assert getattr(got, name) == pytest.approx(value, rel=1e-4, abs=1e-4), (i, name)


def test_a_sample_has_the_same_aggregates_alone_and_in_a_batch_of_16(engine):
    prompts = [engine.tokenize(q) for q in QUESTIONS]
    batch = run(engine, prompts)
    for i in (0, 7, 15):
        alone = run(engine, [prompts[i]])[0]
        assert alone.tokens == batch[i].tokens
        for name in alone.confidence.__slots__:
            assert getattr(alone.confidence, name) == pytest.approx(getattr(batch[i].confidence, name),
                                                                   rel=1e-3, abs=1e-3), name


@pytest.mark.parametrize("sampler", ["batched", "chain", "backend"])
def test_without_settings_nothing_is_computed(sampler):
    with Engine(default_model_path(), ctx=128, batch_size=2, threads=1, sampler=sampler) as e:
        (done,) = e.generate([Request(key=0, prompt=e.tokenize(QUESTIONS[0]), max_tokens=4, seed=0,
                                      sampling=GREEDY)])
        assert done.confidence is None and e.stats.confidence_seconds == 0


def test_stop_below_cuts_samples_on_a_real_run_and_the_summary_counts_them(tmp_path):
    from aimo_gguf.pipeline import runner
    from aimo_gguf.pipeline.problems import Problem

    problems = [Problem(id="q", problem="What is 3 + 5?", answer=8)]
    result = runner.run(problems, output=tmp_path / "sub.csv", summary=tmp_path / "s.json",
                        traces=tmp_path / "t.jsonl", progress=False, samples=8, batch_size=4, threads=2,
                        max_tokens=48, temperature=1.0, early_stop=False, stop_below=90, stop_warmup=4,
                        group_window=8, ignore_eos=True)
    s = result.summary  # samples 0-3 run first, set the threshold, and 4-7 run under it
    assert s.low_confidence >= 1 and s.finish_reasons.get("low_confidence") == s.low_confidence
    traces = [__import__("json").loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    cut = [t for t in traces if t["finish_reason"] == "low_confidence"]
    assert len(cut) == s.low_confidence and all(t["answer"] is None for t in cut)
    assert all(t["confidence"]["tokens"] == t["tokens"] for t in traces)
    # A cut sample ended as soon as a full window fell below the threshold: before its budget.
    assert all(8 <= t["tokens"] < 48 for t in cut)
    assert set(s.mode_correct) == {"majority", "entropy", "tail", "deepconf"}
