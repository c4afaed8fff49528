"""``aimo-gguf report``: the grading counters of one or more runs side by side.

Each run's ``--summary`` JSON holds, when its problems had answers, pass@1
(mean sample accuracy), the accuracy of the vote mode it ran with, the
accuracy every vote mode would have given on the same samples (maj@n is the
``majority`` column), pass@n and the tokens it generated; accuracy at k
(unbiased pass@k, maj@k and the run's vote @k, ``aimo_gguf.solving.metrics``); and the
samples that ended at the token limit, apart. ``report`` reads them back; it
never needs the model or the traces.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .bench.chart import require_matplotlib
from .errors import InputError
from .outputs import staged_file
from .solving.voting import VOTE_MODES


@dataclass(frozen=True, slots=True)
class RunReport:
    """The grading figures of one run, read from its summary."""

    name: str  # the summary file, as given
    model: str
    vote: str
    samples: int  # samples per problem (the n of pass@n)
    graded: int
    accuracy: float  # under the run's own vote mode
    pass_at_1: float | None  # None: a summary from before these counters
    pass_at_n: float | None
    modes: dict[str, float]  # vote mode -> accuracy on the same samples (majority only without confidence)
    tokens_per_problem: float | None
    tokens_per_correct: float | None
    low_confidence: int  # samples cut by --stop-below
    at_k: dict[str, dict[int, float]]  # "pass", "majority", "vote" -> k -> accuracy (empty: an older summary)
    samples_run: int  # samples that ran to an end
    capped: int  # of them, those that ended at the token limit
    capped_answered: int  # capped samples that stated an answer
    capped_graded: int  # capped samples of graded problems
    capped_correct: int  # of those, right
    without_capped: float | None  # the vote's accuracy had capped samples not voted (None: an older summary)


def read_report(path: str | Path) -> RunReport:
    """One summary JSON as a RunReport; a one-line InputError when it is not a graded run's summary."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a summary JSON") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not a summary JSON ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict) or "graded" not in data or "samples_per_problem" not in data:
        raise InputError(f"{path} is not an aimo-gguf run summary (written by aimo-gguf run --summary)")
    try:
        return _report(path, data)
    except (TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{path}: a field of the summary has the wrong type ({e})") from None


def _report(path: Path, data: dict) -> RunReport:
    graded = int(data.get("graded") or 0)
    if graded <= 0:
        raise InputError(f"{path}: the run had no answer column, so there is nothing to grade")
    modes = data.get("mode_correct") or {}
    if not isinstance(modes, dict):
        raise InputError(f"{path}: mode_correct is not a table of counts")

    def number(key: str) -> float | None:
        value = data.get(key)
        return None if value is None else float(value)

    passed = number("pass_at_n")
    at_k = data.get("at_k_accuracy") or {}
    if not isinstance(at_k, dict) or not all(isinstance(v, dict) for v in at_k.values()):
        raise InputError(f"{path}: at_k_accuracy is not a table of accuracies by k")
    return RunReport(
        name=str(path), model=Path(str(data.get("model") or "?")).name, vote=str(data.get("vote") or "majority"),
        samples=int(data["samples_per_problem"]), graded=graded, accuracy=float(data.get("correct") or 0) / graded,
        pass_at_1=number("pass_at_1"), pass_at_n=None if passed is None else passed / graded,
        modes={mode: float(modes[mode]) / graded for mode in VOTE_MODES if mode in modes},
        tokens_per_problem=number("tokens_per_problem"), tokens_per_correct=number("tokens_per_correct"),
        low_confidence=int(data.get("low_confidence") or 0),
        at_k={series: {int(k): float(v) for k, v in by_k.items()} for series, by_k in at_k.items()},
        samples_run=int(data.get("samples") or 0), capped=int(data.get("capped") or 0),
        capped_answered=int(data.get("capped_answered") or 0), capped_graded=int(data.get("capped_graded") or 0),
        capped_correct=int(data.get("capped_correct") or 0),
        without_capped=None if "correct_without_capped" not in data
        else float(data["correct_without_capped"] or 0) / graded,
    )


COLUMNS = ("run", "model", "vote", "graded", "pass@1", "voted", *VOTE_MODES, "pass@n", "tokens/problem",
           "tokens/correct", "cut")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.0f}"


def render(reports: list[RunReport]) -> str:
    """The runs side by side: the modes table, then accuracy at k and the length-capped samples (for the
    runs whose summaries have them)."""
    parts = [render_modes(reports)]
    if any(r.at_k for r in reports):
        parts.append(render_at_k(reports))
    if any(r.without_capped is not None for r in reports):
        parts.append(render_capped(reports))
    return "\n\n".join(parts)


def render_modes(reports: list[RunReport]) -> str:
    """A markdown table, one row per run; the best vote mode of each row in bold."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in reports:
        best = max(r.modes.values(), default=None)
        modes = [("**" + _pct(r.modes[m]) + "**") if m in r.modes and r.modes[m] == best else _pct(r.modes.get(m))
                 for m in VOTE_MODES]
        lines.append("| " + " | ".join([
            r.name, r.model, r.vote, str(r.graded), _pct(r.pass_at_1), _pct(r.accuracy), *modes,
            f"{_pct(r.pass_at_n)} (n={r.samples})", _num(r.tokens_per_problem), _num(r.tokens_per_correct),
            str(r.low_confidence),
        ]) + " |")
    return "\n".join(lines)


def series_name(series: str, vote: str) -> str:
    """How a series is called: pass@k, maj@k, or the run's vote mode @k (weighted@k)."""
    return {"pass": "pass@k", "majority": "maj@k"}.get(series, f"{vote}@k")


def render_at_k(reports: list[RunReport]) -> str:
    """Accuracy against k: one row per run and series (pass@k, maj@k, the run's vote @k)."""
    ks = sorted({k for r in reports for by_k in r.at_k.values() for k in by_k})
    lines = ["| run | at k | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 2)]
    for r in reports:
        for series, by_k in r.at_k.items():
            if series == "vote" and r.vote == "majority":
                continue  # the same as maj@k
            lines.append(f"| {r.name} | {series_name(series, r.vote)} | "
                         + " | ".join(_pct(by_k.get(k)) for k in ks) + " |")
    return "\n".join(lines)


def render_capped(reports: list[RunReport]) -> str:
    """The samples that ended at the token limit, apart: how many, how many stated an answer, how many
    were right, and the vote's accuracy with and without them."""
    lines = ["| run | length-capped | stated an answer | right | voted, with them | voted, without them |",
             "|---|---|---|---|---|---|"]
    for r in reports:
        if r.without_capped is None:
            continue
        capped = f"{r.capped}/{r.samples_run}" + (f" ({r.capped / r.samples_run:.0%})" if r.samples_run else "")
        right = f"{r.capped_correct}/{r.capped_graded}" if r.capped_graded else "-"
        lines.append(f"| {r.name} | {capped} | {r.capped_answered} | {right} | {_pct(r.accuracy)} | "
                     f"{_pct(r.without_capped)} |")
    return "\n".join(lines)


def check_plot(path: str | Path, *, summaries) -> None:
    """Before any work: matplotlib is installed, and the plot is none of the summaries and can be written."""
    from .outputs import check_distinct, check_writable

    require_matplotlib()
    check_distinct({**{f"summary {i + 1}": p for i, p in enumerate(summaries)}, "--plot": path}, outputs={"--plot"})
    check_writable(path, "the plot")


def plot(reports: list[RunReport], path: str | Path) -> None:
    """Two panels: accuracy against k (pass@k, maj@k, the run's vote @k, per run), and accuracy against
    generated tokens per problem (one marker per vote mode, and pass@1, pass@n, per run; the runs of one
    model and mode joined in order of tokens)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    by_k, ax = fig.subplots(1, 2)
    _plot_at_k(by_k, reports)
    points = [r for r in reports if r.tokens_per_problem]
    series = {"pass@1": lambda r: r.pass_at_1, **{m: (lambda r, m=m: r.modes.get(m)) for m in VOTE_MODES},
              "pass@n": lambda r: r.pass_at_n}
    markers = dict(zip(series, "v o s D ^ x".split(), strict=True))
    models = sorted({r.model for r in points})
    for k, (name, value) in enumerate(series.items()):
        color = f"C{k}"
        for i, model in enumerate(models):  # runs of one model joined in order of tokens; models apart
            pts = sorted((r.tokens_per_problem, value(r)) for r in points if r.model == model and value(r) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[name], color=color,
                        linestyle="-" if len(pts) > 1 else "none", label=name if i == 0 else None)
    for r in points:
        ax.annotate(Path(r.name).stem, (r.tokens_per_problem, r.accuracy), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("accuracy against tokens", fontsize=9)
    with staged_file(path, "the plot") as staged:
        fig.savefig(staged, dpi=120, format="png")


def _plot_at_k(ax, reports: list[RunReport]) -> None:
    """Accuracy against k on a log2 axis: pass@k dashed, maj@k solid, the run's vote @k dotted."""
    styles = {"pass": "--", "majority": "-", "vote": ":"}
    drawn = False
    ticks: set[int] = set()
    for i, r in enumerate(reports):
        for series, by_k in r.at_k.items():
            if not by_k or (series == "vote" and r.vote == "majority"):
                continue
            ks = sorted(by_k)
            ticks.update(ks)
            ax.plot(ks, [by_k[k] for k in ks], linestyle=styles.get(series, "-"), marker="o", markersize=3,
                    color=f"C{i}", label=f"{Path(r.name).stem}: {series_name(series, r.vote)}")
            drawn = True
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(sorted(ticks), [str(k) for k in sorted(ticks)])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.set_title("accuracy against k", fontsize=9)
    if drawn:
        ax.legend(loc="best", fontsize=7, handlelength=3)  # long enough to show the dashes
