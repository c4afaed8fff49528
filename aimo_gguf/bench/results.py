"""What ``aimo-gguf bench`` measured: one row per configuration, the settings, the machine; and its
table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
DEFAULT_MAX_TOKENS = 128
DEFAULT_PROBLEMS = 16
DEFAULT_SAMPLES = 1

KIND_BASELINE = "baseline"
KIND_ENGINE = "engine"


@dataclass
class BenchRow:
    """One measured configuration: the create_completion loop or the engine at one batch size.

    Throughputs exclude the model load (``load_seconds``). ``None`` means not
    measured or not available (shown as ``-``).
    """

    kind: str  # "baseline" (the create_completion loop) or "engine"
    batch_size: int  # sequences decoded together (1 for the baseline)
    prompt_tokens: int = 0  # prompt tokens decoded (the baseline reuses a problem's prompt between samples)
    reused_prompt_tokens: int = 0  # engine: prompt tokens not decoded (kept in the slot or copied from a sibling)
    generated_tokens: int = 0  # tokens generated, all samples (problems x samples x max_tokens when nothing failed)
    completions: int = 0  # samples that came back
    seconds: float = 0.0  # wall time of the generation, from the first request to the last token
    load_seconds: float = 0.0  # model load and context creation
    prompt_tokens_per_s: float | None = None  # prompt tokens / time of the decodes that processed prompt tokens
    generated_tokens_per_s: float = 0.0  # generated_tokens / seconds
    problems_per_s: float = 0.0  # problems / seconds
    step_ms: float | None = None  # mean time of a generation step (one llama_decode of one token per sequence)
    steps: int = 0  # llama_decode calls (engine) or single-token decodes (baseline)
    peak_rss_mb: float | None = None  # the process's peak resident memory during the row, MiB
    rss_growth_mb: float | None = None  # that peak minus the resident memory before the model was loaded, MiB
    kv_bytes: int | None = None  # KV cache of the whole context (aimo_gguf.fit.memory estimate)
    estimate_mb: float | None = None  # aimo_gguf.fit.memory's estimate of the whole configuration, beside RSS growth
    gpu_peak_mb: float | None = None  # peak GPU memory in use on the device during the row (NVML), MiB
    gpu_growth_mb: float | None = None  # that peak minus what was in use before the load: the row's own, MiB
    estimate_gpu_mb: float | None = None  # the estimate's GPU part, MiB, with CUDA's own context in the
    # process's first row (the one that makes it)
    n_gpu_layers: int = 0  # layers actually offloaded
    speedup: float | None = None  # generated_tokens_per_s over the baseline's
    error: str | None = None  # why the row could not run (the model or context did not fit, ...)
    confidence: bool = False  # the engine computed per-token confidence (bench --confidence, --vote)
    confidence_ratio: float | None = None  # with confidence: its throughput over the same batch's without
    sampler: str = ""  # engine: where it drew tokens (batched, chain, backend; SAMPLER_PATHS)
    # Host work per sequence-step, over the steps that decoded only generated tokens: everything in a step
    # but llama_decode (engine counters), and the parts of it that drew the tokens, computed the confidence
    # signals, and the rest (the batch, the scheduler, taking the tokens in). Milliseconds.
    host_ms: float | None = None
    draw_ms: float | None = None
    confidence_ms: float | None = None
    rest_ms: float | None = None
    host_cpu_ms: float | None = None  # the host work in the decoding thread's CPU time: what a busy machine
    # cannot inflate (it counts no time spent waiting for a core)

    @property
    def label(self) -> str:
        if self.kind == KIND_BASELINE:
            return "create_completion loop"
        return (f"engine, batch {self.batch_size}" + (f", {self.sampler} sampler" if self.sampler else "")
                + (", confidence" if self.confidence else ""))


@dataclass
class BenchSettings:
    """What every row of one bench run does."""

    model: str
    model_description: str = ""  # llama.cpp's description, once a model has loaded
    n_gpu_layers: int = 0  # requested
    threads: int = 0
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    max_tokens: int = DEFAULT_MAX_TOKENS
    problems: int = DEFAULT_PROBLEMS
    samples: int = DEFAULT_SAMPLES
    ctx: int = 0  # context of one sequence (prompt allowance + max_tokens unless set)
    baseline: bool = True
    prompt_tokens_per_problem: tuple[int, ...] = ()
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    vote: str = "majority"  # a vote mode other than majority needs (and turns on) the confidence
    samplers: tuple[str, ...] = ("auto",)  # the engine's sampling paths, each measured at every batch size
    seed: int = 0
    kv_type: str = "f16"  # KV cache element type of the engine rows (and the baseline's context)
    flash_attn: str = "auto"  # flash attention of the engine rows
    ignore_eos: bool = True

    @property
    def expected_tokens(self) -> int:
        return self.problems * self.samples * self.max_tokens

    @property
    def work(self) -> str:
        """'16 problems x 1 sample x 128 tokens'."""
        return (f"{_plural(self.problems, 'problem')} x {_plural(self.samples, 'sample')} x "
                f"{_plural(self.max_tokens, 'token')}")


@dataclass
class BenchResult:
    """Everything one bench run measured."""

    settings: BenchSettings
    baseline: BenchRow | None  # None with baseline=False
    rows: list[BenchRow] = field(default_factory=list)  # the engine, one row per batch size, ascending
    # (with --confidence two per batch size: without, then with; with several --samplers one per sampler)
    machine: dict = field(default_factory=dict)  # platform, CPUs, RAM, versions, GPU
    notes: list[str] = field(default_factory=list)  # what the loader had to change, said once

    @property
    def all_rows(self) -> list[BenchRow]:
        return ([self.baseline] if self.baseline is not None else []) + list(self.rows)

    def check_measured(self) -> None:
        """Raise EngineError (exit 1) when no engine row measured anything: a bench of errors is no bench."""
        from ..errors import EngineError

        if self.rows and all(r.error for r in self.rows):
            first = self.rows[0]
            raise EngineError(f"every engine row failed (batch {first.batch_size}: {first.error})")

    def table(self) -> str:
        """A title line and a markdown table: the baseline first, then one row per batch size."""
        return _table(self)

    def write_json(self, path: str | Path) -> None:
        """Settings, machine, baseline and rows as JSON (atomically)."""
        from ..pipeline.problems import write_json_atomic

        write_json_atomic(path, self.to_dict())

    def to_dict(self) -> dict:
        settings = asdict(self.settings)
        settings["batch_sizes"] = list(self.settings.batch_sizes)
        settings["prompt_tokens_per_problem"] = list(self.settings.prompt_tokens_per_problem)
        settings["samplers"] = list(self.settings.samplers)
        settings["expected_generated_tokens"] = self.settings.expected_tokens
        return {
            "settings": settings,
            "machine": dict(self.machine),
            "baseline": _row_dict(self.baseline) if self.baseline is not None else None,
            "rows": [_row_dict(r) for r in self.rows],
            "notes": list(self.notes),
        }


def _row_dict(row: BenchRow) -> dict:
    data = asdict(row)
    data["label"] = row.label
    for key, value in data.items():
        if isinstance(value, float):
            data[key] = round(value, 4)
    return data


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# --- the table ------------------------------------------------------------------

TABLE_COLUMNS = (
    "run", "batch", "generated tokens", "seconds", "prompt tok/s", "gen tok/s", "problems/s", "step ms",
    "host ms/seq-step", "draw ms", "confidence ms", "rest ms", "host CPU ms",
    "peak RSS MiB", "RSS growth MiB", "estimate MiB", "KV cache MiB", "GPU growth / estimate MiB", "speed-up",
)


# The columns from "seconds" to "estimate MiB": the row's field and its format.
_NUMBER_CELLS = (
    ("seconds", ".2f"), ("prompt_tokens_per_s", ".1f"), ("generated_tokens_per_s", ".1f"), ("problems_per_s", ".3f"),
    ("step_ms", ".1f"), ("host_ms", ".3f"), ("draw_ms", ".3f"), ("confidence_ms", ".3f"), ("rest_ms", ".3f"),
    ("host_cpu_ms", ".3f"), ("peak_rss_mb", ".0f"), ("rss_growth_mb", ".0f"), ("estimate_mb", ".0f"),
)


def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _cells(row: BenchRow, *, samplers: bool = False) -> list[str]:
    name = "create_completion loop" if row.kind == KIND_BASELINE else "engine"
    if samplers and row.sampler:  # several sampling paths measured: say which row is which
        name += f", {row.sampler}"
    if row.confidence:
        name += " + confidence" + ("" if row.confidence_ratio is None else f" ({row.confidence_ratio:.1%})")
    batch = "1" if row.kind == KIND_BASELINE else str(row.batch_size)
    if row.error and not row.generated_tokens:
        return [name, batch, "failed"] + ["-"] * (len(TABLE_COLUMNS) - 3)
    return [
        name,
        batch,
        str(row.generated_tokens),
        *(_num(getattr(row, name), spec) for name, spec in _NUMBER_CELLS),
        _num(None if row.kv_bytes is None else row.kv_bytes / 2**20, ".1f"),
        _gpu_cell(row),
        "-" if row.speedup is None else f"{row.speedup:.2f}x",
    ]


def _gpu_cell(row: BenchRow) -> str:
    """NVML's growth during the row beside the estimate's GPU part (with CUDA's context)."""
    if row.gpu_growth_mb is None:
        return "-"
    return f"{row.gpu_growth_mb:.0f} / {_num(row.estimate_gpu_mb, '.0f')}"


def _table(result: BenchResult) -> str:
    s = result.settings
    title = (
        f"{Path(s.model).name}" + (f" ({s.model_description})" if s.model_description else "")
        + f": {s.work}, EOS suppressed, "
        f"context {s.ctx}, KV {s.kv_type}, flash attention {s.flash_attn}, {s.threads} threads, "
        f"GPU layers {s.n_gpu_layers}, {_sampling(s)}"
    )
    lines = [title, "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    failures = []
    several = len(s.samplers) > 1
    for row in result.all_rows:
        lines.append("| " + " | ".join(_cells(row, samplers=several)) + " |")
        if row.error:
            failures.append(f"{row.label}: {row.error}")
    if failures or result.notes:
        lines.append("")
        lines.extend(f"note: {text}" for text in [*result.notes, *failures])
    return "\n".join(lines)


def _sampling(s) -> str:
    """'T 1, top-k 0, top-p 1, min-p 0.02, vote entropy'."""
    if s.temperature <= 0:
        text = "greedy"
    else:
        text = f"T {s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}, min-p {s.min_p:g}"
    return text + ("" if s.vote == "majority" else f", vote {s.vote}")
