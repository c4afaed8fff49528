"""The measurements: the batched engine at one batch size, and the ``create_completion`` loop.

Both do the same work: synthetic problems rendered with the model's chat
template, ``samples`` samples each, exactly ``max_tokens`` generated tokens per
sample (end-of-generation tokens are masked). Load times are measured but
kept out of the throughput figures on both sides.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import RunConfig
from ..engine import FINISH_LENGTH, Request, SamplingParams
from ..engine.api import BatchEngine
from ..errors import AimoError, InputError
from ..fit.plan import engine_options
from ..pipeline.problems import Problem
from ..solving.solver import build_prompts, sample_seed
from .probes import GpuProbe, RssProbe
from .results import KIND_BASELINE, KIND_ENGINE, BenchRow

PROGRESS_INTERVAL = 10.0  # seconds between progress lines inside one row


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"aimo-gguf bench: {text}", file=sys.stderr, flush=True)


_HOST_PARTS = ("step_seconds", "decode_seconds", "draw_seconds", "confidence_seconds", "host_cpu_seconds",
               "sequence_steps")


class _StepWatch:
    """Per-step bookkeeping from the engine's counters (``on_step`` runs after every decode)."""

    def __init__(self, engine: BatchEngine, rss: RssProbe, gpu: GpuProbe | None, say, label: str, total: int) -> None:
        self.stats = engine.stats
        self.rss, self.gpu, self.say, self.label, self.total = rss, gpu, say, label, total
        self.prompt_tokens = self.stats.prompt_tokens
        self.step_seconds = self.stats.step_seconds
        self.generated = self.stats.generated_tokens
        self.prompt_step_seconds = 0.0  # steps that decoded prompt tokens (and maybe some generation)
        self.gen_step_seconds = 0.0  # steps that decoded only generated tokens
        self.gen_steps = 0
        self.last = {name: getattr(self.stats, name) for name in _HOST_PARTS}
        self.gen = dict.fromkeys(_HOST_PARTS, 0)  # the counters' growth over generation-only steps
        self.t0 = self.last_print = time.perf_counter()

    def __call__(self) -> None:
        s = self.stats
        dt = s.step_seconds - self.step_seconds
        generation = s.prompt_tokens == self.prompt_tokens
        if not generation:
            self.prompt_step_seconds += dt
        else:
            self.gen_step_seconds += dt
            self.gen_steps += 1
        for name in _HOST_PARTS:
            now = getattr(s, name)
            if generation:
                self.gen[name] += now - self.last[name]
            self.last[name] = now
        self.prompt_tokens, self.step_seconds = s.prompt_tokens, s.step_seconds
        now = time.perf_counter()
        self.rss.sample(now)
        if self.gpu is not None:
            self.gpu.sample(now)
        if now - self.last_print >= PROGRESS_INTERVAL:
            self.last_print = now
            done = s.generated_tokens - self.generated
            self.say(f"{self.label}: {done}/{self.total} tokens, {done / (now - self.t0):.1f} tokens/s")


def engine_row(
    model: Path, config: RunConfig, batch_size: int, problems: Sequence[Problem], prompts: list | None,
    gpu_build: bool, say, notes: list[str], *, confidence: bool = False, sampler: str = "",
) -> tuple[BenchRow, list | None, str]:
    """Run the work on a fresh engine of ``batch_size`` sequences (computing per-token confidence with
    ``confidence``, drawing tokens on the ``sampler`` path: '' for the config's); also returns the prompts
    and the description."""
    label = f"batch {batch_size}" + (f", {sampler} sampler" if sampler else "") + (", confidence" if confidence else "")
    row = BenchRow(kind=KIND_ENGINE, batch_size=batch_size, confidence=confidence)
    config = replace(config, confidence=confidence, sampler=sampler or config.sampler)
    rss = RssProbe()
    gpu = GpuProbe.open(gpu_build)
    say(f"{label}: loading the model and a context of {batch_size} x {config.sequence_ctx} tokens")
    from ..engine.engine import (
        Engine,  # here: importing the CLI must not load llama.cpp
    )

    t_load = time.perf_counter()
    try:
        engine = Engine(engine_options(config, model, batch_size=batch_size, cpu_clock=True))  # config has ignore_eos=True
    except InputError:
        raise
    except AimoError as e:  # the model or the context does not fit: the row says so, the others still run
        _load_failed(row, str(e), rss, t_load, say, label)
        return row, prompts, ""
    with engine:
        info = engine.info
        row.sampler = info.sampler
        row.load_seconds = time.perf_counter() - t_load
        row.n_gpu_layers = info.n_gpu_layers
        for note in info.notes:
            if note not in notes:
                notes.append(note)
                say(note)
        if prompts is None:
            prompts = build_prompts(engine, problems, config)
            _check_ctx(prompts, config)
        sampling = SamplingParams(
            temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, min_p=config.min_p
        )
        requests = [
            Request(key=(i, j), prompt=prompts[i], max_tokens=config.max_tokens,
                    seed=sample_seed(config.seed, p.id, j), sampling=sampling, prefix_key=i)
            for i, p in enumerate(problems)
            for j in range(config.samples)
        ]
        total = len(requests) * config.max_tokens
        watch = _StepWatch(engine, rss, gpu, say, label, total)
        say(f"{label}: generating {len(requests)} samples x {config.max_tokens} tokens")
        stats = engine.stats
        t0 = time.perf_counter()
        try:
            for completion in engine.generate(requests, on_step=watch):
                row.completions += 1
                if completion.finish_reason != FINISH_LENGTH:
                    row.error = row.error or f"a sample ended with '{completion.finish_reason}'"
        except InputError:
            raise
        except AimoError as e:
            row.error = str(e)
        row.seconds = time.perf_counter() - t0
        row.prompt_tokens = stats.prompt_tokens
        row.reused_prompt_tokens = stats.shared_prompt_tokens
        row.generated_tokens = stats.generated_tokens
        if row.generated_tokens != total and not row.error:
            row.error = f"generated {row.generated_tokens} tokens instead of {total} (is --ctx too small?)"
        row.steps = stats.steps
        if watch.prompt_step_seconds > 0 and row.prompt_tokens:
            row.prompt_tokens_per_s = row.prompt_tokens / watch.prompt_step_seconds
        if watch.gen_steps:
            row.step_ms = 1000 * watch.gen_step_seconds / watch.gen_steps
        _host_work(row, watch.gen)
        _peaks(row, rss, gpu)
        description, n_ctx_seq, n_gpu = info.description, info.n_ctx_seq, info.n_gpu_layers
    row.rss_growth_mb = row.peak_rss_mb - rss.before
    _set_estimate(row, model, n_ctx_seq, batch_size, n_gpu, config.kv_type)  # after the RSS peak: it reads the GGUF header
    _rates(row, len(problems))
    say(_row_line(label, row))
    return row, prompts, description


def baseline_row(
    model: Path, config: RunConfig, problems: Sequence[Problem], prompts: list, n_ctx_seq: int,
    gpu_build: bool, say,
) -> BenchRow:
    """The same work as a loop of ``Llama.create_completion`` calls, one sample at a time.

    It goes through llama-cpp-python's public ``Llama`` API; the EOG tokens and
    llama.cpp's own timers come from ``aimo_gguf.engine.llama`` on ``Llama``'s
    public ``model`` and ``ctx`` pointers.
    """
    from ..engine.llama import GGML_KV_TYPES, eog_tokens_of, perf_counters, perf_reset
    from ..engine.probe import open_llama

    label = "create_completion loop"
    row = BenchRow(kind=KIND_BASELINE, batch_size=1)
    rss = RssProbe()
    gpu = GpuProbe.open(gpu_build)
    threads = config.threads
    say(f"{label}: loading the model with llama_cpp.Llama, context {n_ctx_seq} tokens")
    t_load = time.perf_counter()
    try:
        kv = GGML_KV_TYPES[config.kv_type]
        llm = open_llama(
            model, repack=config.repack, n_gpu_layers=config.n_gpu_layers, n_ctx=n_ctx_seq, n_threads=threads,
            n_threads_batch=threads, verbose=False, type_k=kv, type_v=kv,
            # Llama's flash attention is on or off; a quantized KV cache needs it on
            flash_attn=config.flash_attn == "on" or config.kv_type != "f16",
        )
    except Exception as e:  # llama_cpp raises ValueError when the model or context does not load
        _load_failed(row, f"llama_cpp.Llama could not load {model}: {e}", rss, t_load, say, label, cause=e)
        return row
    try:
        row.load_seconds = time.perf_counter() - t_load
        bias = {t: float("-inf") for t in eog_tokens_of(llm.model)}
        perf_reset(llm.ctx)
        total = len(problems) * config.samples * config.max_tokens
        say(f"{label}: generating {len(problems) * config.samples} samples x {config.max_tokens} tokens, one at a time")
        t0 = last_print = time.perf_counter()
        for problem, prompt in zip(problems, prompts):
            for j in range(config.samples):
                try:
                    out = llm.create_completion(
                        list(prompt), max_tokens=config.max_tokens, temperature=config.temperature,
                        top_k=config.top_k, top_p=config.top_p, min_p=config.min_p,
                        seed=sample_seed(config.seed, problem.id, j), logit_bias=bias,
                    )
                except (ValueError, RuntimeError) as e:  # e.g. "Requested tokens exceed context window"
                    row.error = f"create_completion failed: {e}"
                    break
                row.completions += 1
                row.generated_tokens += out["usage"]["completion_tokens"]
                now = time.perf_counter()
                rss.sample(now)
                if gpu is not None:
                    gpu.sample(now)
                if now - last_print >= PROGRESS_INTERVAL:
                    last_print = now
                    say(f"{label}: {row.generated_tokens}/{total} tokens, "
                        f"{row.generated_tokens / (now - t0):.1f} tokens/s")
            if row.error:
                break
        row.seconds = time.perf_counter() - t0
        _llama_perf(row, perf_counters(llm.ctx))
        _peaks(row, rss, gpu)
    finally:
        llm.close()
    row.rss_growth_mb = row.peak_rss_mb - rss.before
    _set_estimate(row, model, n_ctx_seq, 1, config.n_gpu_layers, config.kv_type, max_outputs=512)  # Llama's n_batch
    # create_completion may run a token past max_tokens to finish a UTF-8 character: real work, no error.
    if row.generated_tokens < total and not row.error:
        row.error = f"generated {row.generated_tokens} tokens instead of {total}"
    _rates(row, len(problems))
    say(_row_line(label, row))
    return row


def _load_failed(row: BenchRow, error: str, rss: RssProbe, t_load: float, say, label: str, *,
                 cause: Exception | str | None = None) -> None:
    row.error = error
    row.load_seconds = time.perf_counter() - t_load
    row.peak_rss_mb = rss.peak()
    row.rss_growth_mb = row.peak_rss_mb - rss.before
    say(f"{label}: failed: {error if cause is None else cause}")


def _peaks(row: BenchRow, rss: RssProbe, gpu: GpuProbe | None) -> None:
    row.peak_rss_mb = rss.peak()
    row.gpu_peak_mb = gpu.peak_mb() if gpu is not None else None
    row.gpu_growth_mb = gpu.growth_mb() if gpu is not None else None


def _llama_perf(row: BenchRow, perf: dict) -> None:
    """The baseline's prompt and step figures from llama.cpp's own timers."""
    row.prompt_tokens = perf["prompt_tokens"]
    row.steps = perf["eval_tokens"]
    if perf["prompt_ms"] > 0 and perf["prompt_tokens"]:
        row.prompt_tokens_per_s = perf["prompt_tokens"] / (perf["prompt_ms"] / 1000)
    if perf["eval_tokens"]:
        row.step_ms = perf["eval_ms"] / perf["eval_tokens"]


def _host_work(row: BenchRow, gen: dict) -> None:
    """Host milliseconds per sequence-step and their parts, from the counters' growth over generation steps."""
    n = gen["sequence_steps"]
    if not n:
        return
    row.host_ms = 1000 * (gen["step_seconds"] - gen["decode_seconds"]) / n
    row.draw_ms = 1000 * gen["draw_seconds"] / n
    row.confidence_ms = 1000 * gen["confidence_seconds"] / n
    row.rest_ms = row.host_ms - row.draw_ms - row.confidence_ms
    row.host_cpu_ms = 1000 * gen["host_cpu_seconds"] / n


def _rates(row: BenchRow, n_problems: int) -> None:
    if row.seconds > 0:
        row.generated_tokens_per_s = row.generated_tokens / row.seconds
        row.problems_per_s = n_problems / row.seconds if row.completions else 0.0


def _row_line(label: str, row: BenchRow) -> str:
    return (f"{label}: {row.generated_tokens} tokens in {row.seconds:.1f} s, "
            f"{row.generated_tokens_per_s:.1f} tokens/s, peak RSS {row.peak_rss_mb:.0f} MiB"
            + (f" ({row.error})" if row.error else ""))


def _check_ctx(prompts: list, config: RunConfig) -> None:
    """Every sample must fit its sequence, or rows would not do the same work.

    (It also keeps each decode within llama.cpp's n_batch, which it caps at
    the requested context: a larger batch aborts the process.)
    """
    need = max(len(p) for p in prompts) + config.max_tokens
    if need > config.sequence_ctx:
        raise InputError(
            f"--ctx {config.sequence_ctx} is too small: the longest prompt has {need - config.max_tokens} tokens "
            f"and --max-tokens is {config.max_tokens}: use --ctx {need} or more, or 0 (automatic)"
        )


def tokenize_only(path: Path, config: RunConfig, problems: Sequence[Problem]) -> list | None:
    from ..engine.engine import Engine

    try:
        with Engine(path, ctx=16, batch_size=1, threads=config.threads) as engine:
            prompts = build_prompts(engine, problems, config)
    except AimoError:
        return None
    _check_ctx(prompts, config)
    return prompts


@dataclass
class _Process:
    """What outlives one row: CUDA's context is made by the first row of a process and stays for the others."""

    rows: int = 0


_PROCESS = _Process()


def _set_estimate(row: BenchRow, model: Path, ctx: int, batch_size: int, n_gpu_layers: int, kv_type: str,
                  max_outputs: int | None = None) -> None:
    """Fill the row's KV size and memory estimate from ``aimo_gguf.fit.memory`` (left None if unknown)."""
    from ..fit import memory

    try:
        est = memory.measure(model, ctx=ctx, batch_size=batch_size, n_gpu_layers=n_gpu_layers, kv_type=kv_type,
                             max_outputs=max_outputs)
    except AimoError:  # an unreadable header: the columns show "-"
        return
    row.kv_bytes = int(est.kv_cpu + est.kv_gpu)
    row.estimate_mb = est.total / 2**20
    first = _PROCESS.rows == 0
    _PROCESS.rows += 1
    if n_gpu_layers != 0:
        from ..fit.plan import GPU_RUNTIME_RESERVE

        # NVML's growth over a row counts CUDA's own context only where the row made it.
        row.estimate_gpu_mb = (est.gpu + (GPU_RUNTIME_RESERVE if first else 0)) / 2**20
