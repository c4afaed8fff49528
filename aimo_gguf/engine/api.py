"""What the engine promises its callers: requests in, completions out.

Everything here is plain Python, so the solver, the CLI and the tests can use
these types without a model. ``BatchEngine`` is the interface the solver
drives; the real ``Engine`` and the tests' fake engine both declare it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ..errors import InputError
from .confidence import Confidence, ConfidenceSettings

DEFAULT_BATCH_SIZE = 16
DEFAULT_CTX = 0  # per sequence; 0 = prompt allowance + max tokens
PROMPT_ALLOWANCE = 512  # tokens kept for the prompt when --ctx is automatic
DEFAULT_TOKEN_BUDGET = 2048  # most tokens in one llama_decode (prompt chunks + one per sequence)
DEFAULT_MAX_PREEMPTIONS = 3  # a request put back this often after a full-KV decode ends as kv_full
N_UBATCH = 512  # the engine's micro-batch (sliding-window caches keep this much beyond the window)

# The choices of --kv-type, --flash-attn and --split-mode, declared once: RunConfig, the CLI
# and the engine's C mapping all take them from here.
KV_TYPES = ("f16", "q8_0", "q4_0")  # element type of the K and V caches
FLASH_ATTN_MODES = ("auto", "on", "off")
# How one model spreads over several GPUs (aimo_gguf.fit.shares): llama.cpp's LLAMA_SPLIT_MODE_NONE, _LAYER,
# _ROW, in that order.
SPLIT_MODES = ("none", "layer", "row")
DEFAULT_SPLIT_MODE = "layer"
# Where tokens are drawn (aimo_gguf.engine.samplers): auto = backend with the output layer on a GPU (when the
# build can), else batched; batched = every row of a step at once in NumPy; chain = llama.cpp's chain per
# sequence on the host (the older path); backend = llama.cpp's samplers inside llama_decode.
SAMPLER_AUTO, SAMPLER_BATCHED, SAMPLER_CHAIN, SAMPLER_BACKEND = "auto", "batched", "chain", "backend"
SAMPLER_PATHS = (SAMPLER_AUTO, SAMPLER_BATCHED, SAMPLER_CHAIN, SAMPLER_BACKEND)



class Finish(StrEnum):
    """Why a sequence ended; each value is the string journals, traces and summaries write."""

    EOS = "eos"  # the model emitted an end-of-generation token
    STOP = "stop"  # a stop string appeared
    LENGTH = "length"  # the token budget (or the sequence's KV room) ran out
    CANCELLED = "cancelled"  # the caller set request.cancelled
    TOO_LONG = "too_long"  # the prompt does not fit in one sequence's context
    KV_FULL = "kv_full"  # the KV cache could not hold this sequence, even after preemptions
    LOW_CONFIDENCE = "low_confidence"  # its group confidence fell below request.stop_below


# The members under the names the solver and the tests have always used.
FINISH_EOS, FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED = Finish.EOS, Finish.STOP, Finish.LENGTH, Finish.CANCELLED
FINISH_TOO_LONG, FINISH_KV_FULL, FINISH_LOW_CONFIDENCE = Finish.TOO_LONG, Finish.KV_FULL, Finish.LOW_CONFIDENCE
FINISH_REASONS = tuple(Finish)


def check_choices(*, flash_attn: str, kv_type: str, sampler: str, split_mode: str) -> None:
    """One line, naming the flag, for a value outside its list of choices or a KV type flash attention
    must go with; RunConfig and EngineOptions both check here."""
    for flag, value, choices in (("--flash-attn", flash_attn, FLASH_ATTN_MODES), ("--kv-type", kv_type, KV_TYPES),
                                 ("--sampler", sampler, SAMPLER_PATHS), ("--split-mode", split_mode, SPLIT_MODES)):
        if value not in choices:
            raise InputError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    if kv_type != "f16" and flash_attn == "off":
        raise InputError(f"--kv-type {kv_type} needs flash attention: use --flash-attn auto or on")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Everything an ``Engine`` is built from: plain values, so it pickles, and a process given it rebuilds
    the same engine. ``aimo_gguf.fit.plan`` makes one from a RunConfig and its load plan."""

    model_path: str  # the GGUF file, or the first part of a split one
    n_gpu_layers: int = 0  # -1 = all layers; on failure the engine tries fewer (Engine.load_model)
    # context of one sequence, prompt included: a real count, unlike DEFAULT_CTX's 0 (automatic), which only
    # RunConfig can resolve (it knows --max-tokens); 4096 for an engine built by hand
    ctx: int = 4096
    batch_size: int = DEFAULT_BATCH_SIZE  # sequences decoded together
    threads: int | None = None  # None = physical cores
    kv_unified: bool = False  # one KV buffer for all sequences (see README: slower at large batch)
    share_prompts: bool | None = None  # None = only with kv_unified, where the KV copy is metadata only
    # a slot keeps its prompt's cells for the next request that starts the same way; None = with one KV
    # stream per sequence (a unified cache frees cells on release)
    cache_prompts: bool | None = None
    flash_attn: str = "auto"  # FLASH_ATTN_MODES
    kv_type: str = "f16"  # KV_TYPES
    token_budget: int = DEFAULT_TOKEN_BUDGET  # most tokens in one llama_decode
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # never end on EOS: the end-of-generation tokens are masked
    max_preemptions: int = DEFAULT_MAX_PREEMPTIONS  # then a sequence the KV cannot hold ends as kv_full
    # logits rows per decode: None = one per sequence (generate); logits() of a whole text needs more
    # (compare passes the token budget)
    max_outputs: int | None = None
    confidence: ConfidenceSettings | None = None  # per-token signals, aggregated into each Completion
    split_mode: str = DEFAULT_SPLIT_MODE  # several GPUs: none (all on main_gpu), layer, row
    tensor_split: tuple[float, ...] | None = None  # each GPU's share; None = by free memory
    main_gpu: int = 0
    repack: bool = True  # False is llama.cpp's --no-repack: no extra CPU buffer types (repacking, AMX)
    sampler: str = SAMPLER_AUTO  # where tokens are drawn: SAMPLER_PATHS (aimo_gguf.engine.samplers)
    # also count each step's host work in thread CPU time (stats.host_cpu_seconds): what a busy machine
    # cannot inflate, at a microsecond or so per clock read, four reads a step
    cpu_clock: bool = False
    verbose: bool = False  # llama.cpp's own log on stderr
    # The model's trained context where the caller has read the GGUF header already (the load plan): the
    # engine's check before the load then reads nothing. None: the engine reads it.
    n_ctx_train: int | None = None
    # The model's transformer blocks, likewise (the ladder down from -1 halves them): None, the engine
    # reads the header if a load with all layers fails.
    n_layers: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", str(self.model_path))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.tensor_split is not None:
            object.__setattr__(self, "tensor_split", tuple(self.tensor_split))
        if not isinstance(self.n_gpu_layers, int) or isinstance(self.n_gpu_layers, bool):
            raise InputError(f"n_gpu_layers must be a whole number (-1 = all), got {self.n_gpu_layers!r}: "
                             "resolve 'auto' with aimo_gguf.fit.plan.plan_load")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.ctx < 16:
            raise InputError(f"context must be at least 16 tokens, got {self.ctx}")
        check_choices(flash_attn=self.flash_attn, kv_type=self.kv_type, sampler=self.sampler,
                      split_mode=self.split_mode)
        if self.cache_prompts and self.kv_unified:
            raise InputError("--cache-prompts needs one KV stream per sequence: drop --kv-unified "
                             "(a unified cache frees a finished sample's cells for the others)")


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """How one sequence picks its tokens. ``temperature <= 0`` is greedy."""

    temperature: float = 0.7
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    min_p: float = 0.05  # 0.0 = off
    grammar: str | None = None  # a GBNF grammar (llama.cpp's) the generated text must follow; None = free.
    # llama.cpp ends a grammar at an end-of-generation token: one must not name such a token.
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token, bias) added to the logits, as OpenAI's logit_bias


# What a tool hands back to decode into its sequence: plain text (tokenized as text: a special token's
# spelling in it stays text), or parts of (text, parse_special) tokenized one by one, so a format's
# framing tokens (harmony's <|start|>, <|message|>, <|end|>) are real special tokens while the tool's
# output in between can never forge one.
ToolReply = str | tuple[tuple[str, bool], ...]


class ToolHook(Protocol):
    """What the engine needs from a tool (``aimo_gguf.styles.tir`` has the fenced-Python one,
    ``aimo_gguf.styles.harmony`` gpt-oss's, ``aimo_gguf.styles.think`` the thinking budget).

    After each sampled token the engine asks ``wants_call(text, piece, token,
    room=..., eog=...)``: ``text`` already ends with the token's ``piece``,
    ``room`` is how many more tokens the sequence may generate (its budget, less
    the context its tool replies took), and ``eog`` says the token is an end of
    generation, asked before it would end the sequence. On True the sequence
    pauses with its KV cache kept, the token stays pending, and ``start`` gets
    the text so far. The engine polls (without waiting) at every step, other
    sequences decoding meanwhile; the reply ``poll`` returns is decoded into the
    sequence after the pending token (a reply of parts only whole: one that does
    not fit the context ends the sequence), and the sequence generates on.
    ``reset`` is called if the sequence restarts from its prompt (a KV
    preemption). None of these may block: they run on the decode thread.
    """

    def wants_call(self, text: bytearray, piece: bytes, token: int, *, room: int, eog: bool) -> bool: ...

    def start(self, text: str) -> None: ...

    def poll(self) -> ToolReply | None: ...

    def reset(self) -> None: ...


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
    # Set by the caller (any time): with confidence on, the sequence ends as low_confidence once the mean
    # confidence of its last full window of tokens is below this (DeepConf's online early termination).
    stop_below: float | None = None
    # Special tokens (harmony's <|channel|>, <|end|>, <|call|>) written into the completion's text, so its
    # messages can be parsed; otherwise control tokens render empty. The ending token is never written.
    render_special: bool = False


@dataclass(slots=True)
class Completion:
    """A finished sequence."""

    request: Request
    text: str  # generated text, end-of-generation token and stop string excluded
    tokens: list[int]  # generated token ids, in order
    finish_reason: Finish
    confidence: Confidence | None = None  # aggregates of its tokens' signals, when the engine computes them


@dataclass(slots=True)
class EngineStats:
    """Running counters of the engine, readable at any time."""

    prompt_tokens: int = 0  # prompt tokens decoded (a shared prefix counts once)
    shared_prompt_tokens: int = 0  # prompt tokens not decoded: a sibling's KV copied, or kept in the slot
    generated_tokens: int = 0
    steps: int = 0  # llama_decode calls that succeeded
    sequence_steps: int = 0  # sequences in those decodes, summed: occupancy = sequence_steps / steps
    decode_seconds: float = 0.0  # time inside llama_decode
    injected_tokens: int = 0  # tool output decoded into paused sequences
    tool_pauses: int = 0  # sequences paused for a tool call
    sample_seconds: float = 0.0  # after each decode: drawing tokens, confidence, taking the tokens in
    draw_seconds: float = 0.0  # of which drawing the tokens (the samplers; in llama_decode on the backend path)
    confidence_seconds: float = 0.0  # of which the confidence signals and their running aggregates
    host_cpu_seconds: float = 0.0  # thread CPU time of the steps less their llama_decode (Engine(cpu_clock=True))
    step_seconds: float = 0.0  # whole steps: batch building, decode, sampling, bookkeeping
    kv_preemptions: int = 0  # sequences put back in the queue after a full-KV decode
    finish_reasons: Counter = field(default_factory=Counter)  # completions by Finish reason

    @classmethod
    def merged(cls, many: Iterable[EngineStats]) -> EngineStats:
        """The counters of several engines added up, as a new object: each is read once, while its own
        thread may go on counting (``finish_reasons`` is copied before it is added)."""
        total = cls()
        for stats in many:
            for f in fields(cls):
                if f.name == "finish_reasons":
                    total.finish_reasons.update(dict(stats.finish_reasons))
                else:
                    setattr(total, f.name, getattr(total, f.name) + getattr(stats, f.name))
        return total

    def snapshot(self) -> EngineStats:
        """A copy that no longer changes: what crosses to another thread or process."""
        return EngineStats.merged([self])


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
    cache_prompts: bool  # a slot keeps its prompt's KV for the next request that starts the same way
    threads: int
    notes: tuple[str, ...]  # what the loader had to change, said once to the user
    load_seconds: float
    confidence: bool = False  # completions carry confidence aggregates
    repack: bool = True  # the CPU backend's extra buffer types (weight repacking, AMX) were on
    sampler: str = ""  # where tokens are drawn: batched, chain or backend (SAMPLER_PATHS, auto resolved)
    architecture: str = ""  # general.architecture of the GGUF (llama, qwen2, gpt-oss, ...)
    name: str = ""  # general.name of the GGUF, when it has one


@runtime_checkable
class BatchEngine(Protocol):
    """The engine as the solver sees it: a tokenizer, a chat template and ``generate``.

    ``generate`` pulls requests lazily, only when a slot is free; a request whose
    ``cancelled`` is set ends at the next step with FINISH_CANCELLED; every
    pulled request comes back exactly once, in finishing order. ``on_step`` is
    called after every step, also steps that decoded nothing (every sequence
    waiting on a tool) or failed for want of KV cells, so a caller's clock
    keeps running.
    """

    batch_size: int  # sequences decoded together
    n_ctx_seq: int  # context of one sequence: a prompt this long or longer is too long
    stats: EngineStats
    info: LoadInfo

    @property
    def chat_template(self) -> str | None: ...

    @property
    def bos_token(self) -> str: ...

    @property
    def eos_token(self) -> str: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def generate(self, requests: Iterable[Request], *, on_step: Callable[[], None] | None = None
                 ) -> Iterator[Completion]: ...

    def close(self) -> None: ...

    def __enter__(self) -> BatchEngine: ...

    def __exit__(self, *exc: object) -> None: ...
