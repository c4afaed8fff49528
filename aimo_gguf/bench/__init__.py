"""``aimo-gguf bench``: will this model, quantization and batch size fit and finish in time?

One run on one model measures the same work (synthetic problems rendered with
the model's chat template, ``samples`` samples each, exactly ``max_tokens``
generated tokens per sample because end-of-generation tokens are masked) done

- one sample at a time by a loop of ``llama_cpp.Llama.create_completion``
  calls, the baseline (EOS suppressed with a logit bias of -inf on every
  end-of-generation token), and
- by the batched :class:`~aimo_gguf.engine.Engine` at each batch size, a fresh
  engine (model load and context) per batch size, and per sampling path
  (``samplers``: several alternate, so that a drift in the machine's speed
  hits them alike).

Each row reports prompt and generation throughput, problems per second, the
mean time of a generation step, the process's peak RSS during the row and its
growth over the RSS before the model was loaded, the KV cache size (from
``aimo_gguf.fit.memory``'s estimate), on a GPU build the peak device memory in use
(NVML, through the optional ``nvidia-ml-py`` package), and the speed-up of its
generated tokens/s over the baseline's.

The engine rows run first (the first one also tokenizes the prompts), then the
baseline, which the table shows first. The parts: ``workload`` (batch sizes,
synthetic problems), ``measure`` (the rows), ``probes`` (RSS, NVML),
``results`` (the dataclasses, their table and JSON), ``chart`` (the PNG),
``stress`` (the full pipeline under load, and time projections).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..config import RunConfig
from ..engine import default_threads
from ..engine.api import DEFAULT_SPLIT_MODE, SAMPLER_AUTO
from ..engine.limits import check_context
from ..errors import InputError
from ..gguf.files import resolve_model
from .chart import plot, require_matplotlib
from .measure import Progress, baseline_row, engine_row, tokenize_only
from .probes import machine_info
from .results import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROBLEMS,
    DEFAULT_SAMPLES,
    KIND_BASELINE,
    KIND_ENGINE,
    BenchResult,
    BenchRow,
    BenchSettings,
)
from .workload import (
    PROBLEM_TEMPLATE,
    parse_batch_sizes,
    parse_samplers,
    resolve_auto,
    synthetic_problems,
)

__all__ = [
    "DEFAULT_BATCH_SIZES", "DEFAULT_MAX_TOKENS", "DEFAULT_PROBLEMS", "DEFAULT_SAMPLES", "KIND_BASELINE",
    "KIND_ENGINE", "PROBLEM_TEMPLATE", "BenchResult", "BenchRow", "BenchSettings", "bench", "parse_batch_sizes",
    "check_request", "parse_samplers", "plot", "require_matplotlib", "synthetic_problems",
]


def bench(
    *,
    model: str | Path | None = None,
    n_gpu_layers: int | str = 0,
    threads: int | None = None,
    batch_sizes: str | Iterable[int] = DEFAULT_BATCH_SIZES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    problems: int = DEFAULT_PROBLEMS,
    samples: int = DEFAULT_SAMPLES,
    ctx: int = 0,
    kv_type: str = "f16",
    flash_attn: str = "auto",
    max_memory: str | None = None,
    baseline: bool = True,
    confidence: bool = False,
    progress: bool = True,
    split_mode: str = DEFAULT_SPLIT_MODE,
    tensor_split: str | None = None,
    main_gpu: int = 0,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    vote: str | None = None,
    samplers: str | Iterable[str] = SAMPLER_AUTO,
) -> BenchResult:
    """Measure the create_completion loop and the engine at each batch size on the same work.

    The keywords are ``aimo-gguf bench``'s flags. ``problems`` synthetic problems x ``samples`` samples
    x exactly ``max_tokens`` tokens each (end-of-generation masked), sampled with the ``run`` defaults
    and seeds. ``ctx`` is one sequence's context (0: the ``run`` default, 512 + ``max_tokens``).

    Raises InputError for bad values and ModelError for a missing or non-GGUF
    model; a batch size whose model or context cannot be created gives a row
    with ``error`` set, and the other rows still run.

    With ``confidence`` each batch size runs four times, without and with per-token confidence in
    the order off, on, on, off (so a drift in the machine's speed hits both alike); the table keeps
    the faster run of each, and the row with confidence carries its throughput over the one without.
    ``temperature``, ``top_k``, ``top_p`` and ``min_p`` are the sampler (None: run's defaults); a
    ``vote`` that needs the confidence turns it on in every row. ``samplers`` ('batched,chain') are
    the engine's sampling paths, measured in the same alternating way, each row saying which.
    Progress lines go to stderr.
    """
    if isinstance(problems, bool) or not isinstance(problems, int) or problems < 1:
        raise InputError(f"--problems must be at least 1, got {problems}")
    paths = parse_samplers(samplers)
    config = _run_config(
        confidence=confidence, sampling=dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, vote=vote),
        model=None if model is None else str(model), n_gpu_layers=n_gpu_layers, threads=threads,
        max_tokens=max_tokens, samples=samples, ctx=ctx, kv_type=kv_type, flash_attn=flash_attn,
        max_memory=max_memory, split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu,
    )
    path = resolve_model(config.model)
    sizes, config = resolve_auto(config, path, batch_sizes)
    check_context(path, ctx=config.sequence_ctx, batch_size=max(sizes), what=config.ctx_source)  # before any load
    from ..engine.llama import (
        supports_gpu_offload,  # here: importing the CLI must not load llama.cpp
    )

    gpu_build = supports_gpu_offload()
    say = Progress(progress)
    work = synthetic_problems(problems)
    settings = BenchSettings(
        model=str(path), n_gpu_layers=config.n_gpu_layers, threads=config.threads, batch_sizes=sizes,
        max_tokens=max_tokens, problems=problems, samples=samples, ctx=config.sequence_ctx, baseline=baseline,
        temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, min_p=config.min_p,
        seed=config.seed, kv_type=kv_type, flash_attn=flash_attn, vote=config.vote, samplers=paths,
    )
    result = BenchResult(settings=settings, baseline=None, machine=machine_info(gpu_build))
    say(f"{path.name}: {settings.work}, EOS suppressed, "
        f"{config.threads} threads, batch sizes {','.join(map(str, sizes))}"
        + ("" if baseline else ", no baseline"))
    prompts = _engine_rows(result, path, config, work, say, gpu_build=gpu_build, confidence=confidence)
    if baseline:
        prompts = _baseline(result, path, config, work, prompts, say, gpu_build=gpu_build)
    _finish(result, prompts)
    return result


def check_request(*, model: str | Path | None = None, batch_sizes: str | Iterable[int] = DEFAULT_BATCH_SIZES,
                  samplers: str | Iterable[str] = SAMPLER_AUTO, json_file: str | Path | None = None,
                  plot: str | Path | None = None) -> None:
    """``bench``'s checks that need no model load: the lists, the plot's matplotlib, and the output files
    (``--json-file``, ``--plot``), which must be writable and none of the model's files."""
    from ..gguf.parts import model_paths
    from ..outputs import check_distinct, check_writable

    if not (isinstance(batch_sizes, str) and "auto" in batch_sizes):
        parse_batch_sizes(batch_sizes)
    parse_samplers(samplers)
    if plot is not None:
        require_matplotlib()
    check_distinct({**model_paths(resolve_model(model)), "--json-file": json_file, "--plot": plot},
                   outputs={"--json-file", "--plot"})
    if plot is not None:
        check_writable(plot, "the plot")
    if json_file is not None:
        check_writable(json_file, "the JSON")


def _run_config(*, confidence: bool, sampling: dict, **fields) -> RunConfig:
    """The run settings every row shares: EOS masked, no early stop; ``sampling`` None is run's default."""
    config = RunConfig(ignore_eos=True, early_stop=False, **fields,
                       **{k: v for k, v in sampling.items() if v is not None})
    if confidence and config.needs_confidence:
        raise InputError(f"--confidence measures with and without the confidence; --vote {config.vote} needs it "
                         "in every row: drop one of them")
    config.threads = config.threads or default_threads()
    return config


def _engine_rows(result: BenchResult, path: Path, config: RunConfig, work, say, *, gpu_build: bool,
                 confidence: bool) -> list | None:
    """The engine's rows, each batch size and variant in A B B A order; returns the prompts (None if no
    engine loaded)."""
    settings, prompts = result.settings, None
    variants = [(on, p) for p in settings.samplers
                for on in ((False, True) if confidence else (config.needs_confidence,))]
    for size in settings.batch_sizes:
        runs: dict[tuple[bool, str], list[BenchRow]] = {v: [] for v in variants}
        # Each variant, then the same in reverse (A B B A): a drift in the machine's speed hits all alike.
        for on, p in variants + variants[::-1] if len(variants) > 1 else variants:
            row, prompts, description = engine_row(path, config, size, work, prompts, gpu_build, say, result.notes,
                                                   confidence=on, sampler=p)
            settings.model_description = settings.model_description or description
            runs[(on, p)].append(row)
        for p in settings.samplers:
            best = {on: max(runs[(on, p)], key=lambda r: r.generated_tokens_per_s)
                    for on in (False, True) if (on, p) in runs}
            for on in sorted(best):
                row = best[on]
                if confidence and on and best[False].generated_tokens_per_s > 0 and not row.error:
                    row.confidence_ratio = row.generated_tokens_per_s / best[False].generated_tokens_per_s
                result.rows.append(row)
    return prompts


def _baseline(result: BenchResult, path: Path, config: RunConfig, work, prompts: list | None, say, *,
              gpu_build: bool) -> list | None:
    if prompts is None:  # no engine could load: tokenize with the smallest one there is
        prompts = tokenize_only(path, config, work)
    if prompts is None:
        result.baseline = BenchRow(kind=KIND_BASELINE, batch_size=1, error="the model could not be loaded")
    else:
        result.baseline = baseline_row(path, config, work, prompts, config.sequence_ctx, gpu_build, say)
    return prompts


def _finish(result: BenchResult, prompts: list | None) -> None:
    """The prompts' lengths, and every row's speed-up over the baseline."""
    if prompts is not None:
        result.settings.prompt_tokens_per_problem = tuple(len(p) for p in prompts)
    base = result.baseline
    if base is not None and not base.error and base.generated_tokens_per_s > 0:
        for row in result.all_rows:
            if not row.error or row.generated_tokens:
                row.speedup = row.generated_tokens_per_s / base.generated_tokens_per_s
