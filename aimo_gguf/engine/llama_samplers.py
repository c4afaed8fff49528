"""Owning wrappers over llama.cpp's samplers; with ``llama.py`` the only code that calls its C API.

- ``SamplerChain``: one sequence's chain (logit masks, then greedy or top-k /
  top-p / min-p / temperature / a seeded draw), run on the host by
  ``llama_sampler_sample`` over the context's logits row.
- ``BackendChain``: the same chain attached to a context's sequence
  (``llama_set_sampler``), so that llama.cpp samples inside ``llama_decode``,
  in the compute graph, on the device that holds the output layer (llama.cpp's
  backend sampling, experimental in the vendored llama.cpp). Two taps of ours
  frame the chain: the first takes the raw row's softmax and its top-k entries
  (the confidence signals' inputs), the last drops what llama.cpp would copy
  back per row (the filtered logits and probabilities: a vocabulary each) and
  returns instead the k top probabilities and the sampled token's probability.
  So a step copies a token id and k + 1 floats per sequence, not its logits.

The taps are ``llama_sampler_i`` objects written in Python: llama.cpp calls
them when it builds a step's graph (not when it reuses one), and they add
ggml operations (``ggml_soft_max``, ``ggml_top_k``, ``ggml_get_rows``,
``ggml_concat``) taken from the loaded ggml library. ``backend_available()``
says whether this build has all of it; without it the engine samples on the
host.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import llama_cpp
import numpy as np

from ..errors import InputError
from .api import SamplingParams
from .llama import LlamaContext, _Owner, fresh_errors, last_error

_BACKEND_CALLS = ("llama_set_sampler", "llama_get_sampled_token_ith", "llama_get_sampled_logits_ith",
                  "llama_get_sampled_logits_count_ith", "llama_sampler_init", "llama_sampler_i_backend_apply")
_GGML_OPS = {  # name: (result, argument types); every tensor is a pointer we never look into
    "ggml_soft_max": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p)),
    "ggml_top_k": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)),
    "ggml_get_rows": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)),
    "ggml_reshape_1d": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)),
    "ggml_reshape_2d": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)),
    "ggml_concat": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)),
    "ggml_nelements": (ctypes.c_int64, (ctypes.c_void_p,)),
}
_ggml: dict[str, object] = {}


def _ggml_ops() -> dict[str, object] | None:
    """The ggml calls the taps need, bound once from the library llama-cpp-python loaded; None without them."""
    if not _ggml:
        try:
            from llama_cpp import _ggml as loaded

            for name, (result, args) in _GGML_OPS.items():
                fn = getattr(loaded.libggml, name)
                fn.restype, fn.argtypes = result, list(args)
                _ggml[name] = fn
        except (ImportError, AttributeError, OSError):
            _ggml.clear()
            return None
    return _ggml


def backend_available() -> bool:
    """This build can sample inside ``llama_decode``: the binding has the calls, the context parameters
    the field, and the ggml library the operations the taps add."""
    return (all(hasattr(llama_cpp, name) for name in _BACKEND_CALLS)
            and hasattr(llama_cpp.llama_context_params, "samplers") and _ggml_ops() is not None)


def _add_chain(chain, sampling: SamplingParams, seed: int, *, n_vocab: int, masked: Sequence[int]) -> None:
    """Logit biases (the masks at -inf), then greedy or top-k / top-p / min-p / temperature / a seeded draw."""
    add = llama_cpp.llama_sampler_chain_add
    bias = [(int(t), float("-inf")) for t in masked] + [(int(t), float(b)) for t, b in sampling.logit_bias]
    if bias:
        biases = (llama_cpp.llama_logit_bias * len(bias))()
        for i, (t, b) in enumerate(bias):
            if not 0 <= t < n_vocab:
                raise InputError(f"logit bias on token {t}, which is not in the vocabulary (0 to {n_vocab - 1})")
            biases[i].token = t
            biases[i].bias = b
        add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(bias), biases))
    if sampling.temperature <= 0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return
    if sampling.top_k > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    if sampling.min_p > 0.0:
        add(chain, llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))


class SamplerChain(_Owner):
    """One sequence's sampler chain, run on the host over the context's logits."""

    def __init__(self, sampling: SamplingParams, seed: int, *, n_vocab: int, masked: Sequence[int] = (),
                 vocab=None) -> None:
        self._ptr = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            if sampling.grammar is not None:
                fresh_errors()
                grammar = llama_cpp.llama_sampler_init_grammar(vocab, sampling.grammar.encode(), b"root")
                if not grammar:
                    raise InputError(f"the grammar does not parse{last_error()}")
                llama_cpp.llama_sampler_chain_add(self._ptr, grammar)
            _add_chain(self._ptr, sampling, seed, n_vocab=n_vocab, masked=masked)
        except BaseException:
            self.close()
            raise

    def _free(self, ptr) -> None:
        llama_cpp.llama_sampler_free(ptr)

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Draw a token from row ``index`` of the context's last logits (and accept it into the chain)."""
        return llama_cpp.llama_sampler_sample(self._ptr, ctx.ptr, index)


_TAP_NAME = ctypes.create_string_buffer(b"aimo-gguf tap")  # a name llama.cpp may print, alive for good
# The name callback returns the buffer's address: a c_char_p result made from Python bytes would dangle.
_name_of_tap = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda smpl: ctypes.addressof(_TAP_NAME))


class _Tap:
    """One of our samplers inside a backend chain: a ``llama_sampler_i`` whose graph step is Python."""

    def __init__(self, on_graph) -> None:
        self._on_graph = on_graph
        iface = llama_cpp.llama_sampler_i()
        # The callbacks must live as long as the sampler: the interface struct only points at them.
        self._callbacks = (
            ctypes.cast(_name_of_tap, llama_cpp.llama_sampler_i_name),
            llama_cpp.llama_sampler_i_apply(lambda smpl, cur_p: None),  # on the host it changes nothing
            llama_cpp.llama_sampler_i_backend_init(lambda smpl, buft, n_outputs: True),
            llama_cpp.llama_sampler_i_backend_apply(self._apply),
        )
        iface.name, iface.apply, iface.backend_init, iface.backend_apply = self._callbacks
        self._iface = iface
        self.ptr = llama_cpp.llama_sampler_init(ctypes.byref(iface), None)  # owned by the chain once added

    def _apply(self, smpl, ctx, graph, data) -> None:
        # An exception here would be printed and dropped by ctypes, leaving the graph without our outputs:
        # the engine then finds no values for the row and says so.
        try:
            self._on_graph(ctx, data.contents)
        except BaseException:  # noqa: BLE001
            pass


class BackendChain(_Owner):
    """A sequence's chain for llama.cpp's backend sampling, framed by the confidence taps.

    ``top_k``: the confidence's top-k (None: no confidence; the last tap still keeps llama.cpp from
    copying a vocabulary's worth of filtered logits back per row). Attach it to a context's sequence
    with ``attach`` (and ``detach`` before closing it)."""

    def __init__(self, sampling: SamplingParams, seed: int, *, n_vocab: int, masked: Sequence[int] = (),
                 top_k: int | None = None) -> None:
        ops = _ggml_ops()
        if ops is None:
            raise InputError("this llama.cpp build cannot sample inside llama_decode: use --sampler batched")
        self.top_k = top_k
        self._ops = ops
        self._graph: dict[str, int] = {}  # the current graph's tensors, from the first tap to the last
        self._ptr = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._taps = []
        try:
            if top_k is not None:
                self._add_tap(self._take_softmax)
            _add_chain(self._ptr, sampling, seed, n_vocab=n_vocab, masked=masked)
            self._add_tap(self._give_values)
        except BaseException:
            self.close()
            raise
        self._ctx = None

    def _add_tap(self, on_graph) -> None:
        tap = _Tap(on_graph)
        self._taps.append(tap)
        llama_cpp.llama_sampler_chain_add(self._ptr, tap.ptr)

    def _take_softmax(self, ctx, data) -> None:
        """First in the chain, on the raw row: its softmax, and the top-k entries of it."""
        op = self._ops
        n = op["ggml_nelements"](data.logits)
        probs = op["ggml_reshape_2d"](ctx, op["ggml_soft_max"](ctx, data.logits), 1, n)
        top = op["ggml_get_rows"](ctx, probs, op["ggml_top_k"](ctx, data.logits, self.top_k))
        self._graph = {"probs": probs, "top": op["ggml_reshape_1d"](ctx, top, self.top_k)}

    def _give_values(self, ctx, data) -> None:
        """Last in the chain: the row's outputs become the k top probabilities and the sampled token's."""
        op = self._ops
        values = None
        if self.top_k is not None and self._graph and data.sampled:
            picked = op["ggml_reshape_1d"](ctx, op["ggml_get_rows"](ctx, self._graph["probs"], data.sampled), 1)
            values = op["ggml_concat"](ctx, self._graph["top"], picked, 0)
        data.logits, data.probs, data.candidates = values, None, None
        self._graph = {}

    def attach(self, context: LlamaContext, seq_id: int) -> bool:
        """Sample sequence ``seq_id`` of ``context`` in its decodes; False when llama.cpp cannot."""
        if not llama_cpp.llama_set_sampler(context.ptr, seq_id, self.ptr):
            return False
        self._ctx = (context, seq_id)
        return True

    def detach(self) -> None:
        if self._ctx is not None:
            context, seq_id = self._ctx
            self._ctx = None
            if context._ptr is not None:
                llama_cpp.llama_set_sampler(context.ptr, seq_id, None)

    def close(self) -> None:
        self.detach()  # the context must not keep a pointer to a freed chain
        super().close()

    def _free(self, ptr) -> None:
        llama_cpp.llama_sampler_free(ptr)

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """The token llama.cpp drew for batch row ``index`` inside the decode (accepted into the chain, as
        ``SamplerChain.sample`` does; llama_sampler_sample returns a backend-drawn token as it is)."""
        return llama_cpp.llama_sampler_sample(self._ptr, ctx.ptr, index)

    def values(self, ctx: LlamaContext, index: int) -> np.ndarray | None:
        """The k top probabilities of the raw row and the sampled token's probability, or None."""
        count = llama_cpp.llama_get_sampled_logits_count_ith(ctx.ptr, index)
        if self.top_k is None or count != self.top_k + 1:
            return None
        ptr = llama_cpp.llama_get_sampled_logits_ith(ctx.ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(count,)).astype(np.float64)
