"""Tier 3: the engine's three sampling paths on the real SmolLM2-135M (CPU; llama.cpp's backend
sampling runs on its CPU backend here).

What must not change with the path: the distribution of a sampled token (next-token frequencies on a
real prompt against the exact distribution of the chain over the model's own logits: the chi-square test
of ``tests/distribution.py``, whose header states its false-failure rate), greedy output token for token,
a sample's tokens depending on its seed alone, grammars and logit biases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from distribution import ALPHA, chain_distribution, chi_square_p

from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.engine.llama import LlamaModel
from aimo_gguf.gguf.files import default_model_path

PATHS = ["batched", "chain", "backend"]
GREEDY = SamplingParams(temperature=0)
AIMO3 = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.02)
PROMPTS = ["Name a number between one and ten.", "What is 2+2?", "Write a haiku about the sea.",
           "The capital of France is", "List three colors:", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(default_model_path())


@pytest.fixture(scope="module")
def eog(model_path) -> list[int]:
    model = LlamaModel(model_path, vocab_only=True)
    try:
        return list(model.eog_tokens)
    finally:
        model.close()


def chat(engine: Engine, text: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def generate(model_path, sampler, requests_of, *, batch_size=4, **kwargs) -> dict:
    with Engine(model_path, ctx=256, batch_size=batch_size, threads=2, sampler=sampler, **kwargs) as engine:
        assert engine.info.sampler == sampler
        return {c.request.key: c for c in engine.generate(requests_of(engine))}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", PATHS)
@pytest.mark.parametrize("sampling", [AIMO3, SamplingParams(), SamplingParams(temperature=0.8, top_k=0, top_p=0.9,
                                                                              min_p=0.0)],
                         ids=["aimo3", "defaults", "top-p"])
def test_next_token_frequencies_follow_the_exact_distribution(model_path, eog, sampler, sampling):
    n = 960  # 60 steps of 16 one-token samples, each of its own seed
    with Engine(model_path, ctx=128, batch_size=16, threads=2, sampler=sampler, ignore_eos=True) as engine:
        prompt = chat(engine, PROMPTS[0])
        row = engine.logits(prompt)[-1]
        requests = [Request(key=i, prompt=prompt, max_tokens=1, seed=1000 + i, sampling=sampling) for i in range(n)]
        tokens = [c.tokens[0] for c in engine.generate(requests)]
    exact = chain_distribution(row, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                               min_p=sampling.min_p, masked=eog)
    support = exact > 0
    assert 3 <= support.sum() < 200  # a spread distribution, not one token
    if sampling.min_p:  # no logit near min-p's floor: a rounding of the batched decode cannot move a token across
        floor = row[~np.isin(np.arange(len(row)), eog)].max() + math.log(sampling.min_p)
        assert np.abs(row[np.isfinite(row)] - floor).min() > 1e-3
    counts = np.bincount(tokens, minlength=len(row))
    assert chi_square_p(counts, exact) >= ALPHA


def test_greedy_output_is_the_same_token_for_token_on_every_path(model_path):
    def requests_of(engine):
        return [Request(key=i, prompt=chat(engine, p), max_tokens=24, seed=0, sampling=GREEDY)
                for i, p in enumerate(PROMPTS)]

    outputs = {path: generate(model_path, path, requests_of) for path in PATHS}
    for key in range(len(PROMPTS)):
        tokens = {path: outputs[path][key].tokens for path in PATHS}
        assert tokens["batched"] == tokens["chain"] == tokens["backend"], PROMPTS[key]


@pytest.mark.parametrize("sampler", PATHS)
def test_sampled_tokens_depend_on_the_seed_not_on_the_batch(model_path, sampler):
    def run(batch_size, seeds):
        # cache_prompts off: a reused prompt decodes its last token alone, which moves logits by rounding
        def requests_of(engine):
            prompt = chat(engine, "Tell me a story.")
            return [Request(key=s, prompt=prompt, max_tokens=16, seed=s, sampling=AIMO3) for s in seeds]

        done = generate(model_path, sampler, requests_of, batch_size=batch_size, cache_prompts=False)
        return {key: c.tokens for key, c in done.items()}

    one = run(1, [1, 2])
    four = run(4, [3, 2, 4, 1])
    assert one[1] == four[1] and one[2] == four[2]
    assert len({tuple(t) for t in four.values()}) > 1


@pytest.mark.parametrize("sampler", PATHS)
def test_grammars_and_logit_biases_hold_beside_plain_requests(model_path, sampler):
    with Engine(model_path, ctx=256, batch_size=4, threads=2, sampler=sampler) as engine:
        question = chat(engine, PROMPTS[1])
        row = engine.logits(question)[-1]
        best, second = (int(t) for t in np.argsort(-row, kind="stable")[:2])
        forced = engine.tokenize("Yes", add_special=False)[0]
        requests = [
            Request(key="grammar", prompt=chat(engine, PROMPTS[0]), max_tokens=8, seed=1,
                    sampling=SamplingParams(temperature=1.0, grammar='root ::= "yes" | "no"')),
            Request(key="plus", prompt=question, max_tokens=1, seed=1,
                    sampling=SamplingParams(temperature=0, logit_bias=((forced, 50.0),))),
            Request(key="minus", prompt=question, max_tokens=1, seed=1,
                    sampling=SamplingParams(temperature=0, logit_bias=((best, float("-inf")),))),
            Request(key="plain", prompt=question, max_tokens=1, seed=1, sampling=GREEDY),
        ]
        done = {c.request.key: c for c in engine.generate(requests)}
    assert done["grammar"].text in ("yes", "no")
    assert done["plus"].tokens == [forced]
    assert done["minus"].tokens == [second]
    assert done["plain"].tokens == [best]
