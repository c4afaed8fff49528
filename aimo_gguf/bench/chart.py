"""The bench result as a PNG: throughput and memory against batch size."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..outputs import staged_file
from .results import BenchResult

PLOT_HINT = "pip install 'aimo-gguf[plot]'"


def require_matplotlib() -> None:
    """Raise a one-line InputError unless matplotlib (the ``plot`` extra) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}") from None


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
