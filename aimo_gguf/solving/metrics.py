"""Accuracy at k from the samples a problem already has: unbiased pass@k, maj@k and the chosen vote
mode's weighted@k, for k = 1, 2, 4, ... up to the samples per problem.

- **pass@k** is the estimator of Chen et al. 2021 (arXiv 2107.03374), ``1 - C(n-c, k) / C(n, k)``
  for a problem with ``n`` samples of which ``c`` are right: the chance that a random k of them
  hold a right one. lighteval's ``PassAtK`` and NeMo-Skills' ``pass@k`` compute the same; it is
  three lines over ``math.comb``, so neither framework is a dependency.
- **maj@k** (``--vote majority``) and **weighted@k** (the run's ``--vote``) are the expected accuracy
  of the vote (``voting.pick``, its tie-break and ``--keep-top`` included; a vote with no answer
  submits the fallback) over a uniformly random k of the problem's samples: exact, over every
  subset, while there are at most ``MAX_SUBSETS`` of them; otherwise the mean over
  ``MAX_SUBSETS`` subsets drawn with a fixed seed, whose standard error is at most
  ``1 / (2 sqrt(MAX_SUBSETS))`` per problem (0.8%) and ``1 / (2 sqrt(MAX_SUBSETS * P))`` for the
  mean over P problems (0.08% over 100). lighteval's ``maj@n`` and NeMo-Skills' ``majority@k`` vote
  on the first k samples instead: one draw of this expectation.

A problem's samples are those that voted (cut by ``--stop-below`` or cancelled, a sample has no
vote); a problem with fewer than k of them has no value at k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from .voting import DEFAULT_VOTE_FLOOR, Vote, pick, rank_score, vote_weight

MAX_SUBSETS = 4096
SUBSET_SEED = 2107  # the arXiv number of Chen et al.; any fixed value keeps the estimate reproducible


def k_values(n: int) -> list[int]:
    """The k reported for ``n`` samples per problem: the powers of two up to ``n``, and ``n``."""
    ks = [1 << i for i in range(max(n, 1).bit_length()) if 1 << i <= n]
    return ks + [n] if n >= 1 and ks[-1] != n else ks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k of one problem with ``n`` samples, ``c`` of them right."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def vote_at_k(votes: Sequence[Vote], k: int, *, expected: int, fallback: int, mode: str = "majority",
              floor: float = DEFAULT_VOTE_FLOOR, keep_top: float = 100.0, seed: int = SUBSET_SEED) -> float:
    """The expected accuracy of ``voting.pick(subset, mode, ...)`` (the fallback when it picks nothing)
    over the k-subsets of ``votes`` (see the module's docstring)."""
    n = len(votes)
    if not 1 <= k <= n:
        raise ValueError(f"vote@k needs 1 <= k <= {n} samples, got k={k}")
    answers = sorted({v.answer for v in votes if v.answer is not None})
    code = np.array([-1 if v.answer is None else answers.index(v.answer) for v in votes])
    weight = np.array([v.bonus * vote_weight(mode, v.confidence, floor) for v in votes])
    sample = np.array([v.sample for v in votes], dtype=float)
    chosen = _subsets(n, k, seed)  # (subsets, n) booleans
    voting = chosen & (code >= 0)
    if keep_top < 100:
        voting = _keep_top(votes, voting, mode, keep_top)
    if not answers:
        return float(fallback == expected)
    onehot = code[:, None] == np.arange(len(answers))[None, :]  # (n, answers)
    totals = (voting * weight) @ onehot  # (subsets, answers): each answer's summed weight
    first = np.stack([np.where(voting & onehot[:, j], sample, np.inf).min(axis=1) for j in range(len(answers))],
                     axis=1)  # (subsets, answers): the lowest sample index voting for each
    # The winner: most weight, then the lowest sample index (voting.Tally's tie-break); none without votes.
    best = np.where(first < np.inf, totals, -np.inf)
    leaders = best == best.max(axis=1, keepdims=True)
    winner = np.where(leaders, first, np.inf).argmin(axis=1)
    has_vote = voting.any(axis=1)
    picked = np.array(answers)[winner]
    right = np.where(has_vote, picked == expected, fallback == expected)
    return float(right.mean())


def _subsets(n: int, k: int, seed: int) -> np.ndarray:
    """Every k-subset of ``range(n)`` as a row of booleans, or ``MAX_SUBSETS`` random ones (fixed seed)."""
    if math.comb(n, k) <= MAX_SUBSETS:
        rows = np.array(list(combinations(range(n), k)))
    else:
        rng = np.random.default_rng([SUBSET_SEED, seed, n, k])
        rows = np.argsort(rng.random((MAX_SUBSETS, n)), axis=1)[:, :k]
    chosen = np.zeros((len(rows), n), dtype=bool)
    np.put_along_axis(chosen, rows, True, axis=1)
    return chosen


def _keep_top(votes: Sequence[Vote], voting: np.ndarray, mode: str, keep_top: float) -> np.ndarray:
    """``voting.kept`` per subset: the most confident ``keep_top`` percent of its answered votes (at least
    one; ties keep the lower sample index)."""
    order = sorted(range(len(votes)), key=lambda i: (-rank_score(mode, votes[i].confidence), votes[i].sample))
    ranked = voting[:, order]
    keep = np.maximum(1, np.ceil(ranked.sum(axis=1) * keep_top / 100))
    kept = ranked & (np.cumsum(ranked, axis=1) <= keep[:, None])
    out = np.zeros_like(voting)
    out[:, order] = kept
    return out


AT_K_SERIES = ("pass", "majority", "vote")  # pass@k, maj@k, and @k under the run's --vote


def problem_at_k(votes: Sequence[Vote], *, samples: int, expected: int, fallback: int, mode: str,
                 floor: float = DEFAULT_VOTE_FLOOR, keep_top: float = 100.0, seed: int = SUBSET_SEED
                 ) -> dict[str, list[float | None]]:
    """pass@k, maj@k and the ``mode`` vote's @k of one graded problem, by k in ``k_values(samples)``
    (None where it has fewer than k voting samples)."""
    n, right = len(votes), sum(v.answer is not None and v.answer == expected for v in votes)
    options = dict(expected=expected, fallback=fallback, floor=floor, keep_top=keep_top, seed=seed)
    out: dict[str, list[float | None]] = {name: [] for name in AT_K_SERIES}
    for k in k_values(samples):
        if k > n:
            for values in out.values():
                values.append(None)
            continue
        out["pass"].append(pass_at_k(n, right, k))
        majority = vote_at_k(votes, k, mode="majority", **options)
        out["majority"].append(majority)
        out["vote"].append(majority if mode == "majority" else vote_at_k(votes, k, mode=mode, **options))
    return out


def problem_metrics(votes: Sequence[Vote], *, expected: int | None, samples: int, vote: str, floor: float,
                    keep_top: float, fallback: int, seed: int) -> dict:
    """A finished problem's length-capped counts and, when its answer is known, its accuracy at k: the
    ``ProblemResult`` fields ``capped``, ``capped_answered``, ``capped_correct``, ``correct_without_capped``
    and ``at_k``."""
    capped = [v for v in votes if v.capped]
    fields: dict = dict(capped=len(capped), capped_answered=sum(v.answer is not None for v in capped))
    if expected is None:
        return fields
    uncapped = pick([v for v in votes if not v.capped], vote, floor=floor, keep_top=keep_top)
    fields.update(capped_correct=sum(v.answer == expected for v in capped),
                  correct_without_capped=(fallback if uncapped is None else uncapped) == expected)
    if votes:
        fields["at_k"] = problem_at_k(votes, samples=samples, expected=expected, fallback=fallback, mode=vote,
                                      floor=floor, keep_top=keep_top, seed=seed)
    return fields


def add_at_k(totals: dict, at_k: dict | None, *, samples: int) -> None:
    """Add one problem's ``problem_at_k`` to a run's fixed-size sums (``RunSummary.at_k``): per k, the
    problems counted and each series' sum."""
    if not at_k:
        return
    if not totals:
        ks = k_values(samples)
        totals.update(k=ks, problems=[0] * len(ks), **{series: [0.0] * len(ks) for series in AT_K_SERIES})
    if len(at_k["pass"]) != len(totals["k"]):
        return  # a journaled problem from a run with another --samples (resume refuses that run)
    for i, value in enumerate(at_k["pass"]):
        if value is None:
            continue
        totals["problems"][i] += 1
        for series in AT_K_SERIES:
            totals[series][i] += at_k[series][i]
