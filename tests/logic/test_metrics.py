"""pass@k, maj@k and weighted@k (aimo_gguf.solving.metrics) against brute force over every subset."""

from __future__ import annotations

import math
import random
from itertools import combinations

import numpy as np
import pytest

from aimo_gguf.engine.confidence import Confidence
from aimo_gguf.solving import metrics
from aimo_gguf.solving.metrics import k_values, pass_at_k, vote_at_k
from aimo_gguf.solving.voting import VOTE_MODES, Vote, pick

pytestmark = pytest.mark.logic


@pytest.mark.parametrize("n", range(1, 70))
def test_k_values_are_the_powers_of_two_up_to_n_and_n(n):
    ks = k_values(n)
    assert ks[0] == 1 and ks[-1] == n and ks == sorted(set(ks))
    assert all(k == n or k & (k - 1) == 0 for k in ks)
    assert len(ks) == n.bit_length() + (n & (n - 1) != 0)


CASES = [(n, c, k) for n in range(1, 9) for c in range(n + 1) for k in range(1, n + 1)]


@pytest.mark.parametrize(("n", "c", "k"), CASES)
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_right_sample(n, c, k):
    subsets = list(combinations(range(n), k))
    share = sum(any(i < c for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(share)


@pytest.mark.parametrize(("n", "c", "k"), [(n, c, k) for n in (8, 16, 64, 100) for c in range(0, n + 1, 7)
                                           for k in k_values(n)])
def test_pass_at_k_matches_the_papers_stable_form(n, c, k):
    # Chen et al.'s numpy form, as lighteval and human-eval write it.
    stable = 1.0 if n - c < k else 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
    assert pass_at_k(n, c, k) == pytest.approx(stable)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    assert pass_at_k(n, c, n) == (1.0 if c else 0.0)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (2, -1, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def random_votes(rng: random.Random, n: int, *, confident: bool) -> list[Vote]:
    votes = []
    for j in range(n):
        answer = rng.choice([None, 3, 3, 5, 7, 11])
        confidence = None
        if confident and rng.random() < 0.9:
            confidence = Confidence(tokens=10, mean_entropy=rng.uniform(0.01, 2), mean_confidence=rng.uniform(0, 5),
                                    mean_logprob=-rng.uniform(0, 3), lowest_group_confidence=rng.uniform(0, 5),
                                    tail_entropy=rng.uniform(0.01, 2), tail_confidence=rng.uniform(0, 5))
        votes.append(Vote(j, answer, confidence, rng.choice([1.0, 1.0, 2.0])))
    rng.shuffle(votes)  # the order samples finish in: it must not matter
    return votes


def brute_force(votes, k, *, expected, fallback, **options):
    subsets = list(combinations(votes, k))
    winners = [pick(list(s), **options) for s in subsets]
    return sum((fallback if w is None else w) == expected for w in winners) / len(subsets)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", VOTE_MODES)
@pytest.mark.parametrize("keep_top", [100.0, 50.0])
def test_vote_at_k_is_the_mean_vote_over_every_k_subset(seed, mode, keep_top):
    rng = random.Random(seed)
    votes = random_votes(rng, rng.randint(1, 9), confident=seed % 3 != 0)
    expected, fallback = rng.choice([3, 5, 0]), rng.choice([0, 3])
    for k in range(1, len(votes) + 1):
        got = vote_at_k(votes, k, expected=expected, fallback=fallback, mode=mode, keep_top=keep_top)
        want = brute_force(votes, k, expected=expected, fallback=fallback, mode=mode, keep_top=keep_top)
        assert got == pytest.approx(want), k


@pytest.mark.parametrize("seed", range(20))
def test_vote_at_n_is_the_runs_own_vote(seed):
    rng = random.Random(seed)
    votes = random_votes(rng, rng.randint(1, 12), confident=True)
    for mode in VOTE_MODES:
        winner = pick(votes, mode)
        got = vote_at_k(votes, len(votes), expected=5, fallback=0, mode=mode)
        assert got == float((0 if winner is None else winner) == 5)


@pytest.mark.parametrize("seed", range(6))
def test_the_estimate_lies_within_its_stated_error_and_repeats(seed, monkeypatch):
    rng = random.Random(seed)
    votes = random_votes(rng, 12, confident=False)
    exact = brute_force(votes, 6, expected=3, fallback=0)  # C(12, 6) = 924 subsets
    monkeypatch.setattr(metrics, "MAX_SUBSETS", 256)
    estimate = vote_at_k(votes, 6, expected=3, fallback=0, seed=seed)
    assert abs(estimate - exact) <= 4 * 0.5 / math.sqrt(256)  # four times the stated bound
    assert vote_at_k(votes, 6, expected=3, fallback=0, seed=seed) == estimate


def test_many_samples_stay_fast():
    rng = random.Random(1)
    votes = random_votes(rng, 64, confident=True)
    for k in k_values(64):
        for mode in VOTE_MODES:
            value = vote_at_k(votes, k, expected=3, fallback=0, mode=mode, keep_top=60)
            assert 0.0 <= value <= 1.0
