"""Owning wrappers over llama.cpp's C objects, the engine's way into ``llama_cpp``'s C API.

Besides this module and ``llama_samplers``, only three engine modules call that API, each for one job:
``simulate`` (a memory reservation without allocating), ``probe`` (a test decode in a child process)
and ``backends`` (a portable build's backend modules).

One class per C object, as llama-cpp-python's ``_internals`` does it: each
creates its object, frees it in ``close()`` (safe twice, also from ``__del__``),
and exposes what the engine needs as plain Python. Above this module nobody
touches a ctypes pointer.

- ``LlamaModel``: the weights and the vocabulary (tokenize, pieces, special tokens).
- ``LlamaContext``: one context with its KV memory; ``decode`` and the memory calls.
- ``LlamaBatch``: one ``llama_batch`` of fixed capacity, filled in place.

The samplers' wrappers are in ``llama_samplers``.

llama.cpp's C log goes through one callback: silent unless verbose, but the
error lines of the current call are kept so a failure can say why. Each call
that reports errors starts by clearing them (``fresh_errors``), so a message
never carries a line from an earlier engine.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import llama_cpp
import numpy as np

from ..errors import ModelError
from ..utf8 import utf8
from .api import DEFAULT_SPLIT_MODE, FLASH_ATTN_MODES, KV_TYPES, SPLIT_MODES
from .backends import load_backend_modules

FLASH_ATTN_TYPES = dict(zip(FLASH_ATTN_MODES, (
    llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)))
GGML_KV_TYPES = dict(zip(KV_TYPES, (llama_cpp.GGML_TYPE_F16, llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_Q4_0)))

# --- the C log ---------------------------------------------------------------------------------------------

_GGML_LOG_LEVEL_ERROR = 3
_log = {"verbose": False, "errors": deque(maxlen=8), "capture": None}


def on_log(level: int, text: bytes) -> None:
    """Where llama.cpp's log lines go: stderr when verbose, else kept when they are errors."""
    capture = _log.get("capture")
    if capture is not None:
        capture.append(text.decode("utf-8", "replace"))
    if _log["verbose"]:
        print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)
    elif level == _GGML_LOG_LEVEL_ERROR:
        _log["errors"].append(text.decode("utf-8", "replace").strip())


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # An exception here would be printed and dropped by ctypes: a stop signal that lands in this
    # callback is recorded by its handler (aimo_gguf.pipeline.interrupt) and raised at the next safe point.
    try:
        on_log(level, text)
    except BaseException:  # noqa: BLE001
        pass


llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))

load_backend_modules()  # a portable build's CPU backends, before anything asks for one


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """llama.cpp's log lines while the block runs, verbose or not."""
    lines: list[str] = []
    _log["capture"] = lines
    try:
        yield lines
    finally:
        _log["capture"] = None


def set_verbose(verbose: bool) -> None:
    """Let llama.cpp's own log through to stderr (``--verbose``), or keep it quiet."""
    _log["verbose"] = verbose


def fresh_errors() -> None:
    """Forget the error lines of earlier calls: call before a C call whose failure is reported."""
    _log["errors"].clear()


def last_error() -> str:
    """``": <the last error line since fresh_errors()>"``, or ``""`` when llama.cpp said nothing."""
    errors = [e for e in _log["errors"] if e]
    return f": {errors[-1]}" if errors else ""


# --- process-wide --------------------------------------------------------------------------------------------


def backend_init() -> None:
    llama_cpp.llama_backend_init()


def supports_gpu_offload() -> bool:
    """True on a CUDA (or Metal, Vulkan...) build of llama-cpp-python."""
    return bool(llama_cpp.llama_supports_gpu_offload())


class _Owner:
    """Frees its C object once, at ``close()`` or when garbage-collected."""

    _ptr = None

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._free(ptr)

    def _free(self, ptr) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: llama_cpp may already be gone

    @property
    def ptr(self):
        if self._ptr is None:
            raise ValueError(f"this {type(self).__name__} is closed")
        return self._ptr


# --- the model and its vocabulary ----------------------------------------------------------------------------


SPLIT_MODE_TYPES = dict(zip(SPLIT_MODES, (
    llama_cpp.LLAMA_SPLIT_MODE_NONE, llama_cpp.LLAMA_SPLIT_MODE_LAYER, llama_cpp.LLAMA_SPLIT_MODE_ROW)))


def max_devices() -> int:
    """The most GPUs this llama.cpp build can split a model over (the length of ``tensor_split``)."""
    return int(llama_cpp.llama_max_devices())


def max_sequences() -> int:
    """The most sequences one llama.cpp context decodes together (LLAMA_MAX_SEQ, 256 in 0.3.36)."""
    return int(llama_cpp.llama_max_parallel_sequences())


def model_params(*, n_gpu_layers: int = 0, vocab_only: bool = False, split_mode: str = DEFAULT_SPLIT_MODE,
                 tensor_split: Sequence[float] | None = None, main_gpu: int = 0, extra_buffers: bool = True):
    """``llama_model_params`` for a load, and the float array its ``tensor_split`` points to (keep it
    alive until the load returns: llama.cpp reads it then). ``extra_buffers`` False is llama.cpp's
    --no-repack: CPU weights stay as stored, no repacking and no AMX (see aimo_gguf.engine.probe)."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_extra_bufts = extra_buffers
    params.vocab_only = vocab_only
    params.split_mode = SPLIT_MODE_TYPES[split_mode]
    params.main_gpu = main_gpu
    array = None
    if tensor_split:  # its length was checked before the load (aimo_gguf.engine.limits.check_tensor_split)
        array = (ctypes.c_float * max_devices())(*tensor_split)
        params.tensor_split = ctypes.cast(array, ctypes.POINTER(ctypes.c_float))
    return params, array


class LlamaModel(_Owner):
    """A loaded GGUF model: its weights (``n_gpu_layers`` of them on the GPU) and its vocabulary."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0, vocab_only: bool = False,
                 split_mode: str = DEFAULT_SPLIT_MODE, tensor_split: Sequence[float] | None = None,
                 main_gpu: int = 0, extra_buffers: bool = True) -> None:
        params, self._tensor_split = model_params(n_gpu_layers=n_gpu_layers, vocab_only=vocab_only,
                                                  split_mode=split_mode, tensor_split=tensor_split,
                                                  main_gpu=main_gpu, extra_buffers=extra_buffers)
        fresh_errors()
        ptr = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not ptr:
            raise ModelError(f"llama.cpp could not load {path}{last_error()}")
        self._ptr = ptr
        self.path = str(path)
        self._vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._pieces: list[bytes | None] = [None] * self.n_vocab
        self._special_pieces: dict[int, bytes] = {}  # pieces with special tokens spelled out (rarely used)
        self.eog_tokens = tuple(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))

    def _free(self, ptr) -> None:
        llama_cpp.llama_model_free(ptr)

    @property
    def vocab(self):
        """The C vocabulary (for samplers that need it, like the grammar's)."""
        self.ptr  # noqa: B018 - raises once the model is closed
        return self._vocab

    @property
    def n_layers(self) -> int:
        return llama_cpp.llama_model_n_layer(self.ptr)

    @property
    def n_ctx_train(self) -> int:
        return llama_cpp.llama_model_n_ctx_train(self.ptr)

    @property
    def n_params(self) -> int:
        return llama_cpp.llama_model_n_params(self.ptr)

    @property
    def n_swa(self) -> int:
        """The sliding window of its windowed layers (0: none)."""
        return llama_cpp.llama_model_n_swa(self.ptr)

    @property
    def is_recurrent(self) -> bool:
        """Recurrent or hybrid memory: a sequence's state cannot be cut at a position."""
        return bool(llama_cpp.llama_model_is_recurrent(self.ptr) or llama_cpp.llama_model_is_hybrid(self.ptr))

    @property
    def size_bytes(self) -> int:
        return llama_cpp.llama_model_size(self.ptr)

    @property
    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.ptr, buf, 256)
        return buf.value.decode("utf-8", "replace")

    @property
    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def meta(self, key: str) -> str | None:
        """A metadata value of the GGUF as text (``"true"`` for a true bool), or None when absent."""
        buf = ctypes.create_string_buffer(512)
        n = llama_cpp.llama_model_meta_val_str(self.ptr, key.encode(), buf, 512)
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def bos(self) -> int:
        return llama_cpp.llama_vocab_bos(self._vocab)

    @property
    def eos(self) -> int:
        return llama_cpp.llama_vocab_eos(self._vocab)

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; a doubled BOS (template plus tokenizer) is collapsed."""
        data = utf8(text)  # a lone surrogate (a tool printed chr(0xd800)) is U+FFFD, not the run's end
        n_max = len(data) + 8
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        tokens = buf[:n]
        bos = self.bos
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]
        return tokens

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token renders to (control tokens render empty, unless ``special``); cached."""
        pieces = self._special_pieces if special else self._pieces
        piece = pieces.get(token) if special else pieces[token]
        if piece is None:
            buf = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, special)
            piece = buf.raw[: max(n, 0)]
            pieces[token] = piece
        return piece

    def token_text(self, token: int) -> str:
        """A special token's own text (``<|im_start|>``), as a chat template writes it."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")


# --- the context and its KV memory ---------------------------------------------------------------------------


def context_params(*, n_seq_max: int, n_ctx: int, n_batch: int, n_ubatch: int, threads: int, flash_attn: str,
                   kv_type: str, kv_unified: bool, n_outputs_max: int = 0):
    """``llama_context_params`` for a context, real (``LlamaContext``) or simulated
    (``aimo_gguf.engine.simulate``, for the memory estimate): both must ask llama.cpp for the same thing."""
    params = llama_cpp.llama_context_default_params()
    params.n_seq_max = n_seq_max
    # The logits rows one decode may return (0 = n_batch). The compute buffer holds that
    # many rows of the whole vocabulary: 512 x 152k floats is 300 MiB that one logits row
    # per sequence never uses.
    params.n_outputs_max = n_outputs_max
    params.kv_unified = kv_unified
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_ubatch
    params.n_threads = threads
    params.n_threads_batch = threads
    params.flash_attn_type = FLASH_ATTN_TYPES[flash_attn]
    params.type_k = params.type_v = GGML_KV_TYPES[kv_type]
    # Sliding-window layers (Gemma 3, gpt-oss) keep only their window, not the whole
    # context: no sequence is ever cut back on such a model (the engine turns prompt
    # reuse off, and a sibling copies a prompt only from a donor still at its end).
    params.swa_full = False
    params.no_perf = True
    return params


class LlamaContext(_Owner):
    """One llama.cpp context of ``n_seq_max`` sequences over a model, with its KV memory."""

    def __init__(self, model: LlamaModel, *, n_seq_max: int, n_ctx: int, n_batch: int, n_ubatch: int,
                 threads: int, flash_attn: str, kv_type: str, kv_unified: bool, n_outputs_max: int = 0) -> None:
        params = context_params(n_seq_max=n_seq_max, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                threads=threads, flash_attn=flash_attn, kv_type=kv_type, kv_unified=kv_unified,
                                n_outputs_max=n_outputs_max)
        fresh_errors()
        ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens for {n_seq_max} sequences"
                             f"{last_error()}: lower --batch-size or --ctx")
        self._ptr = ptr
        self._model = model  # a context must be freed before its model: keep the model alive
        self._mem = llama_cpp.llama_get_memory(ptr)
        self.n_vocab = model.n_vocab
        self.n_ctx = llama_cpp.llama_n_ctx(ptr)  # KV cells of all sequences together
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(ptr)  # the context one sequence can use
        # llama.cpp caps n_batch at the context size, and a step larger than
        # n_batch is a hard assert in llama_decode: the engine chunks prompts to it.
        self.n_batch = llama_cpp.llama_n_batch(ptr)
        self._logits_view: tuple[int, np.ndarray] | None = None  # (buffer address, its rows) of logits()

    def _free(self, ptr) -> None:
        llama_cpp.llama_free(ptr)

    def decode(self, batch: LlamaBatch) -> int:
        """``llama_decode``: 0 on success, 1 when no KV slot was found (the memory is as before)."""
        fresh_errors()
        return llama_cpp.llama_decode(self.ptr, batch.struct)

    def logits(self, n_rows: int) -> np.ndarray:
        """The logits of the last decode's ``n_rows`` output tokens, shape (n_rows, n_vocab), a view."""
        rows = llama_cpp.llama_get_logits(self.ptr)
        address = ctypes.cast(rows, ctypes.c_void_p).value
        view = self._logits_view
        # Making the view costs more than a step's bookkeeping (a ctypes array type, a NumPy header): keep
        # one over the buffer as long as llama.cpp keeps the buffer, and slice it.
        if view is None or view[0] != address or view[1].shape[0] < n_rows:
            array = np.ctypeslib.as_array(rows, shape=(n_rows * self.n_vocab,)).reshape(n_rows, self.n_vocab)
            self._logits_view = view = (address, array)
        return view[1][:n_rows]

    def seq_rm(self, seq_id: int, start: int = -1) -> bool:
        """Drop the cells of sequence ``seq_id`` from position ``start`` on (-1: all of them). False when
        the memory cannot cut a sequence there (recurrent state): nothing was removed."""
        return bool(llama_cpp.llama_memory_seq_rm(self._mem, seq_id, start, -1))

    def seq_cp(self, src: int, dst: int) -> None:
        """Give sequence ``dst`` every cell of sequence ``src``."""
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)


class LlamaBatch(_Owner):
    """One ``llama_batch`` of ``capacity`` tokens, one sequence id each; the engine fills its arrays in place."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.struct = llama_cpp.llama_batch_init(capacity, 0, 1)  # held by value; its arrays are C memory
        self._ptr = self.struct
        for i in range(capacity):
            self.struct.n_seq_id[i] = 1
        self.token, self.pos, self.seq_id, self.logits = (
            self.struct.token, self.struct.pos, self.struct.seq_id, self.struct.logits)

    def _free(self, ptr) -> None:
        llama_cpp.llama_batch_free(ptr)

    @property
    def n_tokens(self) -> int:
        return self.struct.n_tokens

    @n_tokens.setter
    def n_tokens(self, n: int) -> None:
        self.struct.n_tokens = n


# --- calls that are not objects ------------------------------------------------------------------------------


def quantize_file(src: Path, dst: Path, *, ftype: int, threads: int, allow_requantize: bool,
                  imatrix: dict[str, np.ndarray] | None = None) -> None:
    """llama.cpp's llama_model_quantize: write ``src`` to ``dst`` as file type ``ftype``.

    ``imatrix`` maps weight-tensor names to importance values (see
    ``aimo_gguf.gguf.imatrix``). ``aimo_gguf.quantize`` holds what a user sees
    (type names, checks, the atomic rename).
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
    fresh_errors()
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    del keep
    if rc != 0:
        raise ModelError(f"llama.cpp could not quantize {src}{last_error()}")


def eog_tokens_of(model_ptr) -> list[int]:
    """End-of-generation token ids of a model loaded by ``llama_cpp.Llama`` (its public ``.model``)."""
    vocab = llama_cpp.llama_model_get_vocab(model_ptr)
    return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]


def perf_reset(ctx_ptr) -> None:
    """Zero llama.cpp's own timers of a ``llama_cpp.Llama`` context (its public ``.ctx``)."""
    llama_cpp.llama_perf_context_reset(ctx_ptr)


def perf_counters(ctx_ptr) -> dict[str, float]:
    """llama.cpp's own timers of a context: prompt and generation token counts and milliseconds."""
    perf = llama_cpp.llama_perf_context(ctx_ptr)
    return {"prompt_tokens": int(perf.n_p_eval), "prompt_ms": float(perf.t_p_eval_ms),
            "eval_tokens": int(perf.n_eval), "eval_ms": float(perf.t_eval_ms)}


# --- llama.cpp's own accounting -----------------------------------------------------------------------------

def cpu_features() -> frozenset[str]:
    """The CPU features llama.cpp's CPU backend uses (``AVX2``, ``AVX512``, ``NEON``, ``REPACK``...)."""
    text = (llama_cpp.llama_print_system_info() or b"").decode("utf-8", "replace")
    return frozenset(m.group(1) for m in re.finditer(r"(\w+) = 1", text))

