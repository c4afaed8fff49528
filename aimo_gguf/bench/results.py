"""What ``aimo-gguf bench`` measured: one row per configuration, the settings, the machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
