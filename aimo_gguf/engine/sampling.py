"""Sampling every sequence of a step at once, in NumPy, with the confidence signals from the same passes.

llama.cpp's sampler chain copies a sequence's logits row into a candidate array
of the whole vocabulary and filters and sorts it, once per sequence and step:
at gpt-oss's 201,088 tokens that is the biggest part of a step's host work. Here
one ``sample`` call takes the step's (rows x vocabulary) logits and does, per
row, a few vectorized passes that serve both the draw and the confidence:

1. the largest logit of each of ``LANES`` interleaved lanes (one pass): the
   row's peak, and its k largest logits are in the k lanes with the largest
   maxima (a gather of k x vocabulary / LANES entries instead of a sort);
2. ``exp`` of the row (one pass, shifted by the peak only when it is far from
   0) and its sums over blocks of ``BLOCK`` consecutive tokens (a matrix
   product, about free): the log-sum-exp the confidence needs, and an inverse
   CDF over the blocks, so a draw from ``softmax(logits)`` reads one block.

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
BLOCK = 128  # consecutive tokens per block of the inverse CDF
CHUNK_ROWS = 8  # rows exponentiated at once: bounds the scratch buffer to 8 x vocabulary floats
REJECTION_TRIES = 4  # draws before a row is sampled exactly from its candidates
_SAFE_EXP = 40.0  # |peak| below this: exp(logits) unshifted cannot overflow a block sum nor lose mass
_LOG2E = np.float32(1 / math.log(2))  # exp(x) is computed as exp2(x log2 e): numpy's exp2 is twice as fast


@dataclass(slots=True)
class RowSampler:
    """One sequence's sampling on the host path: its parameters, its random stream, its masked tokens."""

    sampling: SamplingParams
    rng: np.random.Generator
    masked: np.ndarray  # token ids never drawn (end-of-generation tokens with ignore_eos, -inf biases)

    @classmethod
    def create(cls, sampling: SamplingParams, seed: int, *, masked: np.ndarray, n_vocab: int) -> RowSampler:
        """``masked``: the tokens every sequence masks (kept as the same array, so a step masks them at once)."""
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
    """The confidence signals of one step's rows (see ``aimo_gguf.engine.confidence``)."""

    entropy: np.ndarray
    confidence: np.ndarray
    logprob: np.ndarray


class HostSampler:
    """Samples a step's rows together; with ``top_k`` set, also computes their confidence signals."""

    def __init__(self, n_vocab: int, *, top_k: int | None) -> None:
        self.n_vocab = n_vocab
        self.top_k = None if top_k is None else min(top_k, n_vocab)
        self.n_blocks = -(-n_vocab // BLOCK)
        self.lanes_end = n_vocab - n_vocab % LANES  # the lanes cover [0, lanes_end); the tail is scanned whole
        self._exp = np.zeros((CHUNK_ROWS, self.n_blocks * BLOCK), dtype=np.float32)  # padding stays 0
        self._ones = np.ones(BLOCK, dtype=np.float32)
        self.confidence_seconds = 0.0  # of the time in ``sample``, what only the signals needed

    def sample(self, logits: np.ndarray, rows: list[RowSampler | None], given: list[int | None]
               ) -> tuple[list[int], StepSignals | None]:
        """Tokens for ``rows`` of ``logits`` (rows x vocabulary float32, written to and restored), and their
        signals. A row whose sampler is None keeps its ``given`` token (drawn by llama.cpp's chain)."""
        n = len(rows)
        tokens = list(given)
        signals = None
        if self.top_k is not None:
            signals = StepSignals(np.empty(n), np.empty(n), np.empty(n))
        for start in range(0, n, CHUNK_ROWS):
            stop = min(n, start + CHUNK_ROWS)
            self._chunk(logits[start:stop], rows[start:stop], tokens, start, signals)
        return tokens, signals

    # --- one chunk of rows ------------------------------------------------------------------------------

    def _chunk(self, x: np.ndarray, rows: list[RowSampler | None], tokens: list, offset: int,
               signals: StepSignals | None) -> None:
        n = x.shape[0]
        masked = _Masks(x, rows)
        try:
            lane_max = self._lane_max(x)
            peak = lane_max.max(axis=1)
            if self.lanes_end < self.n_vocab:
                peak = np.maximum(peak, x[:, self.lanes_end:].max(axis=1))
            kinds = [_kind(r) for r in rows]
            cum = shift = None
            if signals is not None or _REJECT in kinds:
                t0 = time.perf_counter()
                # In powers of two, so that exp2(x log2 e - shift) stays exact to float rounding.
                shift = np.where(np.abs(peak) < _SAFE_EXP, 0.0, np.round(peak * _LOG2E)).astype(np.float32)
                cum = self._block_sums(x, shift)
                if _REJECT not in kinds:
                    self.confidence_seconds += time.perf_counter() - t0
            greedy = [i for i in range(n) if kinds[i] == _GREEDY]
            if len(greedy) == n:
                tokens[offset:offset + n] = x.argmax(axis=1).tolist()
            else:
                for i in greedy:
                    tokens[offset + i] = int(x[i].argmax())
            reject = [i for i in range(n) if kinds[i] == _REJECT]
            if reject:
                for i, token in zip(reject, self._reject(x, reject, rows, peak, cum), strict=True):
                    tokens[offset + i] = token
            for i in range(n):
                if kinds[i] == _TOP_K:
                    ids = self._top(x, i, lane_max, rows[i].sampling.top_k)
                    tokens[offset + i] = _draw_explicit(x[i, ids], ids, rows[i].sampling, rows[i].rng)
                elif kinds[i] == _EXACT:
                    tokens[offset + i] = _draw_exact(x[i], rows[i].sampling, rows[i].rng, peak[i])
            if signals is not None:
                t0 = time.perf_counter()
                self._signals(x, masked, lane_max, shift, cum, tokens[offset:offset + n], signals, offset)
                self.confidence_seconds += time.perf_counter() - t0
        finally:
            masked.undo(x)

    def _lane_max(self, x: np.ndarray) -> np.ndarray:
        """The largest logit of each lane (token id mod LANES), per row: (rows, LANES)."""
        n, end = x.shape[0], self.lanes_end
        if end == 0:
            return np.full((n, 1), -np.inf, dtype=np.float32)
        return x[:, :end].reshape(n, end // LANES, LANES).max(axis=1)

    def _block_sums(self, x: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """exp(logits) / 2^shift into the scratch buffer, and its running sums over blocks (float64)."""
        n, v = x.shape[0], self.n_vocab
        e = self._exp[:n]
        np.multiply(x, _LOG2E, out=e[:, :v])
        if shift.any():
            np.subtract(e[:, :v], shift[:, None], out=e[:, :v])
        np.exp2(e[:, :v], out=e[:, :v])
        sums = np.matmul(e.reshape(n, self.n_blocks, BLOCK), self._ones)
        return np.cumsum(sums, axis=1, dtype=np.float64)

    # --- the draw ---------------------------------------------------------------------------------------

    def _reject(self, x: np.ndarray, idx: list[int], rows: list, peak: np.ndarray, cum: np.ndarray) -> list[int]:
        """The first proposal of every rejection row at once; the rows it does not settle go on alone."""
        r = np.asarray(idx)
        u = np.array([rows[i].rng.random() for i in idx])
        c = cum[r]
        target = u * c[:, -1]
        block = np.minimum((c <= target[:, None]).sum(axis=1), self.n_blocks - 1)
        e3 = self._exp[:x.shape[0]].reshape(x.shape[0], self.n_blocks, BLOCK)
        inside = np.cumsum(e3[r, block], axis=1, dtype=np.float64)
        inside += np.where(block > 0, c[np.arange(len(r)), block - 1], 0.0)[:, None]
        j = (inside <= target[:, None]).sum(axis=1)
        token = block * BLOCK + np.minimum(j, BLOCK - 1)
        xt = x[r, token]
        out = []
        for n, i in enumerate(idx):
            t = int(token[n])
            if j[n] >= BLOCK or not np.isfinite(xt[n]) or not self._accept(x, i, rows[i], peak[i], cum[i], t):
                t = self._draw(x, i, rows[i], peak[i], cum[i], REJECTION_TRIES - 1)
            out.append(t)
        return out

    def _accept(self, x: np.ndarray, i: int, row: RowSampler, peak: float, cum: np.ndarray, token: int) -> bool:
        """Whether a proposal drawn from softmax(logits) stands for the chain's filtered, tempered draw."""
        s = row.sampling
        xt = x[i, token]
        floor = _floor(peak, s.min_p)
        if floor is not None and xt < floor:
            return False
        if s.temperature != 1:
            x_ref = float(peak) if s.temperature < 1 else float(floor)
            if row.rng.random() >= math.exp((float(xt) - x_ref) * (1.0 / s.temperature - 1.0)):
                return False
        e = self._exp[i, :self.n_vocab]
        return s.top_p >= 1 or _in_nucleus(e, e[token], cum[-1], s.top_p)

    def _draw(self, x: np.ndarray, i: int, row: RowSampler, peak: float, cum: np.ndarray, tries: int) -> int:
        """Rejection sampling for one row, then its exact draw."""
        e = self._exp[i]
        for _ in range(tries):
            token = self._propose(e, cum, row.rng.random())
            if self._accept(x, i, row, peak, cum, token):
                return token
        return _draw_exact(x[i], row.sampling, row.rng, peak)

    def _propose(self, e: np.ndarray, cum: np.ndarray, u: float) -> int:
        """A token drawn from the row's exp(logits) by inverse CDF: find the block, then the token in it."""
        target = u * cum[-1]
        block = min(int(np.searchsorted(cum, target, side="right")), self.n_blocks - 1)
        start = block * BLOCK
        inside = np.cumsum(e[start:start + BLOCK], dtype=np.float64)
        inside += cum[block - 1] if block else 0.0
        j = int(np.searchsorted(inside, target, side="right"))
        if j >= BLOCK or e[start + j] == 0:  # rounding put the target past the block's last token: take it
            j = int(np.flatnonzero(e[start:start + BLOCK])[-1])
        return start + j

    def _top(self, x: np.ndarray, i: int, lane_max: np.ndarray, k: int) -> np.ndarray:
        """The token ids of the k largest logits of row i (in no order)."""
        end, v = self.lanes_end, self.n_vocab
        if k >= v:
            return np.arange(v)
        if k >= LANES // 4 or end == 0:
            return np.argpartition(x[i], v - k)[v - k:]
        lanes = np.argpartition(lane_max[i], LANES - k)[LANES - k:]
        ids = (np.arange(0, end, LANES)[:, None] + lanes[None, :]).ravel()
        if end < v:
            ids = np.concatenate((ids, np.arange(end, v)))
        return ids[np.argpartition(x[i, ids], len(ids) - k)[len(ids) - k:]]

    def _top_values(self, x: np.ndarray, lane_max: np.ndarray, k: int) -> np.ndarray:
        """The k largest logits of every row (rows, k), float64, in no order."""
        n, end, v = x.shape[0], self.lanes_end, self.n_vocab
        if k >= LANES // 4 or end == 0:
            return np.partition(x, v - k, axis=1)[:, v - k:].astype(np.float64)
        lanes = np.argpartition(lane_max, LANES - k, axis=1)[:, LANES - k:]
        blocks = x[:, :end].reshape(n, end // LANES, LANES)
        values = np.take_along_axis(blocks, lanes[:, None, :], axis=2).reshape(n, -1)
        if end < v:
            values = np.concatenate((values, x[:, end:]), axis=1)
        return np.partition(values, values.shape[1] - k, axis=1)[:, -k:].astype(np.float64)

    # --- the confidence ---------------------------------------------------------------------------------

    def _signals(self, x, masked, lane_max, shift, cum, tokens, out: StepSignals, offset: int) -> None:
        """Entropy, confidence and log-probability of the sampled tokens, from the raw logits: the masks
        are undone in the arithmetic (``masked`` holds the masked tokens' own logits)."""
        k, n = self.top_k, x.shape[0]
        with np.errstate(divide="ignore"):
            lse = np.log(cum[:, -1]) + shift.astype(np.float64) * math.log(2)
        top = self._top_values(x, lane_max, k)
        value = x[np.arange(n), tokens].astype(np.float64)
        if masked.ids is not None:  # every row masks the same tokens (the end-of-generation ones)
            raw = masked.raw.astype(np.float64)
            lse = np.logaddexp(lse, np.logaddexp.reduce(raw, axis=1))
            both = np.concatenate((top, raw), axis=1)
            top = np.partition(both, both.shape[1] - k, axis=1)[:, -k:]
        for i, (ids, raw) in masked.rows.items():
            raw = raw.astype(np.float64)
            lse[i] = np.logaddexp(lse[i], np.logaddexp.reduce(raw))
            both = np.concatenate((top[i], raw))
            top[i] = np.partition(both, len(both) - k)[len(both) - k:]
        top_lp = top - lse[:, None]
        out.entropy[offset:offset + n] = -(np.exp(top_lp) * top_lp).sum(axis=1)
        out.confidence[offset:offset + n] = -top_lp.mean(axis=1)
        out.logprob[offset:offset + n] = value - lse


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


def _floor(peak: float, min_p: float) -> np.float32 | None:
    """min-p's least logit, computed as llama.cpp does (in float)."""
    return np.float32(peak) + np.float32(math.log(min_p)) if min_p > 0 else None


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


class _Masks:
    """The masked tokens of a chunk's rows, set to -inf in place, and their raw logits to undo it: one array
    for all rows when they share their mask (the engine's end-of-generation tokens), else per row."""

    __slots__ = ("ids", "raw", "rows")

    def __init__(self, x: np.ndarray, rows: list[RowSampler | None]) -> None:
        self.ids = self.raw = None
        self.rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        first = rows[0].masked if rows[0] is not None else None
        if first is not None and len(first) and all(r is not None and r.masked is first for r in rows):
            self.ids, self.raw = first, x[:, first]
            x[:, first] = -np.inf
            return
        for i, row in enumerate(rows):
            if row is not None and len(row.masked):
                self.rows[i] = (row.masked, x[i, row.masked])
                x[i, row.masked] = -np.inf

    def undo(self, x: np.ndarray) -> None:
        if self.ids is not None:
            x[:, self.ids] = self.raw
        for i, (ids, raw) in self.rows.items():
            x[i, ids] = raw
