"""The exact next-token distribution of llama.cpp's sampler chain, and a test of sampled counts against it.

``chain_distribution`` is written from llama.cpp's definitions, independently of the engine's samplers:
logit biases (masked tokens at -inf), top-k, top-p (the smallest prefix of the sorted candidates whose
softmax reaches p), min-p (logits at least the largest plus log p), temperature, softmax.

``chi_square_p`` is Pearson's goodness-of-fit test: tokens expected at least ``MIN_EXPECTED`` times are
bins of their own, the rest of the support one bin; its p-value comes from the Wilson-Hilferty
approximation of the chi-square distribution (no SciPy), good to a few percent in the tails used here.
A test that asserts ``p >= ALPHA`` fails a correct sampler with probability ALPHA for a random seed; the
tests use fixed seeds, so each is deterministic, and a failure means the counts are ALPHA-unlikely under
the exact distribution.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 1e-4  # per case: 30 cases together fail a correct sampler with probability at most 0.003
MIN_EXPECTED = 5.0


def chain_distribution(logits: np.ndarray, *, temperature: float, top_k: int, top_p: float, min_p: float,
                       masked=()) -> np.ndarray:
    """The probability of each token under llama.cpp's chain, in float64."""
    x = np.asarray(logits, dtype=np.float64).copy()
    x[list(masked)] = -np.inf
    p = np.zeros_like(x)
    if temperature <= 0:
        p[int(np.argmax(x))] = 1.0
        return p
    keep = np.argsort(-x, kind="stable")
    keep = keep[np.isfinite(x[keep])]
    if top_k > 0:
        keep = keep[:top_k]
    if top_p < 1:
        q = np.exp(x[keep] - x[keep[0]])
        cum = np.cumsum(q / q.sum())
        keep = keep[:int(np.searchsorted(cum, top_p)) + 1]
    if min_p > 0:
        keep = keep[x[keep] >= x[keep[0]] + math.log(min_p)]
    w = np.exp((x[keep] - x[keep[0]]) / temperature)
    p[keep] = w / w.sum()
    return p


def chi_square_p(counts: np.ndarray, p: np.ndarray) -> float:
    """The p-value of ``counts`` (per token) under the distribution ``p``; 0 when a count falls outside it."""
    n = counts.sum()
    if counts[p == 0].any():
        return 0.0
    expected = n * p
    big = expected >= MIN_EXPECTED
    obs = list(counts[big]) + [counts[~big & (p > 0)].sum()]
    exp = list(expected[big]) + [expected[~big & (p > 0)].sum()]
    obs, exp = np.array(obs, dtype=np.float64), np.array(exp, dtype=np.float64)
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    dof = len(exp) - 1
    if dof < 1:
        return 1.0
    stat = float(((obs - exp) ** 2 / exp).sum())
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))
