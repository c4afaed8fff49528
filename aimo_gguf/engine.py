"""The batched llama.cpp engine: the only module that touches llama_cpp's C API.

One context holds up to ``batch_size`` sequences. Every step builds one
``llama_batch`` with the next token of every active sequence (or a chunk of a
prompt) and runs one ``llama_decode``; each sequence then samples its next
token with its own sampler chain from its own row of logits.

- Continuous batching: a sequence that ends frees its slot, and the slot takes
  the next pending request before the next step.
- Prompt sharing: requests with the same ``prefix_key`` (the samples of one
  problem) share the prompt's KV cells. The first one decodes the prompt; the
  others copy its cells with ``llama_memory_seq_cp`` and decode only the last
  prompt token, which gives them their own logits.
- KV admission: a request starts only when its prompt and token budget fit in
  its slot (per-sequence KV) or in the free cells (unified KV). A decode that
  still reports no free KV slot preempts the youngest sequence and retries.
- Ownership: the engine creates and frees the model, the context, the batch and
  every sampler chain (``close()`` or the ``with`` statement).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from pathlib import Path

import llama_cpp
import numpy as np

from .errors import EngineError, InputError, ModelError
from .models import check_gguf

DEFAULT_BATCH_SIZE = 16
DEFAULT_CTX = 0  # per sequence; 0 = prompt allowance + max tokens
PROMPT_ALLOWANCE = 512  # tokens kept for the prompt when --ctx is automatic
DEFAULT_TOKEN_BUDGET = 2048  # most tokens in one llama_decode (prompt chunks + one per sequence)

FINISH_EOS = "eos"  # the model emitted an end-of-generation token
FINISH_STOP = "stop"  # a stop string appeared
FINISH_LENGTH = "length"  # the token budget (or the sequence's KV room) ran out
FINISH_CANCELLED = "cancelled"  # the caller set request.cancelled
FINISH_TOO_LONG = "too_long"  # the prompt does not fit in one sequence's context
FINISH_KV_FULL = "kv_full"  # the KV cache could not hold even this one sequence

FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}

KV_TYPES = {  # --kv-type: element type of the K and V caches
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}

# llama.cpp's C log goes through this callback: silent unless verbose, but the
# last error lines are kept so a failed load can say why.
_log = {"verbose": False, "errors": deque(maxlen=8)}
_GGML_LOG_LEVEL_ERROR = 3


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if _log["verbose"]:
        print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)
    elif level == _GGML_LOG_LEVEL_ERROR:
        _log["errors"].append(text.decode("utf-8", "replace").strip())


llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def set_verbose(verbose: bool) -> None:
    """Let llama.cpp's own log through to stderr (``--verbose``), or keep it quiet."""
    _log["verbose"] = verbose


def _last_c_error() -> str:
    errors = [e for e in _log["errors"] if e]
    return f": {errors[-1]}" if errors else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """How one sequence picks its tokens. ``temperature <= 0`` is greedy."""

    temperature: float = 0.7
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    min_p: float = 0.05  # 0.0 = off


@dataclass(slots=True, eq=False)
class Request:
    """One sequence to generate: a prompt, a budget and a sampler seed."""

    key: Hashable  # the caller's handle, returned in the Completion
    prompt: Sequence[int]  # token ids, BOS included when the model wants one
    max_tokens: int
    seed: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    prefix_key: Hashable | None = None  # requests with equal keys share the prompt's KV
    cancelled: bool = False  # set by the caller to end the sequence at the next step
    tool: ToolHook | None = None  # pauses the sequence for a tool call, then injects its output


class ToolHook(Protocol):
    """What the engine needs from a tool (``aimo_gguf.tir`` has the Python one).

    After each sampled piece of text the engine asks ``wants_call``; on True the
    sequence pauses with its KV cache kept, and ``start`` gets the text so far.
    The engine polls (without waiting) at every step, other sequences decoding
    meanwhile; the text ``poll`` returns is decoded into the sequence, which
    then generates on. ``reset`` is called if the sequence restarts from its
    prompt (a KV preemption).
    """

    def wants_call(self, text: bytearray, piece: bytes) -> bool: ...

    def start(self, text: str) -> None: ...

    def poll(self) -> str | None: ...

    def reset(self) -> None: ...


@dataclass(slots=True)
class Completion:
    """A finished sequence."""

    request: Request
    text: str  # generated text, end-of-generation token and stop string excluded
    tokens: list[int]  # generated token ids, in order
    finish_reason: str  # one of the FINISH_* constants


@dataclass(slots=True)
class EngineStats:
    """Running counters of the engine, readable at any time."""

    prompt_tokens: int = 0  # prompt tokens decoded (a shared prefix counts once)
    shared_prompt_tokens: int = 0  # prompt tokens taken from another sequence's KV instead
    generated_tokens: int = 0
    steps: int = 0  # llama_decode calls that succeeded
    sequence_steps: int = 0  # sequences in those decodes, summed: occupancy = sequence_steps / steps
    decode_seconds: float = 0.0  # time inside llama_decode
    injected_tokens: int = 0  # tool output decoded into paused sequences
    tool_pauses: int = 0  # sequences paused for a tool call
    sample_seconds: float = 0.0  # time inside the sampler chains
    step_seconds: float = 0.0  # whole steps: batch building, decode, sampling, bookkeeping
    kv_preemptions: int = 0  # sequences put back in the queue after a full-KV decode
    finish_reasons: Counter = field(default_factory=Counter)  # completions by FINISH_* reason


@dataclass(frozen=True, slots=True)
class LoadInfo:
    """What the engine loaded and how."""

    model_path: str
    description: str  # llama.cpp's model description, e.g. "llama ?B Q4_1"
    n_layers: int
    n_params: int
    size_bytes: int
    n_gpu_layers_requested: int
    n_gpu_layers: int  # layers actually offloaded (0 = CPU only)
    gpu_offload_supported: bool
    n_ctx_seq: int  # context of one sequence
    n_seq_max: int
    kv_unified: bool
    kv_type: str
    share_prompts: bool  # samples of a problem copy its prompt's KV instead of decoding it
    threads: int
    notes: tuple[str, ...]  # what the loader had to change, said once to the user
    load_seconds: float


def default_threads() -> int:
    """Physical cores where psutil can tell, else all logical CPUs."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:
        return os.cpu_count() or 1


def _gguf_block_count(path: Path) -> int | None:
    """Number of transformer blocks, read from the GGUF header (None if unreadable)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch = reader.fields["general.architecture"]
        name = bytes(arch.parts[arch.data[0]]).decode()
        field_ = reader.fields[f"{name}.block_count"]
        return int(field_.parts[field_.data[0]][0])
    except Exception:
        return None


def _layer_ladder(requested: int, n_blocks: int | None) -> list[int]:
    """Layer counts to try, from the request down to CPU only, halving each time."""
    if requested == 0:
        return [0]
    start = requested if requested > 0 else (n_blocks + 1 if n_blocks else 999)
    ladder = [requested]
    n = start // 2
    while n > 0:
        if n not in ladder:
            ladder.append(n)
        n //= 2
    ladder.append(0)
    return ladder


class Engine:
    """A loaded GGUF model with one batched context. Use as a context manager."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_gpu_layers: int = 0,  # -1 = all layers
        ctx: int = 4096,  # context of one sequence, prompt included
        batch_size: int = DEFAULT_BATCH_SIZE,  # sequences decoded together
        threads: int | None = None,  # None = physical cores
        kv_unified: bool = False,  # one KV buffer for all sequences (see README: slower at large batch)
        share_prompts: bool | None = None,  # None = only with kv_unified, where the KV copy is metadata only
        flash_attn: str = "auto",
        kv_type: str = "f16",
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        stop: Sequence[str] = (),
        ignore_eos: bool = False,  # never end on EOS: the end-of-generation tokens are masked
        verbose: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if ctx < 16:
            raise InputError(f"context must be at least 16 tokens, got {ctx}")
        if flash_attn not in FLASH_ATTN:
            raise InputError(f"flash attention must be one of {', '.join(FLASH_ATTN)}, got {flash_attn!r}")
        if kv_type not in KV_TYPES:
            raise InputError(f"KV cache type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        if kv_type != "f16" and flash_attn == "off":
            raise InputError(f"a {kv_type} KV cache needs flash attention: use --flash-attn auto or on")
        self._model = None
        self._ctx = None
        self._batch = None
        self._slots: list[_Slot] = []
        set_verbose(verbose)
        path = Path(model_path)
        check_gguf(path)
        t0 = time.perf_counter()
        llama_cpp.llama_backend_init()
        threads = threads or default_threads()
        notes: list[str] = []

        supported = bool(llama_cpp.llama_supports_gpu_offload())
        layers = n_gpu_layers
        if layers != 0 and not supported:
            notes.append(
                "GPU offload is not available (CPU build of llama-cpp-python, or no GPU): running on CPU"
            )
            layers = 0
        ladder = _layer_ladder(layers, _gguf_block_count(path) if layers < 0 else None)
        for i, n in enumerate(ladder):
            self._model = self._load(path, n)
            if self._model is not None:
                layers = n
                if i > 0:
                    notes.append(f"loading with {ladder[0]} GPU layers failed: loaded with {n}")
                break
        if self._model is None:
            raise ModelError(f"llama.cpp could not load {path}{_last_c_error()}")

        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            n_layers = llama_cpp.llama_model_n_layer(self._model)
            n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
            if ctx > n_ctx_train > 0:
                notes.append(f"context {ctx} is longer than the model was trained for ({n_ctx_train})")
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_seq_max = batch_size
            cparams.kv_unified = kv_unified
            cparams.n_ctx = ctx * batch_size
            cparams.n_batch = token_budget
            cparams.n_ubatch = min(512, token_budget)
            cparams.n_threads = threads
            cparams.n_threads_batch = threads
            cparams.flash_attn_type = FLASH_ATTN[flash_attn]
            cparams.type_k = cparams.type_v = KV_TYPES[kv_type]
            # Sliding-window layers (Gemma 3, gpt-oss) keep only their window,
            # not the whole context: the engine never rolls a sequence back.
            cparams.swa_full = False
            cparams.no_perf = True
            self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if self._ctx is None:
                raise ModelError(
                    f"llama.cpp could not create a context of {batch_size} x {ctx} tokens"
                    f"{_last_c_error()}: lower --batch-size or --ctx"
                )
            self._mem = llama_cpp.llama_get_memory(self._ctx)
            self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(self._ctx)
            self._n_ctx_total = llama_cpp.llama_n_ctx(self._ctx)
            # llama.cpp caps n_batch at the context size; a step larger than
            # n_batch is a hard assert in llama_decode, so chunk prompts to it.
            token_budget = min(token_budget, llama_cpp.llama_n_batch(self._ctx))
            self._batch = llama_cpp.llama_batch_init(token_budget, 0, 1)
            for i in range(token_budget):
                self._batch.n_seq_id[i] = 1
        except BaseException:
            self.close()
            raise

        self.batch_size = batch_size
        self.kv_unified = kv_unified
        # With one KV stream per sequence a copy moves whole streams, and on this
        # CPU decode steps got ~45% slower after a few rounds of copies: sharing
        # then loses on any generation longer than the prompt (see README).
        self.share_prompts = kv_unified if share_prompts is None else share_prompts
        self.token_budget = token_budget
        self.ignore_eos = ignore_eos
        self._stops = [s.encode() for s in stop if s]
        self._stop_tail = max((len(s) for s in self._stops), default=0) + 16
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._eog_set = frozenset(self._eog)
        self._slots = [_Slot(i) for i in range(batch_size)]
        self.stats = EngineStats()
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, desc, 256)
        self.info = LoadInfo(
            model_path=str(path),
            description=desc.value.decode("utf-8", "replace"),
            n_layers=n_layers,
            n_params=llama_cpp.llama_model_n_params(self._model),
            size_bytes=llama_cpp.llama_model_size(self._model),
            n_gpu_layers_requested=n_gpu_layers,
            n_gpu_layers=(n_layers + 1 if layers < 0 else min(layers, n_layers + 1)),
            gpu_offload_supported=supported,
            n_ctx_seq=self.n_ctx_seq,
            n_seq_max=batch_size,
            kv_unified=kv_unified,
            kv_type=kv_type,
            share_prompts=self.share_prompts,
            threads=threads,
            notes=tuple(notes),
            load_seconds=time.perf_counter() - t0,
        )

    @staticmethod
    def _load(path: Path, n_gpu_layers: int):
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        return llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)

    # --- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Free every C object the engine owns. Safe to call twice."""
        for slot in self._slots:
            slot.free_sampler()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: llama_cpp may already be gone

    # --- vocabulary and metadata -------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; a doubled BOS (template plus tokenizer) is collapsed."""
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        tokens = buf[:n]
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to (control tokens render empty); cached."""
        piece = self._pieces[token]
        if piece is None:
            buf = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, False)
            piece = buf.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: Iterable[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def token_text(self, token: int) -> str:
        """A special token's own text (``<|im_start|>``), as a chat template writes it."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    @property
    def bos_token(self) -> str:
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        return self.token_text(bos) if bos >= 0 else ""

    @property
    def eos_token(self) -> str:
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        return self.token_text(eos) if eos >= 0 else ""

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the GGUF (``tokenizer.chat_template``)."""
        raw = llama_cpp.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", "replace") if raw else None

    # --- generation ---------------------------------------------------------

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """The model's next-token logits after each of ``tokens``: shape (len(tokens), n_vocab).

        One sequence, decoded from an empty cache in chunks of the token
        budget; used to compare a quantized model with its reference.
        """
        if not tokens:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        if len(tokens) > self.n_ctx_seq:
            raise InputError(f"{len(tokens)} tokens do not fit a context of {self.n_ctx_seq}")
        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        batch = self._batch
        for start in range(0, len(tokens), self.token_budget):
            chunk = tokens[start:start + self.token_budget]
            for i, t in enumerate(chunk):
                batch.token[i] = t
                batch.pos[i] = start + i
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(chunk)
            rc = llama_cpp.llama_decode(self._ctx, batch)
            if rc != 0:
                raise EngineError(f"llama_decode failed with code {rc}{_last_c_error()}")
            rows = llama_cpp.llama_get_logits(self._ctx)
            out[start:start + len(chunk)] = np.ctypeslib.as_array(rows, shape=(len(chunk) * self.n_vocab,)).reshape(
                len(chunk), self.n_vocab)
        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        return out

    def generate(
        self,
        requests: Iterable[Request],
        *,
        on_step: Callable[[], None] | None = None,
    ) -> Iterator[Completion]:
        """Decode ``requests`` in one continuous batch; yield each as it finishes.

        Requests are pulled from the iterable only when a slot is free, so the
        caller can decide lazily what runs next (and skip what is no longer
        needed). Completions come in finishing order, not request order.
        """
        source = iter(requests)
        queue: deque[Request] = deque()  # preempted requests go first
        slots = self._slots
        free = deque(slots)
        active: list[_Slot] = []
        finished: list[Completion] = []
        reserved = 0  # KV cells promised to active sequences (unified KV)
        exhausted = False
        admitted = 0
        stats = self.stats
        batch = self._batch
        b_token, b_pos, b_seq, b_logits = batch.token, batch.pos, batch.seq_id, batch.logits
        budget = self.token_budget
        sample = llama_cpp.llama_sampler_sample
        eog = self._eog_set
        ignore_eos = self.ignore_eos
        pieces = self._pieces
        piece_of = self.piece
        stops, stop_tail = self._stops, self._stop_tail

        def release(slot: _Slot, reason: str) -> None:
            nonlocal reserved
            active.remove(slot)
            reserved -= slot.reserved
            finished.append(
                Completion(
                    request=slot.request,
                    text=bytes(slot.text).decode("utf-8", "replace"),
                    tokens=slot.generated,
                    finish_reason=reason,
                )
            )
            slot.clear(self._mem)
            free.append(slot)

        try:
            while True:
                t_step = time.perf_counter()
                for slot in active[:]:
                    if slot.request.cancelled:
                        release(slot, FINISH_CANCELLED)

                # Admission: fill free slots while the next request fits.
                while free and (queue or not exhausted):
                    if queue:
                        req = queue[0]
                    else:
                        req = next(source, None)
                        if req is None:
                            exhausted = True
                            break
                        queue.append(req)
                    if req.cancelled:
                        queue.popleft()
                        finished.append(Completion(req, "", [], FINISH_CANCELLED))
                        continue
                    n_prompt = len(req.prompt)
                    if n_prompt == 0 or n_prompt >= self.n_ctx_seq:
                        queue.popleft()
                        finished.append(Completion(req, "", [], FINISH_TOO_LONG))
                        continue
                    max_new = min(req.max_tokens, self.n_ctx_seq - n_prompt)
                    need = n_prompt + max_new
                    if self.kv_unified and active and reserved + need > self._n_ctx_total:
                        break  # wait for cells to free up
                    queue.popleft()
                    slot = free.popleft()
                    slot.start(req, max_new, admitted, self._make_sampler(req), share=self.share_prompts)
                    admitted += 1
                    slot.reserved = need
                    reserved += need
                    active.append(slot)

                if finished:
                    yield from self._flush(finished)
                if not active:
                    if exhausted and not queue:
                        return
                    continue

                # Prompt sharing: a new sequence copies the prompt's KV from an
                # active sequence of the same prefix that already decoded it.
                paused = 0
                for slot in active[:]:
                    if slot.state == _WAITING:
                        self._attach_prefix(slot, active)
                    elif slot.state == _PAUSED:
                        added = self._resume(slot, release)
                        if added is None:
                            paused += 1
                        elif slot.request is not None:  # still running: its KV grows by the injection
                            slot.reserved += added
                            reserved += added

                # Build one batch: prompt chunks and each sequence's last token.
                n = n_seqs = 0
                for slot in active:
                    slot.step_start = slot.fed
                    slot.logit_index = -1
                    if slot.state == _WAITING or slot.state == _PAUSED:
                        continue
                    feed = slot.feed
                    take = min(len(feed) - slot.fed, budget - n)
                    if take <= 0:
                        continue
                    n_seqs += 1
                    seq, pos, start = slot.seq_id, slot.pos, slot.fed
                    for j in range(take):
                        b_token[n] = feed[start + j]
                        b_pos[n] = pos + j
                        b_seq[n][0] = seq
                        b_logits[n] = 0
                        n += 1
                    slot.fed += take
                    slot.pos += take
                    if slot.fed == len(feed):
                        b_logits[n - 1] = 1
                        slot.logit_index = n - 1
                if n == 0:
                    if finished:
                        yield from self._flush(finished)
                    if paused:
                        time.sleep(0.001)  # every sequence waits on a tool: do not spin
                        if on_step is not None:
                            on_step()  # the caller's clock keeps running (time limits)
                    continue
                batch.n_tokens = n
                t0 = time.perf_counter()
                rc = llama_cpp.llama_decode(self._ctx, batch)
                t1 = time.perf_counter()
                stats.decode_seconds += t1 - t0
                if rc == 1:
                    # No KV slot: the memory is as before the call. Put the youngest
                    # sequence back in the queue and rebuild the batch without it.
                    for slot in active:
                        slot.rewind()
                    if len(active) == 1:
                        release(active[0], FINISH_KV_FULL)
                        continue
                    victim = max(active, key=lambda s: s.order)
                    req = victim.request
                    if req.tool is not None:
                        req.tool.reset()  # it starts again from its prompt
                    active.remove(victim)
                    reserved -= victim.reserved
                    victim.clear(self._mem)
                    free.appendleft(victim)
                    queue.appendleft(req)
                    stats.kv_preemptions += 1
                    continue
                if rc != 0:
                    raise EngineError(f"llama_decode failed with code {rc}{_last_c_error()}")
                stats.steps += 1
                stats.sequence_steps += n_seqs

                # Sample: one token per sequence whose inputs are all decoded.
                for slot in active[:]:
                    if slot.state == _PROMPT:
                        stats.prompt_tokens += slot.fed - slot.step_start
                    elif slot.state == _INJECT:
                        stats.injected_tokens += slot.fed - slot.step_start
                    idx = slot.logit_index
                    if idx < 0:
                        continue
                    slot.state = _GENERATING
                    token = sample(slot.sampler, self._ctx, idx)
                    slot.generated.append(token)
                    stats.generated_tokens += 1
                    if token in eog and not ignore_eos:
                        release(slot, FINISH_EOS)
                        continue
                    piece = pieces[token]
                    if piece is None:
                        piece = piece_of(token)
                    text = slot.text
                    text += piece
                    if stops and piece:
                        tail = bytes(text[-(len(piece) + stop_tail) :])
                        hit = min((i for i in (tail.find(s) for s in stops) if i >= 0), default=-1)
                        if hit >= 0:
                            del text[len(text) - len(tail) + hit :]
                            release(slot, FINISH_STOP)
                            continue
                    if len(slot.generated) >= slot.max_new:
                        release(slot, FINISH_LENGTH)
                        continue
                    slot.feed = [token]
                    slot.fed = 0
                    tool = slot.request.tool
                    if tool is not None and piece and tool.wants_call(text, piece):
                        slot.state = _PAUSED  # keeps its KV; the token is decoded with the tool's output
                        stats.tool_pauses += 1
                        tool.start(bytes(text).decode("utf-8", "replace"))
                t_end = time.perf_counter()
                stats.sample_seconds += t_end - t1
                stats.step_seconds += t_end - t_step
                if finished:
                    yield from self._flush(finished)
                if on_step is not None:
                    on_step()
        finally:
            # Stopped early (caller closed the generator, Ctrl-C): free the sequences.
            for slot in active:
                slot.clear(self._mem)

    def _resume(self, slot: _Slot, release) -> int | None:
        """Feed a paused sequence its tool's output once it is there: the tokens added, or
        None while it waits."""
        output = slot.request.tool.poll()
        if output is None:
            return None
        tokens = self.tokenize(output, add_special=False, parse_special=False)
        room = self.n_ctx_seq - slot.pos - 2  # the pending token and one more to sample
        if room < 1:
            release(slot, FINISH_LENGTH)
            return 0
        tokens = tokens[:room]
        slot.feed = slot.feed[slot.fed:] + tokens
        slot.fed = 0
        slot.text += b"".join(self.piece(t) for t in tokens)
        # The injected tokens use context the generation budget had counted on.
        slot.max_new = min(slot.max_new, len(slot.generated) + self.n_ctx_seq - slot.pos - len(slot.feed))
        slot.state = _INJECT
        return len(tokens)

    def _flush(self, finished: list[Completion]) -> Iterator[Completion]:
        reasons = self.stats.finish_reasons
        for completion in finished:
            reasons[completion.finish_reason] += 1
        batch, finished[:] = finished[:], []
        yield from batch

    def _attach_prefix(self, slot: _Slot, active: list[_Slot]) -> None:
        key = slot.request.prefix_key
        n_prompt = len(slot.request.prompt)
        donor = None
        prefilling = False
        if key is not None:
            for other in active:
                if other is slot or other.request.prefix_key != key or other.state == _WAITING:
                    continue
                if other.state == _PROMPT and other.fed < n_prompt - 1:
                    prefilling = True
                    continue
                if other.request.prompt == slot.request.prompt or other.request.prompt is slot.request.prompt:
                    donor = other
                    break
        if donor is not None:
            # Cross-stream copies move the whole stream, so trim what the donor
            # generated after the prompt; the last prompt token is decoded again
            # so this sequence gets logits of its own.
            llama_cpp.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, n_prompt - 1, -1)
            slot.feed = [slot.request.prompt[-1]]
            slot.fed = 0
            slot.pos = n_prompt - 1
            self.stats.shared_prompt_tokens += n_prompt - 1
            slot.state = _PROMPT
        elif not prefilling:
            slot.state = _PROMPT  # nobody to copy from: decode the whole prompt

    def _make_sampler(self, req: Request):
        sp = req.sampling
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if self.ignore_eos and self._eog:
            biases = (llama_cpp.llama_logit_bias * len(self._eog))()
            for i, t in enumerate(self._eog):
                biases[i].token = t
                biases[i].bias = float("-inf")
            add(chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(self._eog), biases))
        if sp.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if sp.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(sp.top_k))
        if sp.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(sp.top_p, 1))
        if sp.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(sp.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(sp.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(req.seed & 0xFFFFFFFF))
        return chain


_WAITING, _PROMPT, _GENERATING, _PAUSED, _INJECT = 0, 1, 2, 3, 4


class _Slot:
    """One KV sequence of the context and the request it is running."""

    __slots__ = (
        "seq_id", "request", "state", "feed", "fed", "pos", "generated", "text",
        "max_new", "sampler", "logit_index", "order", "reserved", "step_start",
    )

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.sampler = None
        self.request: Request | None = None

    def start(self, req: Request, max_new: int, order: int, sampler, *, share: bool) -> None:
        self.free_sampler()
        self.request = req
        self.state = _WAITING if share and req.prefix_key is not None else _PROMPT
        self.feed = req.prompt
        self.fed = 0
        self.pos = 0
        self.generated: list[int] = []
        self.text = bytearray()
        self.max_new = max_new
        self.sampler = sampler
        self.logit_index = -1
        self.step_start = 0
        self.order = order
        self.reserved = 0

    def rewind(self) -> None:
        """Undo this step's bookkeeping after a decode that left the KV cache unchanged."""
        taken = self.fed - self.step_start
        self.fed -= taken
        self.pos -= taken
        self.logit_index = -1

    def clear(self, mem) -> None:
        llama_cpp.llama_memory_seq_rm(mem, self.seq_id, -1, -1)
        self.free_sampler()
        self.request = None

    def free_sampler(self) -> None:
        if self.sampler is not None:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None


def quantize_file(src: Path, dst: Path, *, ftype: int, threads: int, allow_requantize: bool,
                  imatrix: dict[str, np.ndarray] | None = None) -> None:
    """llama.cpp's llama_model_quantize: write ``src`` to ``dst`` as file type ``ftype``.

    ``imatrix`` maps weight-tensor names to importance values (see
    ``aimo_gguf.imatrix``). Lives here because it is a call into the C API;
    ``aimo_gguf.quantize`` holds what a user sees (type names, checks, the
    atomic rename).
    """
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    keep = []  # the C side borrows these buffers: they must outlive the call
    if imatrix:
        rows = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()  # zeroed last row ends the list
        for row, (name, values) in zip(rows, imatrix.items()):
            values = np.ascontiguousarray(values, dtype=np.float32)
            raw = name.encode()
            keep += [values, raw]
            row.name = raw
            row.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            row.size = values.size
        params.imatrix = ctypes.cast(rows, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(rows)
    _log["errors"].clear()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep
    if rc != 0:
        raise ModelError(f"llama.cpp could not quantize {src}{_last_c_error()}")
