"""Sampling a step's sequences on the host, in NumPy, with the confidence signals from the same passes.

llama.cpp's sampler chain copies a sequence's logits row into a candidate array
of the whole vocabulary and filters and sorts it, once per sequence and step,
and the confidence signals read the row again: at gpt-oss's 201,088 tokens that
is most of a step's host work. Here one ``sample`` call takes the step's (rows x
vocabulary) logits and makes, per row, a few vectorized passes that serve both
the draw and the confidence (a row at a time: its exponentials stay in the
cache for the next pass, and a dozen NumPy calls a row cost less than the
indexing that a batch-wide version needs):

1. ``exp`` of the row: the only read of the logits; the exponentials stay in
   the cache for the rest (shifted only when the peak is far from 0). Not
   ``exp2(x log2 e)``, though numpy's exp2 is faster when it runs at full speed:
   on this project's shared CPU a third of the processes ran it three times
   slower (exp was unaffected), and a draw's arithmetic must not depend on
   which process it lands in;
2. the largest exponential of each of ``LANES`` interleaved lanes: the row's
   peak, and its k largest logits are in the k lanes with the largest maxima (a
   gather of k x vocabulary / LANES entries instead of a sort);
3. the sums over blocks of ``BLOCK`` consecutive tokens (a matrix product):
   the log-sum-exp the confidence needs, and an inverse CDF over the blocks, so
   a draw from ``softmax(logits)`` reads one block.

The draw keeps llama.cpp's semantics exactly (its chain: logit bias, top-k,
top-p, min-p, temperature, a seeded draw): with top-k the k candidates are
found exactly and sampled from; without it, a token is drawn from the
unfiltered ``softmax(logits)`` and accepted with the probability that turns
that proposal into the filtered, tempered distribution (rejection sampling:
1 if it passes min-p and top-p, times ``exp((x - x_ref)(1/T - 1))`` for a
temperature other than 1). A row still rejected after ``REJECTION_TRIES``
draws is sampled exactly from its candidates. Either way each token follows
the chain's distribution; only the random stream differs (numpy's PCG64,
seeded with the request's seed, so a sample depends on its seed alone, not on
the batch). Greedy rows take the first largest logit, as llama.cpp does.

A request with a grammar or a finite logit bias keeps llama.cpp's chain
(``RowSampler.handles`` says which); its row still gets its confidence here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .api import SamplingParams

LANES = 2048  # interleaved lanes whose maxima bound where the k largest logits are
BLOCK = 512  # consecutive tokens per block of the inverse CDF
REJECTION_TRIES = 4  # draws before a row is sampled exactly from its candidates
# The largest exponential within these (a peak between about -55 and 69): unshifted, no block sum of BLOCK
# overflows a float and the tokens that matter stay normal floats. Beyond them, one more pass shifts them.
_SAFE_LOW, _SAFE_HIGH = 2.0 ** -80, 2.0 ** 100


@dataclass(slots=True)
class RowSampler:
    """One sequence's sampling on the host path: its parameters, its random stream, its masked tokens."""

    sampling: SamplingParams
    rng: np.random.Generator
    masked: np.ndarray  # token ids never drawn (end-of-generation tokens with ignore_eos, -inf biases)

    @classmethod
    def create(cls, sampling: SamplingParams, seed: int, *, masked: np.ndarray, n_vocab: int) -> RowSampler:
        """``masked``: the tokens every sequence masks (end-of-generation ones), with the request's -inf biases."""
        extra = [int(t) for t, b in sampling.logit_bias if b == float("-inf")]
        for t in extra:
            if not 0 <= t < n_vocab:
                raise InputError(f"logit bias on token {t}, which is not in the vocabulary (0 to {n_vocab - 1})")
        if extra:
            masked = np.union1d(masked, np.asarray(extra, dtype=np.int64))
        return cls(sampling, np.random.Generator(np.random.PCG64(seed & 0xFFFFFFFFFFFFFFFF)), masked)

    @staticmethod
    def handles(sampling: SamplingParams) -> bool:
        """What this path samples: no grammar, and logit biases only of -inf (a masked token)."""
        return sampling.grammar is None and all(b == float("-inf") for _, b in sampling.logit_bias)


@dataclass(slots=True)
class StepSignals:
    """The confidence signals of one step's rows, in row order (see ``aimo_gguf.engine.confidence``)."""

    entropy: list[float]
    confidence: list[float]
    logprob: list[float]


class HostSampler:
    """Samples a step's rows; with ``top_k`` set, also computes their confidence signals."""

    def __init__(self, n_vocab: int, *, top_k: int | None) -> None:
        self.n_vocab = n_vocab
        self.top_k = None if top_k is None else min(top_k, n_vocab)
        self.lanes_end = n_vocab - n_vocab % LANES  # the logits' lanes cover [0, lanes_end); the tail is apart
        # One row's exponentials, padded with zeros (never written) to whole lanes: no tail to treat apart.
        padded = -(-n_vocab // LANES) * LANES
        self._exp = np.zeros(padded, dtype=np.float32)
        self.n_blocks = padded // BLOCK
        self._blocks = self._exp.reshape(self.n_blocks, BLOCK)
        self._exp_lanes = self._exp.reshape(padded // LANES, LANES)
        self._ones = np.ones(BLOCK, dtype=np.float32)
        self._lane_starts = np.arange(0, padded, LANES)[:, None]  # + a lane: its token ids
        self._tail = np.arange(self.lanes_end, n_vocab)
        self.confidence_seconds = 0.0  # of the time in ``sample``, what only the signals needed

    def sample(self, logits: np.ndarray, rows: list[RowSampler | None], given: list[int | None]
               ) -> tuple[list[int], StepSignals | None]:
        """Tokens for ``rows`` of ``logits`` (rows x vocabulary float32, written to and restored), and their
        signals. A row whose sampler is None keeps its ``given`` token (drawn by llama.cpp's chain)."""
        tokens = list(given)
        out = None if self.top_k is None else StepSignals([], [], [])
        for i, row in enumerate(rows):
            x = logits[i]
            masked = row.masked if row is not None and len(row.masked) else None
            raw = x[masked] if masked is not None else None  # a copy: the masked tokens' own logits
            if masked is not None:
                x[masked] = -np.inf
            try:
                tokens[i], signals = self._row(x, row, tokens[i], raw)
            finally:
                if masked is not None:
                    x[masked] = raw
            if out is not None:
                out.entropy.append(signals[0])
                out.confidence.append(signals[1])
                out.logprob.append(signals[2])
        return tokens, out

    # --- one row ----------------------------------------------------------------------------------------

    def _row(self, x: np.ndarray, row: RowSampler | None, token: int | None, raw: np.ndarray | None
             ) -> tuple[int, tuple[float, float, float] | None]:
        """The row's token and signals; ``x`` has its masked tokens at -inf, ``raw`` their logits."""
        kind = _kind(row)
        weights = lanes = cum = None
        shift = 0.0
        if self.top_k is not None or kind == _REJECT:
            # The exponentials, read from the logits once: every later pass reads them from the cache.
            t0 = time.perf_counter()
            weights = self._exp
            lanes, peak, shift, cum = self._exponentials(x)
            if kind != _REJECT:
                self.confidence_seconds += time.perf_counter() - t0
        elif kind == _TOP_K:
            weights, lanes = x, self._lane_max(x)
        elif kind == _EXACT:
            peak = float(x.max())
        if kind == _GREEDY:
            token = int(x.argmax())
        elif kind == _TOP_K:
            ids = self._top(weights, lanes, row.sampling.top_k)
            token = _draw_explicit(x[ids], ids, row.sampling, row.rng)
        elif kind == _REJECT:
            token = self._draw(x, row, peak, cum)
        elif kind == _EXACT:
            token = _draw_exact(x, row.sampling, row.rng, peak)
        if self.top_k is None:
            return token, None
        t0 = time.perf_counter()
        signals = self._signals(x, lanes, shift, cum, token, raw)
        self.confidence_seconds += time.perf_counter() - t0
        return token, signals

    def _exponentials(self, x: np.ndarray) -> tuple[np.ndarray | None, float, float, np.ndarray]:
        """exp(logits - shift) into the scratch row; its lane maxima, the largest logit, the shift and the
        running sums over blocks (float64)."""
        e = self._exp[:self.n_vocab]
        with np.errstate(over="ignore"):  # a peak past 88 overflows: seen below, and shifted
            np.exp(x, out=e)
        lanes = self._exp_lanes.max(axis=0)
        lane = int(lanes.argmax())
        shift = 0.0
        if not _SAFE_LOW < lanes[lane] < _SAFE_HIGH:  # a peak out of range: shifted by it
            shift = float(np.float32(x.max()))
            np.subtract(x, np.float32(shift), out=e)
            np.exp(e, out=e)
            lanes = self._exp_lanes.max(axis=0)
            lane = int(lanes.argmax())
        peak = float(x[lane + LANES * int(self._exp_lanes[:, lane].argmax())])
        return lanes, peak, shift, np.cumsum(self._blocks @ self._ones, dtype=np.float64)

    def _lane_max(self, x: np.ndarray) -> np.ndarray | None:
        """The largest logit of each lane (token id mod LANES) of a row, the tail left out."""
        end = self.lanes_end
        return x[:end].reshape(end // LANES, LANES).max(axis=0) if end else None

    # --- the draw ---------------------------------------------------------------------------------------

    def _draw(self, x: np.ndarray, row: RowSampler, peak: float, cum: np.ndarray) -> int:
        """Rejection sampling from softmax(logits), then, if every try was rejected, the exact draw."""
        s, rng = row.sampling, row.rng
        floor = float(_floor(peak, s.min_p)) if s.min_p > 0 else None
        temp = s.temperature
        # The acceptance ratio exp((x - x_ref)(1/T - 1)) is at most 1 on the candidates: x_ref is their
        # largest logit below 1 and their least possible one (min-p's floor) above.
        x_ref = peak if temp <= 1 else floor
        e = self._exp
        total = cum[-1]
        for _ in range(REJECTION_TRIES):
            target = rng.random() * total
            block = min(int(cum.searchsorted(target, side="right")), self.n_blocks - 1)
            start = block * BLOCK
            inside = e[start:start + BLOCK].cumsum(dtype=np.float64)
            j = int(inside.searchsorted(target - (cum[block - 1] if block else 0.0), side="right"))
            if j >= BLOCK or e[start + j] == 0:  # rounding put the target past the block's last token: take it
                j = int(np.flatnonzero(e[start:start + BLOCK])[-1])
            token = start + j
            xt = float(x[token])
            if floor is not None and xt < floor:
                continue
            if temp != 1 and rng.random() >= math.exp((xt - x_ref) * (1.0 / temp - 1.0)):
                continue
            if s.top_p < 1 and not _in_nucleus(e[:self.n_vocab], e[token], total, s.top_p):
                continue
            return token
        return _draw_exact(x, s, rng, peak)

    def _top(self, v: np.ndarray, lanes: np.ndarray | None, k: int) -> np.ndarray:
        """The token ids of the k largest values of row ``v`` (in no order): they are in the k lanes with the
        largest maxima. ``v`` is the logits (then the tail past the lanes is searched too) or the padded
        exponentials (the padding's zeros are dropped should they make the k)."""
        n = self.n_vocab
        if k >= n:
            return np.arange(n)
        if k >= LANES // 4 or lanes is None:
            return v[:n].argpartition(n - k)[n - k:]
        starts = self._lane_starts if v is self._exp else self._lane_starts[:self.lanes_end // LANES]
        ids = (starts + lanes.argpartition(LANES - k)[LANES - k:]).ravel()
        if v is not self._exp and self.lanes_end < n:
            ids = np.concatenate((ids, self._tail))
        top = ids[v[ids].argpartition(len(ids) - k)[len(ids) - k:]]
        return top if v is not self._exp or top.max() < n else top[top < n]

    # --- the confidence ---------------------------------------------------------------------------------

    def _signals(self, x, lanes, shift, cum, token, raw) -> tuple[float, float, float]:
        """Entropy, confidence and the sampled token's log-probability, of the raw row: the masks are undone
        in the arithmetic (``raw`` holds the masked tokens' own logits; a sampled token is never one)."""
        k = self.top_k
        total = float(cum[-1])
        lse = math.log(total) + shift if total > 0 else -math.inf
        top = x[self._top(self._exp, lanes, k)].tolist()  # found among the exponentials, read exactly
        if raw is not None:
            masked = raw.tolist()
            peak = max(lse, max(masked))
            mass = math.exp(lse - peak)
            for r in masked:
                mass += math.exp(r - peak)
            lse = peak + math.log(mass)
            top = sorted(top + masked)[-k:]
        entropy = confidence = 0.0
        for t in top:
            lp = t - lse
            confidence -= lp
            if lp > -math.inf:
                entropy -= math.exp(lp) * lp
        return entropy, confidence / len(top), float(x[token]) - lse


_GIVEN, _GREEDY, _TOP_K, _REJECT, _EXACT = range(5)


def _kind(row: RowSampler | None) -> int:
    """How a row is drawn: not here, greedy, from its top-k, by rejection, or exactly over the row."""
    if row is None:
        return _GIVEN
    s = row.sampling
    if s.temperature <= 0:
        return _GREEDY
    if s.top_k > 0:
        return _TOP_K
    if s.temperature > 1 and s.min_p <= 0:
        return _EXACT  # no bound on the acceptance ratio: the tempered weights of the whole row
    return _REJECT


def _floor(peak: float, min_p: float) -> np.float32:
    """min-p's least logit, computed as llama.cpp does (in float)."""
    return np.float32(peak) + np.float32(math.log(min_p))


# --- per row, exactly ------------------------------------------------------------------------------------------


def _draw_explicit(values: np.ndarray, ids: np.ndarray, s: SamplingParams, rng: np.random.Generator) -> int:
    """llama.cpp's chain on a few candidates (the top-k): top-p, min-p, temperature, one draw."""
    order = np.argsort(-values, kind="stable")
    values, ids = values[order].astype(np.float64), ids[order]
    keep = np.isfinite(values)
    values, ids = values[keep], ids[keep]
    if len(values) == 0:
        return int(ids[0]) if len(ids) else 0
    if s.top_p < 1:
        p = np.exp(values - values[0])
        cum = np.cumsum(p / p.sum())
        values, ids = values[:int(np.searchsorted(cum, s.top_p)) + 1], ids[:int(np.searchsorted(cum, s.top_p)) + 1]
    if s.min_p > 0:
        floor = np.float32(values[0]) + np.float32(math.log(s.min_p))
        n = max(1, int((values >= floor).sum()))
        values, ids = values[:n], ids[:n]
    return int(ids[_pick((values - values[0]) / s.temperature, rng.random())])


def _draw_exact(row: np.ndarray, s: SamplingParams, rng: np.random.Generator, peak: float) -> int:
    """The whole row's candidates explicitly (what rejection sampling could not settle)."""
    keep = np.isfinite(row)
    if s.min_p > 0:
        keep &= row >= np.float32(peak) + np.float32(math.log(s.min_p))
    ids = np.flatnonzero(keep)
    if s.top_p < 1:
        return _draw_explicit(row[ids], ids, SamplingParams(temperature=s.temperature, top_k=0, top_p=s.top_p,
                                                              min_p=0.0), rng)
    return int(ids[_pick((row[ids].astype(np.float64) - peak) / s.temperature, rng.random())])


def _pick(scaled: np.ndarray, u: float) -> int:
    """The index drawn from softmax(scaled) by the uniform ``u``."""
    w = np.exp(scaled - scaled.max())
    cum = np.cumsum(w)
    return min(int(np.searchsorted(cum, u * cum[-1], side="right")), len(w) - 1)


def _in_nucleus(e: np.ndarray, et: float, total: float, top_p: float) -> bool:
    """Whether a token of weight ``et`` is in the top-p set: the mass strictly above it is below p."""
    return float(e[e > et].sum(dtype=np.float64)) < top_p * total
