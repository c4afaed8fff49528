"""The bench result as a markdown table, JSON and a PNG plot."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import InputError
from ..outputs import staged_file
from ..pipeline.problems import write_json_atomic
from .results import KIND_BASELINE, BenchResult, BenchRow

PLOT_HINT = "pip install 'aimo-gguf[plot]'"


def require_matplotlib() -> None:
    """Raise a one-line InputError unless matplotlib (the ``plot`` extra) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None


TABLE_COLUMNS = (
    "run", "batch", "generated tokens", "seconds", "prompt tok/s", "gen tok/s", "problems/s", "step ms",
    "host ms/seq-step", "draw ms", "confidence ms", "rest ms", "host CPU ms",
    "peak RSS MiB", "RSS growth MiB", "estimate MiB", "KV cache MiB", "GPU growth / estimate MiB", "speed-up",
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
        _num(row.seconds, ".2f"),
        _num(row.prompt_tokens_per_s, ".1f"),
        _num(row.generated_tokens_per_s, ".1f"),
        _num(row.problems_per_s, ".3f"),
        _num(row.step_ms, ".1f"),
        _num(row.host_ms, ".3f"),
        _num(row.draw_ms, ".3f"),
        _num(row.confidence_ms, ".3f"),
        _num(row.rest_ms, ".3f"),
        _num(row.host_cpu_ms, ".3f"),
        _num(row.peak_rss_mb, ".0f"),
        _num(row.rss_growth_mb, ".0f"),
        _num(row.estimate_mb, ".0f"),
        _num(None if row.kv_bytes is None else row.kv_bytes / 2**20, ".1f"),
        _gpu_cell(row),
        "-" if row.speedup is None else f"{row.speedup:.2f}x",
    ]


def _gpu_cell(row: BenchRow) -> str:
    """NVML's growth during the row beside the estimate's GPU part (with CUDA's context)."""
    if row.gpu_growth_mb is None:
        return "-"
    return f"{row.gpu_growth_mb:.0f} / {_num(row.estimate_gpu_mb, '.0f')}"


def render_table(result: BenchResult) -> str:
    """A title line and a markdown table: the baseline first, then one row per batch size."""
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


def write_json(result: BenchResult, path: str | Path) -> None:
    """Settings, machine, baseline and rows as JSON (atomically)."""
    write_json_atomic(path, result.to_dict())


def plot(result: BenchResult, path: str | Path) -> None:
    """Generated tokens/s and RSS against batch size (log2 axis) as a PNG. Needs matplotlib."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    rows = [r for r in result.rows if r.generated_tokens and not r.confidence]
    sizes = [r.batch_size for r in rows]
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    s = result.settings
    fig.suptitle(f"{Path(s.model).name}: {s.work}", fontsize=10)

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
    with staged_file(path, "the plot") as staged:
        fig.savefig(staged, dpi=120, format="png")
