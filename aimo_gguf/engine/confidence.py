"""Confidence signals from the model's own next-token distributions, summary-only.

For every generated token, from the logits row it was sampled from (the raw
model distribution: before temperature, top-k/p, min-p and the EOS mask):

- ``entropy``: ``-sum(p * log p)`` over the top-k tokens, with ``p`` from the
  *full* distribution, not renormalized over the k (how the AIMO3 pipelines
  compute it from vLLM's top-5 log-probabilities);
- ``confidence``: DeepConf's token confidence, minus the mean of the top-k
  log-probabilities (arXiv 2508.15260): high when the model is sure;
- ``logprob``: the sampled token's log-probability.

``token_signals`` computes them for a whole step at once over the (rows x
vocabulary) logits, in NumPy; a ``Tracker`` per sequence keeps only running
aggregates (means, the lowest sliding-window "group" confidence, the last
window before the end), so a sample's memory does not grow with its length.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_K = 5  # as the AIMO3 pipelines take log-probabilities from vLLM
DEFAULT_GROUP_WINDOW = 2048  # DeepConf's sliding window
DEFAULT_TAIL_WINDOW = 2048  # the tokens just before the end
_ROWS_PER_CHUNK = 8  # rows exponentiated at once: bounds the scratch buffer to 8 x vocabulary floats
_REPEATED_ARGMAX_UP_TO = 8  # top-k by k argmax passes (cheap for small k), else argpartition


@dataclass(frozen=True, slots=True)
class ConfidenceSettings:
    """What the engine computes per token and how a sequence aggregates it."""

    top_k: int = DEFAULT_TOP_K
    group_window: int = DEFAULT_GROUP_WINDOW  # tokens per sliding window of the group confidence
    tail_window: int = DEFAULT_TAIL_WINDOW  # tokens before the end that the tail values average

    def __post_init__(self) -> None:
        for name in ("top_k", "group_window", "tail_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Confidence:
    """A finished sample's confidence aggregates (all over its generated tokens; tool output excluded)."""

    tokens: int  # generated tokens the aggregates cover
    mean_entropy: float  # mean top-k entropy (nats): low = sure
    mean_confidence: float  # mean DeepConf token confidence: high = sure
    mean_logprob: float  # mean log-probability of the sampled tokens
    lowest_group_confidence: float  # lowest mean confidence over any full window (the mean if shorter)
    tail_entropy: float  # mean entropy over the last tail_window tokens
    tail_confidence: float  # mean confidence over the last tail_window tokens

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


class Tracker:
    """Running aggregates of one sequence; fixed size whatever its length."""

    __slots__ = ("settings", "n", "sum_entropy", "sum_confidence", "sum_logprob", "_group", "_group_sum",
                 "lowest_group", "_tail_h", "_tail_c", "_tail_h_sum", "_tail_c_sum")

    def __init__(self, settings: ConfidenceSettings) -> None:
        self.settings = settings
        self.n = 0
        self.sum_entropy = self.sum_confidence = self.sum_logprob = 0.0
        self._group: deque[float] = deque()
        self._group_sum = 0.0
        self.lowest_group = math.inf  # over full windows only
        self._tail_h: deque[float] = deque()
        self._tail_c: deque[float] = deque()
        self._tail_h_sum = self._tail_c_sum = 0.0

    def add(self, entropy: float, confidence: float, logprob: float) -> None:
        """One generated token's signals."""
        self.n += 1
        self.sum_entropy += entropy
        self.sum_confidence += confidence
        self.sum_logprob += logprob
        s = self.settings
        group = self._group
        group.append(confidence)
        self._group_sum += confidence
        if len(group) > s.group_window:
            self._group_sum -= group.popleft()
        if len(group) == s.group_window:
            # Recomputed from the window now and then, so the running sum cannot drift.
            if self.n % s.group_window == 0:
                self._group_sum = math.fsum(group)
            self.lowest_group = min(self.lowest_group, self._group_sum / s.group_window)
        th, tc = self._tail_h, self._tail_c
        th.append(entropy)
        tc.append(confidence)
        self._tail_h_sum += entropy
        self._tail_c_sum += confidence
        if len(th) > s.tail_window:
            self._tail_h_sum -= th.popleft()
            self._tail_c_sum -= tc.popleft()
        if self.n % s.tail_window == 0:
            self._tail_h_sum, self._tail_c_sum = math.fsum(th), math.fsum(tc)

    @property
    def group_confidence(self) -> float | None:
        """The mean confidence of the last full window; None until a window is full."""
        if len(self._group) < self.settings.group_window:
            return None
        return self._group_sum / self.settings.group_window

    def result(self) -> Confidence | None:
        """The aggregates so far; None before the first token."""
        n = self.n
        if n == 0:
            return None
        mean_c = self.sum_confidence / n
        tail = len(self._tail_h)
        return Confidence(
            tokens=n, mean_entropy=self.sum_entropy / n, mean_confidence=mean_c,
            mean_logprob=self.sum_logprob / n,
            lowest_group_confidence=self.lowest_group if self.lowest_group != math.inf else mean_c,
            tail_entropy=self._tail_h_sum / tail, tail_confidence=self._tail_c_sum / tail,
        )


def token_signals(logits: np.ndarray, tokens: np.ndarray | list[int], k: int = DEFAULT_TOP_K, *,
                  scratch: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entropy, confidence and sampled-token log-probability for each row of ``logits``.

    ``logits`` is (rows, vocabulary) float32, ``tokens`` the token sampled from each row. The rows
    are read only (with k <= 8 the top-k search marks found entries and puts them back). Returns
    three float64 arrays of length rows.
    """
    rows, vocab = logits.shape
    tokens = np.asarray(tokens, dtype=np.int64)
    if rows == 0:
        empty = np.zeros(0)
        return empty, empty.copy(), empty.copy()
    k = min(k, vocab)
    r = np.arange(rows)
    # log-sum-exp of each full row, a chunk of rows at a time
    lse = np.empty(rows, dtype=np.float64)
    if scratch is None or scratch.shape[1] != vocab:
        scratch = np.empty((min(rows, _ROWS_PER_CHUNK), vocab), dtype=np.float32)
    peak = logits.max(axis=1)
    for start in range(0, rows, scratch.shape[0]):
        stop = min(rows, start + scratch.shape[0])
        buf = scratch[:stop - start]
        np.subtract(logits[start:stop], peak[start:stop, None], out=buf)
        np.exp(buf, out=buf)
        lse[start:stop] = peak[start:stop] + np.log(buf.sum(axis=1, dtype=np.float64))
    # the k largest logits of each row
    if k <= _REPEATED_ARGMAX_UP_TO:
        work = logits if logits.flags.writeable else logits.copy()
        idx = np.empty((rows, k), dtype=np.int64)
        top = np.empty((rows, k), dtype=np.float32)
        found = 0
        try:
            for j in range(k):
                i = work.argmax(axis=1)
                idx[:, j] = i
                top[:, j] = work[r, i]
                work[r, i] = -np.inf
                found += 1
        finally:
            for j in reversed(range(found)):  # put back what was marked (last first: a row with fewer
                work[r, idx[:, j]] = top[:, j]  # than k finite logits marks one index twice), also after an interrupt
    else:
        top = np.partition(logits, vocab - k, axis=1)[:, vocab - k:]
    top_lp = top.astype(np.float64) - lse[:, None]
    entropy = -(np.exp(top_lp) * top_lp).sum(axis=1)
    confidence = -top_lp.mean(axis=1)
    logprob = logits[r, tokens].astype(np.float64) - lse
    return entropy, confidence, logprob
