"""The batched engine: one context, many sequences, one ``llama_decode`` per step.

Each step of ``generate`` is: the scheduler plans it (``Scheduler.schedule``),
the engine fills one ``llama_batch`` with the plan's tokens (the next token of
every generating sequence, chunks of new prompts, tool output), decodes it,
and the step's sampling sequences draw their next tokens (``samplers.Samplers``:
all rows at once in NumPy, llama.cpp's chain per sequence, or llama.cpp's
samplers inside the decode); the scheduler takes the tokens back
(``Scheduler.accept``). Loading (with the GPU-layer fallback ladder),
tokenizing and the logits of one sequence (for ``compare``) live here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, InputError, ModelError
from ..gguf.files import check_gguf
from . import llama
from .api import (
    DEFAULT_SPLIT_MODE,
    N_UBATCH,
    BatchEngine,
    Completion,
    EngineOptions,
    EngineStats,
    LoadInfo,
    Request,
)
from .confidence import Tracker
from .limits import check_limits, check_tensor_split, default_threads
from .samplers import Samplers, resolve_path
from .scheduler import Scheduler, StepPlan
from .slot import Slot, StopMatcher


def _no_clock() -> float:
    return 0.0


def gguf_block_count(path: Path) -> int | None:
    """Number of transformer blocks, read from the GGUF header (None if unreadable)."""
    try:
        from ..gguf.header import read_header

        fields = read_header(path).fields
        return int(fields[f"{fields['general.architecture']}.block_count"])
    except Exception:
        return None


def layer_ladder(requested: int, n_blocks: int | None) -> list[int]:
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


def _extra_buffers_safe(notes: list[str]) -> bool:
    """Whether this llama.cpp build can use its extra CPU buffer types here without dying of an illegal
    instruction (aimo_gguf.engine.probe: a child process, once per build and CPU); a note when not."""
    from .probe import extra_buffers_verdict

    verdict = extra_buffers_verdict()
    if verdict.traps:
        notes.append(verdict.note)
    return not verdict.traps


class Engine(BatchEngine):
    """A loaded GGUF model with one batched context. Use as a context manager.

    ``Engine(options)`` builds it from an ``EngineOptions``; ``Engine(path, ctx=..., ...)`` is shorthand for
    ``Engine(EngineOptions(model_path=path, ctx=..., ...))`` (a misspelt keyword is the dataclass's
    TypeError, never swallowed).
    """

    def __init__(self, options: EngineOptions | str | Path, /, **fields: Any) -> None:
        if not isinstance(options, EngineOptions):
            options = EngineOptions(model_path=str(options), **fields)
        elif fields:
            options = replace(options, **fields)
        self.options = options
        self._model: llama.LlamaModel | None = None
        self._context: llama.LlamaContext | None = None
        self._batch: llama.LlamaBatch | None = None
        self._sampling: Samplers | None = None
        llama.set_verbose(options.verbose)
        path = Path(options.model_path)
        check_gguf(path)
        check_limits(path, ctx=options.ctx, batch_size=options.batch_size, threads=options.threads,
                     n_ctx_train=options.n_ctx_train)
        t0 = time.perf_counter()
        llama.backend_init()
        self.threads = options.threads or default_threads()
        self.max_outputs = max(options.batch_size, options.max_outputs or options.batch_size)
        notes: list[str] = []
        supported = llama.supports_gpu_offload()
        try:
            layers = self.load_model(options, supported=supported, notes=notes)
            model = self._model
            windowed = self._model_notes(options, notes)
            self.n_ctx_seq = self._context.n_ctx_seq
            self.token_budget = min(options.token_budget, self._context.n_batch)
            self._batch = llama.LlamaBatch(self.token_budget)
            output_on_gpu = layers < 0 or layers > model.n_layers
            self._sampling = Samplers(
                path=resolve_path(options.sampler, output_on_gpu=output_on_gpu), context=self._context, model=model,
                n_slots=options.batch_size, masked=model.eog_tokens if options.ignore_eos else (),
                confidence=options.confidence)
        except BaseException:
            self.close()
            raise

        self.batch_size = options.batch_size
        self.kv_unified = options.kv_unified
        # Off by default with one KV stream per sequence: prompt reuse per slot covers most of what it saves
        # there (the 45% slower steps once measured with it were batches out of slot order; see README).
        self.share_prompts = options.kv_unified if options.share_prompts is None else options.share_prompts
        self.ignore_eos = options.ignore_eos
        self.cpu_clock = options.cpu_clock
        self.max_preemptions = options.max_preemptions
        self.cache_prompts = not options.kv_unified and not windowed and options.cache_prompts is not False
        self._slot_cache = [[] for _ in range(self.batch_size)] if self.cache_prompts else None
        self._stops = StopMatcher(options.stop)
        self.confidence = options.confidence
        self.n_vocab = model.n_vocab
        self._eog = frozenset(model.eog_tokens)
        self.stats = EngineStats()
        self.info = self._load_info(layers=layers, supported=supported, notes=notes,
                                    seconds=time.perf_counter() - t0)

    def load_model(self, options: EngineOptions, *, supported: bool, notes: list[str]) -> int:
        """Load the model and its context with ``options.n_gpu_layers`` on the GPU; the layers loaded.

        The weights or, with them on the GPU, the KV cache and compute buffers may not fit: each failure
        tries fewer layers (the fallback ladder: halving, down to the CPU alone), with a note.
        """
        layers = options.n_gpu_layers
        if layers != 0 and not supported:
            notes.append("GPU offload is not available (CPU build of llama-cpp-python, or no GPU): running on CPU")
            layers = 0
        split = dict(split_mode=options.split_mode, tensor_split=options.tensor_split, main_gpu=options.main_gpu)
        if not supported and (options.split_mode != DEFAULT_SPLIT_MODE or options.tensor_split or options.main_gpu):
            notes.append("--split-mode, --tensor-split and --main-gpu are ignored: no GPU to split over")
            split = {}
        if supported:  # the plan checked it (with the visible GPUs); an engine built without one did not
            check_tensor_split(options.tensor_split)
        self.extra_buffers = options.repack and _extra_buffers_safe(notes)
        try:
            self._open(options, n_gpu_layers=layers, split=split)
            return layers
        except ModelError as e:
            if layers == 0:
                raise  # on the CPU alone: the real reason, not a GPU one
            failure = e
            self.close()
        # The header is read only here, on the way down from -1 (all layers), and only without a plan's count.
        n_blocks = None
        if layers < 0:
            n_blocks = options.n_layers if options.n_layers is not None else gguf_block_count(Path(options.model_path))
        ladder = layer_ladder(layers, n_blocks)
        for n in ladder[1:-1]:
            try:
                self._open(options, n_gpu_layers=n, split=split)
            except ModelError:
                self.close()
                continue
            notes.append(f"loading with {layers} GPU layers failed ({failure}): loaded with {n}")
            return n
        self._open(options, n_gpu_layers=0, split=split)  # the CPU alone: its failure is the real reason
        notes.append(f"loading with {layers} GPU layers failed ({failure}): loaded with 0")
        return 0

    def _open(self, options: EngineOptions, *, n_gpu_layers: int, split: dict) -> None:
        self._model = llama.LlamaModel(options.model_path, n_gpu_layers=n_gpu_layers,
                                       extra_buffers=self.extra_buffers, **split)
        budget = options.token_budget
        self._context = llama.LlamaContext(
            self._model, n_seq_max=options.batch_size, n_ctx=options.ctx * options.batch_size, n_batch=budget,
            n_ubatch=min(N_UBATCH, budget), threads=self.threads, flash_attn=options.flash_attn,
            kv_type=options.kv_type, kv_unified=options.kv_unified, n_outputs_max=self.max_outputs)

    def _model_notes(self, options: EngineOptions, notes: list[str]) -> bool:
        """Notes on what the loaded model is; whether its layers forget a finished sample's prompt."""
        model = self._model
        like = model.meta("aimo_gguf.synthetic_like") if model.meta("aimo_gguf.synthetic") == "true" else None
        if like is not None:
            notes.append(f"{Path(options.model_path).name} is synthetic: random weights with the shapes of {like} "
                         f"(aimo-gguf synth); its speed and memory are real, its answers mean nothing")
        n_ctx_train = model.n_ctx_train
        if options.ctx > n_ctx_train > 0:
            notes.append(f"context {options.ctx} is longer than the model was trained for ({n_ctx_train})")
        # Sliding-window layers drop a sequence's cells once they fall behind the window, and recurrent
        # state cannot be cut at a position: a finished sample's prompt is not all there to reuse.
        windowed = model.n_swa > 0 or model.is_recurrent
        if options.cache_prompts and windowed:
            notes.append("prompt reuse is off: this model's sliding-window or recurrent layers do not keep "
                         "a finished sample's prompt")
        return windowed

    def _load_info(self, *, layers: int, supported: bool, notes: list[str], seconds: float) -> LoadInfo:
        model, options = self._model, self.options
        n_layers = model.n_layers
        return LoadInfo(
            model_path=options.model_path,
            description=model.description,
            n_layers=n_layers,
            n_params=model.n_params,
            size_bytes=model.size_bytes,
            n_gpu_layers_requested=options.n_gpu_layers,
            n_gpu_layers=(n_layers + 1 if layers < 0 else min(layers, n_layers + 1)),
            gpu_offload_supported=supported,
            n_ctx_seq=self.n_ctx_seq,
            n_seq_max=self.batch_size,
            kv_unified=self.kv_unified,
            kv_type=options.kv_type,
            share_prompts=self.share_prompts,
            cache_prompts=self.cache_prompts,
            threads=self.threads,
            notes=tuple(notes),
            load_seconds=seconds,
            confidence=self.confidence is not None,
            repack=self.extra_buffers,
            sampler=self._sampling.path,
            architecture=model.meta("general.architecture") or "",
            name=model.meta("general.name") or "",
        )

    # --- lifetime -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free every C object the engine owns, samplers first. Safe to call twice."""
        if self._sampling is not None:
            self._sampling.close()  # backend chains leave the context before it goes
        for owner in (self._batch, self._context, self._model):
            if owner is not None:
                owner.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: llama_cpp may already be gone

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- vocabulary and metadata --------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; a doubled BOS (template plus tokenizer) is collapsed."""
        return self._model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to (control tokens render empty)."""
        return self._model.piece(token)

    def token_text(self, token: int) -> str:
        """A special token's own text (``<|im_start|>``), as a chat template writes it."""
        return self._model.token_text(token)

    @property
    def bos_token(self) -> str:
        bos = self._model.bos
        return self.token_text(bos) if bos >= 0 else ""

    @property
    def eos_token(self) -> str:
        eos = self._model.eos
        return self.token_text(eos) if eos >= 0 else ""

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored in the GGUF (``tokenizer.chat_template``)."""
        return self._model.chat_template

    # --- generation ---------------------------------------------------------------------------------------

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """The model's next-token logits after each of ``tokens``: shape (len(tokens), n_vocab).

        One sequence, decoded from an empty cache in chunks of the token
        budget; used to compare a quantized model with its reference.
        """
        if not tokens:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        if len(tokens) > self.n_ctx_seq:
            raise InputError(f"{len(tokens)} tokens do not fit a context of {self.n_ctx_seq}")
        context, batch = self._context, self._batch
        context.seq_rm(0)
        if self._slot_cache is not None:
            self._slot_cache[0] = []
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        step = min(self.token_budget, self.max_outputs)
        for start in range(0, len(tokens), step):
            chunk = tokens[start:start + step]
            for i, t in enumerate(chunk):
                batch.token[i] = t
                batch.pos[i] = start + i
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(chunk)
            rc = context.decode(batch)
            if rc != 0:
                raise EngineError(f"llama_decode failed with code {rc}{llama.last_error()}")
            out[start:start + len(chunk)] = context.logits(len(chunk))
        context.seq_rm(0)
        return out

    def generate(self, requests: Iterable[Request], *, on_step: Callable[[], None] | None = None
                 ) -> Iterator[Completion]:
        """Decode ``requests`` in one continuous batch; yield each as it finishes.

        Requests are pulled from the iterable only when a slot is free, so the
        caller can decide lazily what runs next (and skip what is no longer
        needed). Completions come in finishing order, not request order.
        ``on_step`` is called after every step, whatever it did.
        """
        model, context, batch = self._model, self._context, self._batch
        scheduler = Scheduler(
            requests, n_slots=self.batch_size, n_ctx_seq=self.n_ctx_seq, n_ctx_total=context.n_ctx,
            kv_unified=self.kv_unified, share_prompts=self.share_prompts, token_budget=self.token_budget,
            stats=self.stats, tokenize=lambda text, special=False: model.tokenize(text, add_special=False,
                                                                                 parse_special=special),
            piece=model.piece, stops=self._stops, max_preemptions=self.max_preemptions, slot_cache=self._slot_cache,
            windowed=model.n_swa > 0)
        stats = self.stats
        step = on_step or (lambda: None)
        cpu = time.thread_time if self.cpu_clock else _no_clock
        try:
            while True:
                t_step = time.perf_counter()
                c_step = cpu()
                plan = scheduler.schedule()
                self._apply(plan, scheduler)
                finished = scheduler.take_finished()
                if finished:
                    yield from self._flush(finished)
                if plan.done:
                    return
                if not plan.n_tokens:
                    if plan.waiting_on_tools:
                        time.sleep(0.001)  # every sequence waits on a tool: do not spin
                    step()  # the caller's clock keeps running (time limits)
                    continue
                self._fill(batch, plan)
                c0 = cpu()
                t0 = time.perf_counter()
                rc = context.decode(batch)
                t1 = time.perf_counter()
                c1 = cpu()
                stats.decode_seconds += t1 - t0
                if rc == 1:
                    # No KV slot: the memory is as before the call.
                    scheduler.preempt()
                    self._release(scheduler.take_released())
                    finished = scheduler.take_finished()
                    if finished:
                        yield from self._flush(finished)
                    step()
                    continue
                if rc != 0:
                    raise EngineError(f"llama_decode failed with code {rc}{llama.last_error()}")
                scheduler.decoded(plan)
                self._sample(plan, scheduler)
                self._release(scheduler.take_released())
                t_end = time.perf_counter()
                stats.sample_seconds += t_end - t1
                stats.step_seconds += t_end - t_step
                stats.host_cpu_seconds += cpu() - c1 + c0 - c_step
                finished = scheduler.take_finished()
                if finished:
                    yield from self._flush(finished)
                step()
        finally:
            # Stopped early (caller closed the generator, Ctrl-C): free the sequences.
            self._release(scheduler.close())

    # --- the parts of a step ------------------------------------------------------------------------------

    def _apply(self, plan: StepPlan, scheduler: Scheduler) -> None:
        """Free what the scheduler released, trim reused slots, give new sequences samplers, copy shared
        prompts."""
        self._release(scheduler.take_released())
        context = self._context
        for seq_id, keep in plan.trims:
            if not context.seq_rm(seq_id, keep):  # cannot happen with reuse on: never on recurrent memory
                raise EngineError(f"llama.cpp could not cut sequence {seq_id} at position {keep}")
        settings = self.confidence
        for slot in plan.admitted:
            if settings is not None:
                slot.tracker = Tracker(settings)  # also after a preemption: the sample starts over
            self._sampling.admit(slot.seq_id, slot.request)
        for donor, seq_id, keep in plan.copies:
            context.seq_rm(seq_id)  # a reused slot may still hold cells of its own
            context.seq_cp(donor, seq_id)
            context.seq_rm(seq_id, keep)

    def _release(self, slots: list[Slot]) -> None:
        """Free released sequences' samplers and clear their KV cells (unless slots keep their prompts)."""
        for slot in slots:
            if self._slot_cache is None:
                self._context.seq_rm(slot.seq_id)
            self._sampling.release(slot.seq_id)

    @staticmethod
    def _fill(batch: llama.LlamaBatch, plan: StepPlan) -> None:
        """Write the plan's tokens into the batch, asking for logits where a sequence samples."""
        b_token, b_pos, b_seq, b_logits = batch.token, batch.pos, batch.seq_id, batch.logits
        n = 0
        for slot in plan.batch:
            feed, seq_id = slot.feed, slot.seq_id
            start = slot.step_start
            pos = slot.pos - (slot.fed - start)
            for j in range(slot.fed - start):
                b_token[n] = feed[start + j]
                b_pos[n] = pos + j
                b_seq[n][0] = seq_id
                b_logits[n] = 0
                n += 1
            if slot.logit_index >= 0:
                b_logits[n - 1] = 1
        batch.n_tokens = n

    def _sample(self, plan: StepPlan, scheduler: Scheduler) -> None:
        """One token for every sequence whose inputs are all decoded, handed to the scheduler."""
        sampling = plan.sampling
        if not sampling:
            return
        stats = self.stats
        tokens, signals = self._sampling.draw(sampling, stats)
        if signals is not None:
            t0 = time.perf_counter()
            for slot, h, c, lp in zip(sampling, signals.entropy, signals.confidence, signals.logprob, strict=True):
                slot.tracker.add(h, c, lp)
            stats.confidence_seconds += time.perf_counter() - t0
        piece, eog, ignore_eos = self._model.piece, self._eog, self.ignore_eos
        for slot, token in zip(sampling, tokens, strict=True):
            text = piece(token, True) if slot.request.render_special else piece(token)
            scheduler.accept(slot, token, text, eog=token in eog and not ignore_eos)

    def _flush(self, finished: list[Completion]) -> Iterator[Completion]:
        reasons = self.stats.finish_reasons
        for completion in finished:
            reasons[completion.finish_reason] += 1
        yield from finished
