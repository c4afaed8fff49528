"""``aimo-gguf bench``: will this model, quantization and batch size fit and finish in time?

One run on one model measures the same work (synthetic problems rendered with
the model's chat template, ``samples`` samples each, exactly ``max_tokens``
generated tokens per sample because end-of-generation tokens are masked) done

- one sample at a time by a loop of ``llama_cpp.Llama.create_completion``
  calls, the baseline (EOS suppressed with a logit bias of -inf on every
  end-of-generation token), and
- by the batched :class:`~aimo_gguf.engine.Engine` at each batch size, a fresh
  engine (model load and context) per batch size.

Each row reports prompt and generation throughput, problems per second, the
mean time of a generation step, the process's peak RSS during the row and its
growth over the RSS before the model was loaded, the KV cache size (from
``aimo_gguf.memory``'s estimate), on a GPU build the peak device memory in use
(NVML, through the optional ``nvidia-ml-py`` package), and the speed-up of its
generated tokens/s over the baseline's.

Load times are measured but kept out of the throughput figures on both sides.
On Linux each row resets the kernel's peak-RSS counter of this process
(``/proc/self/clear_refs``), so that its peak is its own; a later
``summary.peak_rss_mb()`` in the same process sees the peak since then.

The engine rows run first (the first one also tokenizes the prompts), then the
baseline, which the table shows first.
"""

from __future__ import annotations

import math
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .config import RunConfig
from .engine import FINISH_LENGTH, KV_TYPES, Engine, Request, SamplingParams
from .errors import AimoError, InputError
from .problems import Problem, write_json_atomic
from .solver import engine_kwargs
from .summary import rss_mb

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
DEFAULT_MAX_TOKENS = 128
DEFAULT_PROBLEMS = 16
DEFAULT_SAMPLES = 1
PROBLEM_TEMPLATE = "What is {a} times {b}?"  # problem i asks for (i + 3) x (i + 7)
PROGRESS_INTERVAL = 10.0  # seconds between progress lines inside one row
PROBE_INTERVAL = 0.05  # seconds between RSS / device-memory samples inside one row
PLOT_HINT = "pip install 'aimo-gguf[plot]'"

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
    kv_bytes: int | None = None  # KV cache of the whole context (aimo_gguf.memory estimate)
    estimate_mb: float | None = None  # aimo_gguf.memory's estimate of the whole configuration, beside RSS growth
    gpu_peak_mb: float | None = None  # peak GPU memory in use on the device during the row (NVML), MiB
    n_gpu_layers: int = 0  # layers actually offloaded
    speedup: float | None = None  # generated_tokens_per_s over the baseline's
    error: str | None = None  # why the row could not run (the model or context did not fit, ...)

    @property
    def label(self) -> str:
        return "create_completion loop" if self.kind == KIND_BASELINE else f"engine, batch {self.batch_size}"


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
    seed: int = 0
    kv_type: str = "f16"  # KV cache element type of the engine rows (and the baseline's context)
    flash_attn: str = "auto"  # flash attention of the engine rows
    ignore_eos: bool = True

    @property
    def expected_tokens(self) -> int:
        return self.problems * self.samples * self.max_tokens


@dataclass
class BenchResult:
    """Everything one bench run measured."""

    settings: BenchSettings
    baseline: BenchRow | None  # None with baseline=False
    rows: list[BenchRow] = field(default_factory=list)  # the engine, one row per batch size, ascending
    machine: dict = field(default_factory=dict)  # platform, CPUs, RAM, versions, GPU
    notes: list[str] = field(default_factory=list)  # what the loader had to change, said once

    @property
    def all_rows(self) -> list[BenchRow]:
        return ([self.baseline] if self.baseline is not None else []) + list(self.rows)

    def to_dict(self) -> dict:
        settings = asdict(self.settings)
        settings["batch_sizes"] = list(self.settings.batch_sizes)
        settings["prompt_tokens_per_problem"] = list(self.settings.prompt_tokens_per_problem)
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


# --- parsing and checks ----------------------------------------------------------


def parse_batch_sizes(value: str | int | Iterable[int]) -> tuple[int, ...]:
    """'1,2,4' (or a sequence of ints) -> (1, 2, 4): positive, deduplicated, ascending."""
    if isinstance(value, str):
        items: list = [part.strip() for part in value.split(",")]
        shown = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items, shown = [value], str(value)
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
        shown = ",".join(map(str, items))
    message = f"--batch-sizes must be positive integers separated by commas (e.g. 1,4,16), got {shown!r}"
    sizes = []
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"\+?\d+", item):
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise InputError(message)
        sizes.append(item)
    if not sizes:
        raise InputError(message)
    return tuple(sorted(set(sizes)))


def synthetic_problems(n: int) -> list[Problem]:
    """``n`` problems like "What is 3 times 7?" (ids p0, p1, ...), with their answers."""
    return [
        Problem(id=f"p{i}", problem=PROBLEM_TEMPLATE.format(a=i + 3, b=i + 7), answer=(i + 3) * (i + 7))
        for i in range(n)
    ]


def require_matplotlib() -> None:
    """Raise a one-line InputError unless matplotlib (the ``plot`` extra) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None


def check_writable(path: str | Path, what: str) -> Path:
    """Fail now, not after a long benchmark, when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {what} to {path}: it is a folder")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write {what} to {path}: {e.strerror or e}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {what} to {path}: the folder is not writable")
    return path


# --- memory probes ---------------------------------------------------------------


def _read_vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        return int(m.group(1)) / 1024 if m else None
    except OSError:
        return None


def _reset_vm_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _read_vm_hwm_mb() is not None
    except OSError:
        return False


class _RssProbe:
    """Peak resident memory during one row, fresh for each row.

    On Linux the kernel's high-water mark is reset at the start of the row;
    elsewhere RSS is sampled (every PROBE_INTERVAL at most) and the maximum kept.
    """

    def __init__(self) -> None:
        self.before = rss_mb()  # before the model is loaded
        self.exact = _reset_vm_hwm()
        self.sampled = self.before
        self._last = 0.0

    def sample(self, now: float | None = None) -> None:
        if self.exact:
            return
        now = time.perf_counter() if now is None else now
        if now - self._last >= PROBE_INTERVAL:
            self._last = now
            self.sampled = max(self.sampled, rss_mb())

    def peak(self) -> float:
        self._last = 0.0
        self.sampled = max(self.sampled, rss_mb())
        hwm = _read_vm_hwm_mb() if self.exact else None
        return max(self.sampled, hwm or 0.0)


class _GpuProbe:
    """Peak memory in use on the GPU during one row, sampled through NVML (pynvml)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.peak_bytes = 0
        self._last = 0.0
        self.sample(force=True)

    @classmethod
    def open(cls, enabled: bool) -> _GpuProbe | None:
        handle = _nvml_handle() if enabled else None
        return cls(handle) if handle is not None else None

    def sample(self, now: float | None = None, *, force: bool = False) -> None:
        now = time.perf_counter() if now is None else now
        if not force and now - self._last < PROBE_INTERVAL:
            return
        self._last = now
        try:
            import pynvml

            self.peak_bytes = max(self.peak_bytes, int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used))
        except Exception:
            pass

    def peak_mb(self) -> float | None:
        self.sample(force=True)
        return self.peak_bytes / 2**20 if self.peak_bytes else None


_nvml: dict = {}


def _nvml_handle():
    """NVML handle of the first visible GPU, or None (no pynvml, no driver, no GPU)."""
    if "handle" not in _nvml:
        handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            index = int(visible) if visible.isdigit() else 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            handle = None
        _nvml["handle"] = handle
    return _nvml["handle"]


def _gpu_info(enabled: bool) -> dict:
    handle = _nvml_handle() if enabled else None
    if handle is None:
        return {"gpu": None, "gpu_memory_total_mib": None}
    try:
        import pynvml

        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        total = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20
        return {"gpu": name, "gpu_memory_total_mib": round(total, 1)}
    except Exception:
        return {"gpu": None, "gpu_memory_total_mib": None}


def _set_estimate(row: BenchRow, model: Path, ctx: int, batch_size: int, n_gpu_layers: int, kv_type: str) -> None:
    """Fill the row's KV size and memory estimate from ``aimo_gguf.memory`` (left None if unknown)."""
    from . import memory

    try:
        est = memory.estimate(
            memory.read_shape(str(model)), ctx=ctx, batch_size=batch_size, n_gpu_layers=n_gpu_layers, kv_type=kv_type
        )
    except AimoError:  # an unreadable header: the columns show "-"
        return
    row.kv_bytes = int(est.kv_cpu + est.kv_gpu)
    row.estimate_mb = est.total / 2**20


def _resolve_auto(batch_sizes: str, *, model, n_gpu_layers, max_tokens, ctx, kv_type, flash_attn, max_memory) -> str:
    """'1,4,auto' -> '1,4,N': N is what run --batch-size auto would pick for the same budget."""
    from .models import resolve_model
    from .solver import resolve_batch_size

    config = RunConfig(model=None if model is None else str(model), n_gpu_layers=n_gpu_layers, max_tokens=max_tokens,
                       ctx=ctx, kv_type=kv_type, flash_attn=flash_attn, batch_size="auto", max_memory=max_memory)
    auto = resolve_batch_size(config, resolve_model(config.model))
    return ",".join(str(auto) if part.strip() == "auto" else part for part in batch_sizes.split(","))


def machine_info(gpu_build: bool) -> dict:
    """Where the numbers were measured."""
    import llama_cpp
    import psutil

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_total_mib": round(psutil.virtual_memory().total / 2**20, 1),
        "python": platform.python_version(),
        "llama_cpp_python": getattr(llama_cpp, "__version__", None),
        "aimo_gguf": __version__,
        "gpu_offload_supported": gpu_build,
        **_gpu_info(gpu_build),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --- the measurements ------------------------------------------------------------


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"aimo-gguf bench: {text}", file=sys.stderr, flush=True)


class _StepWatch:
    """Per-step bookkeeping from the engine's counters (``on_step`` runs after every decode)."""

    def __init__(self, engine: Engine, rss: _RssProbe, gpu: _GpuProbe | None, say, label: str, total: int) -> None:
        self.stats = engine.stats
        self.rss, self.gpu, self.say, self.label, self.total = rss, gpu, say, label, total
        self.prompt_tokens = self.stats.prompt_tokens
        self.step_seconds = self.stats.step_seconds
        self.generated = self.stats.generated_tokens
        self.prompt_step_seconds = 0.0  # steps that decoded prompt tokens (and maybe some generation)
        self.gen_step_seconds = 0.0  # steps that decoded only generated tokens
        self.gen_steps = 0
        self.t0 = self.last_print = time.perf_counter()

    def __call__(self) -> None:
        s = self.stats
        dt = s.step_seconds - self.step_seconds
        if s.prompt_tokens != self.prompt_tokens:
            self.prompt_step_seconds += dt
        else:
            self.gen_step_seconds += dt
            self.gen_steps += 1
        self.prompt_tokens, self.step_seconds = s.prompt_tokens, s.step_seconds
        now = time.perf_counter()
        self.rss.sample(now)
        if self.gpu is not None:
            self.gpu.sample(now)
        if now - self.last_print >= PROGRESS_INTERVAL:
            self.last_print = now
            done = s.generated_tokens - self.generated
            self.say(f"{self.label}: {done}/{self.total} tokens, {done / (now - self.t0):.1f} tokens/s")


def _engine_row(
    model: Path, config: RunConfig, batch_size: int, problems: Sequence[Problem], prompts: list | None,
    gpu_build: bool, say, notes: list[str],
) -> tuple[BenchRow, list | None, str]:
    """Run the work on a fresh engine of ``batch_size`` sequences; also returns the prompts and the description."""
    from .solver import build_prompt, sample_seed

    label = f"batch {batch_size}"
    row = BenchRow(kind=KIND_ENGINE, batch_size=batch_size)
    rss = _RssProbe()
    gpu = _GpuProbe.open(gpu_build)
    say(f"{label}: loading the model and a context of {batch_size} x {config.sequence_ctx} tokens")
    t_load = time.perf_counter()
    try:
        engine = Engine(model, **engine_kwargs(config, batch_size))  # config has ignore_eos=True
    except InputError:
        raise
    except AimoError as e:  # the model or the context does not fit: the row says so, the others still run
        row.error = str(e)
        row.load_seconds = time.perf_counter() - t_load
        row.peak_rss_mb = rss.peak()
        row.rss_growth_mb = row.peak_rss_mb - rss.before
        say(f"{label}: failed: {e}")
        return row, prompts, ""
    with engine:
        info = engine.info
        row.load_seconds = time.perf_counter() - t_load
        row.n_gpu_layers = info.n_gpu_layers
        for note in info.notes:
            if note not in notes:
                notes.append(note)
                say(note)
        if prompts is None:
            prompts = [build_prompt(engine, p, config) for p in problems]
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
        row.generated_tokens = stats.generated_tokens
        if row.generated_tokens != total and not row.error:
            row.error = f"generated {row.generated_tokens} tokens instead of {total} (is --ctx too small?)"
        row.steps = stats.steps
        if watch.prompt_step_seconds > 0 and row.prompt_tokens:
            row.prompt_tokens_per_s = row.prompt_tokens / watch.prompt_step_seconds
        if watch.gen_steps:
            row.step_ms = 1000 * watch.gen_step_seconds / watch.gen_steps
        row.peak_rss_mb = rss.peak()
        row.gpu_peak_mb = gpu.peak_mb() if gpu is not None else None
        description, n_ctx_seq, n_gpu = info.description, info.n_ctx_seq, info.n_gpu_layers
    row.rss_growth_mb = row.peak_rss_mb - rss.before
    _set_estimate(row, model, n_ctx_seq, batch_size, n_gpu, config.kv_type)  # after the RSS peak: it reads the GGUF header
    _rates(row, len(problems))
    say(_row_line(label, row))
    return row, prompts, description


def _baseline_row(
    model: Path, config: RunConfig, problems: Sequence[Problem], prompts: list, n_ctx_seq: int,
    gpu_build: bool, say,
) -> BenchRow:
    """The same work as a loop of ``Llama.create_completion`` calls, one sample at a time."""
    import llama_cpp

    from .solver import sample_seed

    label = "create_completion loop"
    row = BenchRow(kind=KIND_BASELINE, batch_size=1)
    rss = _RssProbe()
    gpu = _GpuProbe.open(gpu_build)
    threads = config.threads
    say(f"{label}: loading the model with llama_cpp.Llama, context {n_ctx_seq} tokens")
    t_load = time.perf_counter()
    try:
        kv = KV_TYPES[config.kv_type]
        llm = llama_cpp.Llama(
            str(model), n_gpu_layers=config.n_gpu_layers, n_ctx=n_ctx_seq, n_threads=threads,
            n_threads_batch=threads, verbose=False, type_k=kv, type_v=kv,
            # Llama's flash attention is on or off; a quantized KV cache needs it on
            flash_attn=config.flash_attn == "on" or config.kv_type != "f16",
        )
    except Exception as e:  # llama_cpp raises ValueError when the model or context does not load
        row.error = f"llama_cpp.Llama could not load {model}: {e}"
        row.load_seconds = time.perf_counter() - t_load
        row.peak_rss_mb = rss.peak()
        row.rss_growth_mb = row.peak_rss_mb - rss.before
        say(f"{label}: failed: {e}")
        return row
    try:
        row.load_seconds = time.perf_counter() - t_load
        vocab = llm._model.vocab
        bias = {t: float("-inf") for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        ctx = llm._ctx.ctx
        llama_cpp.llama_perf_context_reset(ctx)
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
        perf = llama_cpp.llama_perf_context(ctx)
        row.prompt_tokens = int(perf.n_p_eval)
        row.steps = int(perf.n_eval)
        if perf.t_p_eval_ms > 0 and perf.n_p_eval:
            row.prompt_tokens_per_s = perf.n_p_eval / (perf.t_p_eval_ms / 1000)
        if perf.n_eval:
            row.step_ms = perf.t_eval_ms / perf.n_eval
        row.peak_rss_mb = rss.peak()
        row.gpu_peak_mb = gpu.peak_mb() if gpu is not None else None
    finally:
        llm.close()
    row.rss_growth_mb = row.peak_rss_mb - rss.before
    _set_estimate(row, model, n_ctx_seq, 1, config.n_gpu_layers, config.kv_type)
    if row.generated_tokens != total and not row.error:
        row.error = f"generated {row.generated_tokens} tokens instead of {total}"
    _rates(row, len(problems))
    say(_row_line(label, row))
    return row


def _rates(row: BenchRow, n_problems: int) -> None:
    if row.seconds > 0:
        row.generated_tokens_per_s = row.generated_tokens / row.seconds
        row.problems_per_s = n_problems / row.seconds if row.completions else 0.0


def _row_line(label: str, row: BenchRow) -> str:
    return (f"{label}: {row.generated_tokens} tokens in {row.seconds:.1f} s, "
            f"{row.generated_tokens_per_s:.1f} tokens/s, peak RSS {row.peak_rss_mb:.0f} MiB"
            + (f" ({row.error})" if row.error else ""))


def bench(
    *,
    model: str | Path | None = None,
    n_gpu_layers: int = 0,
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
    progress: bool = True,
) -> BenchResult:
    """Measure the create_completion loop and the engine at each batch size on the same work.

    ``problems`` synthetic problems x ``samples`` samples x exactly
    ``max_tokens`` tokens each (end-of-generation masked), sampled with the
    ``run`` defaults and seeds. ``ctx`` is one sequence's context (0: the
    ``run`` default, 512 + ``max_tokens``). Progress lines go to stderr.

    Raises InputError for bad values and ModelError for a missing or non-GGUF
    model; a batch size whose model or context cannot be created gives a row
    with ``error`` set, and the other rows still run.
    """
    import llama_cpp

    from .engine import default_threads
    from .models import resolve_model

    if isinstance(batch_sizes, str) and "auto" in [part.strip() for part in batch_sizes.split(",")]:
        batch_sizes = _resolve_auto(batch_sizes, model=model, n_gpu_layers=n_gpu_layers, max_tokens=max_tokens,
                                    ctx=ctx, kv_type=kv_type, flash_attn=flash_attn, max_memory=max_memory)
    sizes = parse_batch_sizes(batch_sizes)
    if isinstance(problems, bool) or not isinstance(problems, int) or problems < 1:
        raise InputError(f"--problems must be at least 1, got {problems}")
    config = RunConfig(
        model=None if model is None else str(model), n_gpu_layers=n_gpu_layers, threads=threads,
        max_tokens=max_tokens, samples=samples, ctx=ctx, ignore_eos=True, early_stop=False,
        kv_type=kv_type, flash_attn=flash_attn,
    )
    config.threads = config.threads or default_threads()
    path = resolve_model(config.model)
    gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
    say = _Progress(progress)
    work = synthetic_problems(problems)
    settings = BenchSettings(
        model=str(path), n_gpu_layers=n_gpu_layers, threads=config.threads, batch_sizes=sizes,
        max_tokens=max_tokens, problems=problems, samples=samples, ctx=config.sequence_ctx, baseline=baseline,
        temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, min_p=config.min_p,
        seed=config.seed, kv_type=kv_type, flash_attn=flash_attn,
    )
    result = BenchResult(settings=settings, baseline=None, machine=machine_info(gpu_build))
    say(f"{path.name}: {_work(settings)}, EOS suppressed, "
        f"{config.threads} threads, batch sizes {','.join(map(str, sizes))}"
        + ("" if baseline else ", no baseline"))

    prompts = None
    for size in sizes:
        row, prompts, description = _engine_row(path, config, size, work, prompts, gpu_build, say, result.notes)
        settings.model_description = settings.model_description or description
        result.rows.append(row)
    if baseline:
        if prompts is None:  # no engine could load: tokenize with the smallest one there is
            prompts = _tokenize_only(path, config, work)
        if prompts is None:
            result.baseline = BenchRow(kind=KIND_BASELINE, batch_size=1, error="the model could not be loaded")
        else:
            result.baseline = _baseline_row(path, config, work, prompts, config.sequence_ctx, gpu_build, say)
    if prompts is not None:
        settings.prompt_tokens_per_problem = tuple(len(p) for p in prompts)
    base = result.baseline
    if base is not None and not base.error and base.generated_tokens_per_s > 0:
        for row in result.all_rows:
            if not row.error or row.generated_tokens:
                row.speedup = row.generated_tokens_per_s / base.generated_tokens_per_s
    return result


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


def _tokenize_only(path: Path, config: RunConfig, problems: Sequence[Problem]) -> list | None:
    from .solver import build_prompt

    try:
        with Engine(path, ctx=16, batch_size=1, threads=config.threads) as engine:
            prompts = [build_prompt(engine, p, config) for p in problems]
    except AimoError:
        return None
    _check_ctx(prompts, config)
    return prompts


# --- output ------------------------------------------------------------------------


TABLE_COLUMNS = (
    "run", "batch", "generated tokens", "seconds", "prompt tok/s", "gen tok/s", "problems/s", "step ms",
    "peak RSS MiB", "RSS growth MiB", "estimate MiB", "KV cache MiB", "GPU peak MiB", "speed-up",
)


def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _cells(row: BenchRow) -> list[str]:
    name = "create_completion loop" if row.kind == KIND_BASELINE else "engine"
    batch = "1" if row.kind == KIND_BASELINE else str(row.batch_size)
    if row.error and not row.generated_tokens:
        return [name, batch, "failed"] + ["-"] * (len(TABLE_COLUMNS) - 3)
    return [
        name,
        batch,
        str(row.generated_tokens),
        _num(row.seconds, ".2f"),
        _num(row.prompt_tokens_per_s, ".1f"),
        _num(row.generated_tokens_per_s, ".1f"),
        _num(row.problems_per_s, ".3f"),
        _num(row.step_ms, ".1f"),
        _num(row.peak_rss_mb, ".0f"),
        _num(row.rss_growth_mb, ".0f"),
        _num(row.estimate_mb, ".0f"),
        _num(None if row.kv_bytes is None else row.kv_bytes / 2**20, ".1f"),
        _num(row.gpu_peak_mb, ".0f"),
        "-" if row.speedup is None else f"{row.speedup:.2f}x",
    ]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _work(s: BenchSettings) -> str:
    return f"{_plural(s.problems, 'problem')} x {_plural(s.samples, 'sample')} x {_plural(s.max_tokens, 'token')}"


def render_table(result: BenchResult) -> str:
    """A title line and a markdown table: the baseline first, then one row per batch size."""
    s = result.settings
    title = (
        f"{Path(s.model).name}" + (f" ({s.model_description})" if s.model_description else "")
        + f": {_work(s)}, EOS suppressed, "
        f"context {s.ctx}, KV {s.kv_type}, flash attention {s.flash_attn}, {s.threads} threads, "
        f"GPU layers {s.n_gpu_layers}"
    )
    lines = [title, "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    failures = []
    for row in result.all_rows:
        lines.append("| " + " | ".join(_cells(row)) + " |")
        if row.error:
            failures.append(f"{row.label}: {row.error}")
    if failures or result.notes:
        lines.append("")
        lines.extend(f"note: {text}" for text in [*result.notes, *failures])
    return "\n".join(lines)


def write_json(result: BenchResult, path: str | Path) -> None:
    """Settings, machine, baseline and rows as JSON (atomically)."""
    write_json_atomic(path, result.to_dict())


def plot(result: BenchResult, path: str | Path) -> None:
    """Generated tokens/s and RSS against batch size (log2 axis) as a PNG. Needs matplotlib."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    rows = [r for r in result.rows if r.generated_tokens]
    sizes = [r.batch_size for r in rows]
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    s = result.settings
    fig.suptitle(f"{Path(s.model).name}: {_work(s)}", fontsize=10)

    top.plot(sizes, [r.generated_tokens_per_s for r in rows], "o-", label="engine")
    base = result.baseline
    if base is not None and base.generated_tokens:
        top.axhline(base.generated_tokens_per_s, color="gray", linestyle="--", label="create_completion loop")
    top.set_ylabel("generated tokens/s")
    peaks = [r.generated_tokens_per_s for r in rows] + ([base.generated_tokens_per_s] if base else [])
    top.set_ylim(0, 1.15 * max(peaks, default=1.0) or 1.0)
    top.grid(True, alpha=0.3)
    top.legend(loc="best", fontsize=8)

    bottom.plot(sizes, [r.peak_rss_mb for r in rows], "o-", label="peak RSS")
    bottom.plot(sizes, [r.rss_growth_mb for r in rows], "s--", label="RSS growth over before load")
    if any(r.gpu_peak_mb is not None for r in rows):
        bottom.plot(sizes, [r.gpu_peak_mb if r.gpu_peak_mb is not None else float("nan") for r in rows],
                    "^:", label="GPU memory in use (peak)")
    bottom.set_ylabel("MiB")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("batch size")
    bottom.grid(True, alpha=0.3)
    bottom.legend(loc="best", fontsize=8)

    for ax in (top, bottom):
        ax.set_xscale("log", base=2)
        if sizes:
            ax.xaxis.set_major_locator(FixedLocator(sizes))
            ax.xaxis.set_major_formatter(FixedFormatter([str(b) for b in sizes]))
            ax.xaxis.set_minor_locator(NullLocator())
    path = check_writable(path, "the plot")
    try:
        fig.savefig(path, dpi=120, format="png")
    except OSError as e:
        raise InputError(f"cannot write the plot to {path}: {e.strerror or e}") from None
