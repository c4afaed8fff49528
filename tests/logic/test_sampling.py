"""The batched host sampler (``aimo_gguf.engine.sampling``) on fixed logits, without a model.

Its draws follow llama.cpp's chain exactly (a chi-square test of sampled counts against the exact
distribution, ``tests/distribution.py``, whose header states the false-failure rate), greedy takes the
first largest logit, a row's draws depend on its seed alone (not on its batch or its place in it), the
masks are undone, and its confidence signals equal ``token_signals``' direct computation on the raw row.
The vocabulary sizes cross the sampler's lanes, blocks and tail (``LANES``, ``BLOCK``).
"""

from __future__ import annotations

import numpy as np
import pytest
from distribution import ALPHA, chain_distribution, chi_square_p

from aimo_gguf.engine import SamplingParams
from aimo_gguf.engine.confidence import token_signals
from aimo_gguf.engine.sampling import BLOCK, LANES, HostSampler, RowSampler
from aimo_gguf.errors import InputError

VOCAB = 2 * LANES + 3 * BLOCK + 37  # two lanes' worth, a tail past them, a last block part-filled
MASKED = np.array([3, 700, VOCAB - 1])


def logits_of(kind: str, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    """One row: 'peaked' (a trained model's shape), 'flat' (random weights'), 'warm' (a peak near the largest
    the sampler exponentiates unshifted), 'high' (a peak far above 0, where it shifts its exponentials),
    'low' (every logit far below 0)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(vocab) * (0.05 if kind == "flat" else 3.0)
    x[rng.choice(vocab, 6, replace=False)] += np.array([9.0, 8.2, 7.5, 7.4, 6.0, 5.1]) * (kind != "flat")
    x += {"warm": 50.0, "high": 80.0, "low": -90.0}.get(kind, 0.0)
    return x.astype(np.float32)


def draw(logits: np.ndarray, sampling: SamplingParams, n: int, *, masked=MASKED, seed0: int = 0,
         top_k: int | None = None) -> np.ndarray:
    """Counts per token of ``n`` draws, 11 rows a step (each its own seed), from the same row."""
    rows_per_step = 11
    sampler = HostSampler(len(logits), top_k=top_k)
    masked = np.asarray(masked, dtype=np.int64)
    rows = [RowSampler.create(sampling, seed0 + i, masked=masked, n_vocab=len(logits)) for i in range(rows_per_step)]
    batch = np.tile(logits, (rows_per_step, 1))
    counts = np.zeros(len(logits), dtype=np.int64)
    for _ in range(-(-n // rows_per_step)):
        tokens, _ = sampler.sample(batch, rows, [None] * rows_per_step)
        np.add.at(counts, tokens, 1)
    return counts


CASES = [  # (logits, temperature, top_k, top_p, min_p): every way the sampler can draw a row
    ("peaked", 1.0, 0, 1.0, 0.02),  # the AIMO3 recipe: rejection against min-p
    ("flat", 1.0, 0, 1.0, 0.02),
    ("high", 1.0, 0, 1.0, 0.02),
    ("low", 1.0, 0, 1.0, 0.02),
    ("warm", 1.0, 0, 1.0, 0.02),
    ("peaked", 1.0, 0, 1.0, 0.0),
    ("peaked", 0.6, 0, 1.0, 0.05),  # below 1: accepted with exp((x - peak)(1/T - 1))
    ("flat", 0.6, 0, 1.0, 0.0),
    ("peaked", 1.5, 0, 1.0, 0.05),  # above 1, bounded by min-p's floor
    ("peaked", 1.5, 0, 1.0, 0.0),  # above 1 and unbounded: the whole row exactly
    ("peaked", 1.0, 0, 0.9, 0.0),  # top-p: accepted when the mass above it is below p
    ("flat", 1.0, 0, 0.5, 0.0),
    ("peaked", 0.8, 0, 0.9, 0.05),
    ("peaked", 0.7, 40, 0.95, 0.05),  # run's defaults: the top-k found exactly, then the chain on them
    ("flat", 0.7, 40, 0.95, 0.05),
    ("peaked", 1.0, 5, 1.0, 0.0),
    ("high", 0.7, 600, 1.0, 0.0),  # a top-k too large for the lanes: a partition of the row
]


@pytest.mark.parametrize(("kind", "temperature", "top_k", "top_p", "min_p"), CASES)
def test_draws_follow_the_chains_exact_distribution(kind, temperature, top_k, top_p, min_p):
    logits = logits_of(kind)
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    exact = chain_distribution(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                               masked=MASKED)
    counts = draw(logits, sampling, 6000)
    assert not counts[MASKED].any()
    assert chi_square_p(counts, exact) >= ALPHA


@pytest.mark.parametrize(("wrong", "right"), [
    (dict(min_p=0.0), dict(min_p=0.05)),  # the floor ignored
    (dict(temperature=1.0), dict(temperature=0.8)),  # the temperature ignored
    (dict(top_p=1.0), dict(top_p=0.95)),  # the nucleus ignored
])
def test_the_distribution_test_catches_a_wrong_sampler(wrong, right):
    # What the test above would see if the sampler dropped one filter: numpy draws from the wrong
    # distribution, counted against the right one.
    logits = logits_of("peaked")
    base = dict(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0)
    drawn = chain_distribution(logits, **{**base, **right, **wrong})
    exact = chain_distribution(logits, **{**base, **right})
    counts = np.bincount(np.random.default_rng(1).choice(len(logits), 6000, p=drawn), minlength=len(logits))
    assert chi_square_p(counts, exact) < ALPHA


@pytest.mark.parametrize("kind", ["peaked", "flat", "high"])
@pytest.mark.parametrize("vocab", [50, LANES - 1, VOCAB, 3 * LANES])
def test_greedy_takes_the_first_largest_logit(kind, vocab):
    logits = logits_of(kind, vocab)
    top = int(np.argmax(logits))
    logits[vocab // 2] = logits[vocab - 1] = logits[top]  # ties: the first one wins, as in llama.cpp
    logits[0] = -np.inf
    batch = np.tile(logits, (3, 1))
    rows = [RowSampler.create(SamplingParams(temperature=0), s, masked=np.array([], dtype=np.int64), n_vocab=vocab)
            for s in range(3)]
    tokens, _ = HostSampler(vocab, top_k=None).sample(batch, rows, [None] * 3)
    assert tokens == [min(top, vocab // 2)] * 3


def test_a_masked_largest_logit_hands_greedy_to_the_next():
    logits = logits_of("peaked")
    best = int(np.argmax(logits))
    rows = [RowSampler.create(SamplingParams(temperature=0), 0, masked=np.array([best]), n_vocab=VOCAB)]
    tokens, _ = HostSampler(VOCAB, top_k=None).sample(logits[None].copy(), rows, [None])
    assert tokens[0] == int(np.argsort(-logits, kind="stable")[1])


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.02),
    SamplingParams(),
    SamplingParams(temperature=1.3, top_k=0, top_p=0.9, min_p=0.0),
])
def test_a_rows_draws_depend_on_its_seed_alone(sampling):
    # The same seed drawn alone, then among other rows at another place and batch size, step after step.
    logits = [logits_of("peaked", seed=s) for s in range(6)]
    masked = np.asarray(MASKED, dtype=np.int64)

    def run(seeds: list[int]) -> dict[int, list[int]]:
        sampler = HostSampler(VOCAB, top_k=5)
        rows = [RowSampler.create(sampling, s, masked=masked, n_vocab=VOCAB) for s in seeds]
        out = {s: [] for s in seeds}
        for step in range(6):
            batch = np.stack([logits[(step + s) % 6] for s in seeds])
            tokens, _ = sampler.sample(batch, rows, [None] * len(seeds))
            for s, t in zip(seeds, tokens, strict=True):
                out[s].append(t)
        return out

    alone = run([7])[7]
    crowd = run([1, 2, 3, 4, 5, 6, 8, 9, 10, 7, 11])
    assert crowd[7] == alone
    assert len({tuple(v) for v in crowd.values()}) > 1


@pytest.mark.parametrize("kind", ["peaked", "flat", "warm", "high", "low"])
@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("n_rows", [1, 10])
@pytest.mark.parametrize("shared", [True, False], ids=["same-masks", "own-masks"])
def test_signals_match_the_direct_computation_on_the_raw_row(kind, k, n_rows, shared):
    batch = np.stack([logits_of(kind, seed=s) for s in range(n_rows)])
    raw = batch.copy()
    # Row 0's largest logit is masked: the signals still count it (they are the raw model's).
    masked = np.append(MASKED, int(np.argmax(raw[0])))
    sampling = [SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.02), SamplingParams(temperature=0),
                SamplingParams()]
    rows = []
    for i in range(n_rows):
        own = sampling[i % 3] if shared else SamplingParams(
            temperature=sampling[i % 3].temperature, top_k=sampling[i % 3].top_k, min_p=sampling[i % 3].min_p,
            logit_bias=((10 + i, float("-inf")),))  # a mask of its own: the rows' masks differ
        rows.append(RowSampler.create(own, i, masked=masked, n_vocab=VOCAB))
    tokens, signals = HostSampler(VOCAB, top_k=k).sample(batch, rows, [None] * n_rows)
    assert np.array_equal(batch, raw)  # the masks are undone
    want = token_signals(raw, tokens, k)
    for got, expected in zip((signals.entropy, signals.confidence, signals.logprob), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_row_drawn_elsewhere_keeps_its_token_and_gets_its_signals():
    batch = np.stack([logits_of("peaked", seed=s) for s in range(3)])
    rows = [RowSampler.create(SamplingParams(), 1, masked=MASKED, n_vocab=VOCAB), None,
            RowSampler.create(SamplingParams(), 2, masked=MASKED, n_vocab=VOCAB)]
    tokens, signals = HostSampler(VOCAB, top_k=5).sample(batch.copy(), rows, [None, 3, None])
    assert tokens[1] == 3  # a grammar's chain drew it; its row had no masks applied
    np.testing.assert_allclose(signals.logprob, token_signals(batch, tokens, 5)[2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("sampling", "handled"), [
    (SamplingParams(), True),
    (SamplingParams(logit_bias=((5, float("-inf")),)), True),
    (SamplingParams(logit_bias=((5, 2.0),)), False),
    (SamplingParams(grammar='root ::= "a"'), False),
])
def test_grammars_and_finite_biases_stay_with_llama_cpps_chain(sampling, handled):
    assert RowSampler.handles(sampling) is handled


def test_a_minus_infinity_bias_masks_its_token():
    logits = logits_of("peaked")
    best = int(np.argmax(logits))
    sampling = SamplingParams(temperature=0, logit_bias=((best, float("-inf")),))
    row = RowSampler.create(sampling, 0, masked=np.array([], dtype=np.int64), n_vocab=VOCAB)
    tokens, _ = HostSampler(VOCAB, top_k=None).sample(logits[None].copy(), [row], [None])
    assert tokens[0] != best


@pytest.mark.parametrize("token", [-1, VOCAB])
def test_a_bias_outside_the_vocabulary_is_an_input_error(token):
    with pytest.raises(InputError, match="not in the vocabulary"):
        RowSampler.create(SamplingParams(logit_bias=((token, float("-inf")),)), 0, masked=MASKED, n_vocab=VOCAB)
