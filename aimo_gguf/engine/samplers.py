"""Which sampler each sequence gets, and one step's draw, on the engine's sampling path.

- ``batched`` (the default on the CPU): every sampling row of a step at once,
  in NumPy (``sampling.HostSampler``), the confidence signals from the same
  passes over the logits;
- ``chain``: llama.cpp's sampler chain per sequence over its logits row, and
  the confidence from ``confidence.token_signals`` (the path before the
  batched one, kept to compare them: ``aimo-gguf bench --samplers``);
- ``backend``: llama.cpp samples inside ``llama_decode``
  (``llama_samplers.BackendChain``), on the device that holds the output
  layer; the step copies back a token and the confidence's few numbers per
  sequence, not its logits. The default when the output layer is on a GPU and
  the build has backend sampling.

On every path a request with a grammar or a finite logit bias keeps a host
chain of llama.cpp's (the only one with grammars), its row's confidence
computed with the others'.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import EngineError
from .api import SAMPLER_AUTO, SAMPLER_BACKEND, SAMPLER_BATCHED, EngineStats, Request
from .confidence import ConfidenceSettings, token_signals
from .llama import LlamaContext, LlamaModel
from .llama_samplers import BackendChain, SamplerChain, backend_available
from .sampling import HostSampler, RowSampler, StepSignals
from .slot import Slot


def resolve_path(path: str, *, output_on_gpu: bool) -> str:
    """``auto``: backend sampling where the output layer is on a GPU and the build can, else batched."""
    if path != SAMPLER_AUTO:
        return path
    return SAMPLER_BACKEND if output_on_gpu and backend_available() else SAMPLER_BATCHED


class Samplers:
    """The samplers of one engine's sequences, one per slot, and the draw of a step."""

    def __init__(self, *, path: str, context: LlamaContext, model: LlamaModel, n_slots: int,
                 masked: tuple[int, ...], confidence: ConfidenceSettings | None) -> None:
        if path == SAMPLER_BACKEND and not backend_available():
            raise EngineError("this llama.cpp build cannot sample inside llama_decode: use --sampler batched")
        self.path = path
        self._context, self._model = context, model
        self._slots: list[SamplerChain | BackendChain | RowSampler | None] = [None] * n_slots
        self._masked = masked
        self._masked_ids = np.asarray(masked, dtype=np.int64)  # one array: a step masks every row's at once
        self._top_k = confidence.top_k if confidence is not None else None
        self._host = HostSampler(model.n_vocab, top_k=self._top_k) if path == SAMPLER_BATCHED else None
        self._scratch: np.ndarray | None = None  # token_signals' log-sum-exp buffer, made once

    # --- the slots' samplers --------------------------------------------------------------------------

    def admit(self, seq_id: int, request: Request) -> None:
        """Give a new sequence its sampler."""
        self.release(seq_id)
        sampling, n_vocab = request.sampling, self._model.n_vocab
        if self.path == SAMPLER_BATCHED and RowSampler.handles(sampling):
            self._slots[seq_id] = RowSampler.create(sampling, request.seed, masked=self._masked_ids, n_vocab=n_vocab)
            return
        if self.path == SAMPLER_BACKEND and sampling.grammar is None:
            chain = BackendChain(sampling, request.seed, n_vocab=n_vocab, masked=self._masked, top_k=self._top_k)
            if chain.attach(self._context, seq_id):
                self._slots[seq_id] = chain
                return
            chain.close()  # llama.cpp would not take it (a row split over GPUs): the host chain instead
        self._slots[seq_id] = SamplerChain(sampling, request.seed, n_vocab=n_vocab, masked=self._masked,
                                           vocab=self._model.vocab)

    def release(self, seq_id: int) -> None:
        sampler, self._slots[seq_id] = self._slots[seq_id], None
        if sampler is not None and not isinstance(sampler, RowSampler):
            sampler.close()  # a backend chain detaches from the context first

    def close(self) -> None:
        for seq_id in range(len(self._slots)):
            self.release(seq_id)

    # --- the draw ----------------------------------------------------------------------------------------

    def draw(self, sampling: list[Slot], stats: EngineStats) -> tuple[list[int], StepSignals | None]:
        """One token for each sequence of ``sampling`` (in batch order: row i of the step's outputs is
        sampling[i]'s), and their confidence signals when the engine computes them. Adds the time taken
        to ``stats.draw_seconds`` and ``stats.confidence_seconds``."""
        t0 = time.perf_counter()
        if self.path == SAMPLER_BATCHED:
            tokens, signals = self._draw_batched(sampling)
            spent = self._host.confidence_seconds
            self._host.confidence_seconds = 0.0
        else:
            tokens, spent, signals = self._draw_each(sampling)
        stats.draw_seconds += time.perf_counter() - t0 - spent
        stats.confidence_seconds += spent
        return tokens, signals

    def _draw_batched(self, sampling: list[Slot]) -> tuple[list[int], StepSignals | None]:
        context, slots = self._context, self._slots
        rows: list[RowSampler | None] = []
        given: list[int | None] = []
        for slot in sampling:
            sampler = slots[slot.seq_id]
            if isinstance(sampler, RowSampler):
                rows.append(sampler)
                given.append(None)
            else:  # a grammar's chain reads the row before the batched sampler masks anything in it
                rows.append(None)
                given.append(sampler.sample(context, slot.logit_index))
        return self._host.sample(context.logits(len(sampling)), rows, given)

    def _draw_each(self, sampling: list[Slot]) -> tuple[list[int], float, StepSignals | None]:
        """The chain and backend paths: each sequence's own sampler, then the signals."""
        context, slots = self._context, self._slots
        tokens = [slots[slot.seq_id].sample(context, slot.logit_index) for slot in sampling]
        if self._top_k is None or not sampling:
            return tokens, 0.0, None
        t0 = time.perf_counter()
        n, k = len(sampling), self._top_k
        values = [slots[slot.seq_id].values(context, slot.logit_index)
                  if isinstance(slots[slot.seq_id], BackendChain) else None for slot in sampling]
        host = [i for i in range(n) if values[i] is None]
        entropy, confidence, logprob = np.empty(n), np.empty(n), np.empty(n)
        if host:
            if any(isinstance(slots[sampling[i].seq_id], BackendChain) for i in host):
                raise EngineError("llama.cpp's backend sampling returned no confidence values for a sequence")
            if self._scratch is None:
                self._scratch = np.empty((min(8, len(slots)), self._model.n_vocab), dtype=np.float32)
            rows = context.logits(n)
            h, c, lp = token_signals(rows[host] if len(host) < n else rows, [tokens[i] for i in host], k,
                                     scratch=self._scratch)
            entropy[host], confidence[host], logprob[host] = h, c, lp
        device = [i for i in range(n) if values[i] is not None]
        if device:
            v = np.stack([values[i] for i in device])
            with np.errstate(divide="ignore"):
                top_lp = np.log(v[:, :k])
                logprob[device] = np.log(v[:, k])
            entropy[device] = -(v[:, :k] * top_lp).sum(axis=1)
            confidence[device] = -top_lp.mean(axis=1)
        signals = StepSignals(entropy.tolist(), confidence.tolist(), logprob.tolist())
        return tokens, time.perf_counter() - t0, signals
