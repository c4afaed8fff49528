"""Stress runs and time projections: will a problem set finish inside the limit?

``stress`` pushes many synthetic problems through the full ``run`` pipeline
with short generations and samples the process RSS after a warm-up, halfway
and at the end: summary-only verification must keep it flat. ``project``
turns measured throughput into a time estimate for a real budget;
``stress_and_project`` does both for ``bench --stress`` from the best engine row.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import RunConfig
from ..errors import EngineError, InputError
from ..pipeline.runner import run
from ..pipeline.summary import RunSummary, rss_mb
from ..solving.solver import ProblemResult
from .results import BenchResult
from .workload import synthetic_problems

DEFAULT_STRESS_PROBLEMS = 5000
DEFAULT_WARMUP = 500
STRESS_MAX_TOKENS = 4  # short generations: the run measures the pipeline, not the model
RSS_GROWTH_LIMIT_MB = 20.0


@dataclass
class StressResult:
    """RSS along a long run, in MiB, and how long it took."""

    problems: int
    warmup: int
    seconds: float
    rss_start: float  # before the model loads
    rss_warm: float  # after ``warmup`` problems
    rss_mid: float  # halfway
    rss_end: float  # after the last problem
    summary: RunSummary

    @property
    def growth(self) -> float:
        """RSS growth from the warm-up to the end: what summary-only verification keeps flat."""
        return self.rss_end - self.rss_warm

    @property
    def flat(self) -> bool:
        return self.growth < RSS_GROWTH_LIMIT_MB


class _RssMarks:
    """Called with each finished problem: RSS when the count reaches a mark ('warm', 'mid', 'end')."""

    def __init__(self, marks: dict[int, str]) -> None:
        self.marks = marks
        self.done = 0
        self.rss: dict[str, float] = {"start": rss_mb()}

    def __call__(self, _: ProblemResult) -> None:
        self.done += 1
        mark = self.marks.get(self.done)
        if mark:
            self.rss[mark] = rss_mb()


def stress(
    *,
    problems: int = DEFAULT_STRESS_PROBLEMS,
    warmup: int = DEFAULT_WARMUP,
    progress: bool = True,
    config: RunConfig | None = None,
    **options,
) -> StressResult:
    """Run ``problems`` synthetic problems through ``run`` and sample RSS.

    ``options`` are RunConfig fields; by default one sample of
    ``STRESS_MAX_TOKENS`` tokens per problem with a raw prompt, so that the
    pipeline, not the model, is what runs.
    """
    if problems < 2 or not 0 < warmup < problems:
        raise InputError(f"--stress needs at least 2 problems and a warm-up below it, got {problems} and {warmup}")
    defaults = dict(samples=1, max_tokens=STRESS_MAX_TOKENS, raw_prompt=True, system_prompt="", early_stop=False)
    config = config or RunConfig(**{**defaults, **options})
    marks = _RssMarks({warmup: "warm", problems // 2: "mid", problems: "end"})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(synthetic_problems(problems), config=config, output=Path(tmp) / "submission.csv",
                     progress=progress, on_result=marks)
    seconds = time.perf_counter() - t0
    rss = marks.rss
    end = rss.get("end", rss_mb())
    return StressResult(
        problems=problems,
        warmup=warmup,
        seconds=seconds,
        rss_start=rss["start"],
        rss_warm=rss.get("warm", end),
        rss_mid=rss.get("mid", end),
        rss_end=end,
        summary=result.summary,
    )


@dataclass(frozen=True)
class Projection:
    """Projected wall time of a run, from measured throughput."""

    problems: int
    samples: int
    max_tokens: int
    seconds: float
    time_limit: float | None

    @property
    def fits(self) -> bool | None:
        return None if self.time_limit is None else self.seconds <= self.time_limit

    def sentence(self) -> str:
        text = (f"{self.problems} problems x {self.samples} sample{'s' if self.samples != 1 else ''} x "
                f"{self.max_tokens} tokens: projected {_minutes(self.seconds)}")
        if self.time_limit is not None:
            verdict = "fits in" if self.fits else "does NOT fit in"
            text += f", {verdict} {_minutes(self.time_limit)}"
        return text


def project(
    *,
    problems: int,
    samples: int,
    max_tokens: int,
    prompt_tokens: int,
    generated_per_second: float,
    prompt_per_second: float,
    time_limit: float | None = None,
) -> Projection:
    """Worst case: every sample runs to ``max_tokens``; prompts decoded once per sample."""
    if generated_per_second <= 0 or prompt_per_second <= 0:
        raise InputError("throughput must be positive to project a time")
    seconds = problems * samples * (max_tokens / generated_per_second + prompt_tokens / prompt_per_second)
    return Projection(problems=problems, samples=samples, max_tokens=max_tokens, seconds=seconds,
                      time_limit=time_limit)


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class StressReport:
    """``bench --stress``: the stress run, the projection from the best engine row, and that row."""

    stress: StressResult
    projection: Projection
    batch_size: int
    generated_per_second: float
    prompt_per_second: float

    def text(self) -> str:
        r = self.stress
        verdict = "flat" if r.flat else f"GROWING (limit {RSS_GROWTH_LIMIT_MB:.0f} MiB)"
        return "\n".join([
            f"stress: {r.problems} problems in {r.seconds:.0f} s ({r.problems / r.seconds:.1f} problems/s)",
            f"RSS: start {r.rss_start:.0f} MiB, after {r.warmup} {r.rss_warm:.0f} MiB, "
            f"halfway {r.rss_mid:.0f} MiB, end {r.rss_end:.0f} MiB",
            f"RSS growth after warm-up: {r.growth:+.1f} MiB: {verdict}",
            self.projection.sentence(),
            f"(projection from the best row: batch {self.batch_size}, {self.generated_per_second:.1f} generated "
            f"and {self.prompt_per_second:.1f} prompt tokens/s)",
        ])

    def to_dict(self) -> dict:
        stress = {k: v for k, v in asdict(self.stress).items() if k != "summary"}
        return {**stress, "growth": self.stress.growth, "flat": self.stress.flat,
                "projection": {**asdict(self.projection), "fits": self.projection.fits},
                "batch_size": self.batch_size, "generated_per_second": self.generated_per_second,
                "prompt_per_second": self.prompt_per_second}


def stress_and_project(result: BenchResult, *, problems: int, time_limit: float | None = None,
                       progress: bool = True, **options) -> StressReport:
    """``bench --stress``: ``problems`` synthetic problems through ``run`` at the best engine row's batch
    size (``options`` are RunConfig fields: model, n_gpu_layers, threads), and the time that many real
    problems of the bench's work would take from that row's throughput."""
    rows = [r for r in result.rows if r.error is None and r.generated_tokens_per_s]
    if not rows:
        raise EngineError("no engine row succeeded: nothing to stress or project from")
    rows = [r for r in rows if not r.confidence]
    if not rows:
        raise EngineError("no engine row without confidence succeeded: nothing to stress or project from")
    best = max(rows, key=lambda r: r.generated_tokens_per_s)
    settings = result.settings
    outcome = stress(problems=problems, warmup=min(DEFAULT_WARMUP, max(1, problems // 10)), progress=progress,
                     batch_size=best.batch_size, **options)
    prompt = settings.prompt_tokens_per_problem
    projection = project(
        problems=problems, samples=settings.samples, max_tokens=settings.max_tokens,
        prompt_tokens=round(sum(prompt) / len(prompt)) if prompt else 0,
        generated_per_second=best.generated_tokens_per_s, prompt_per_second=best.prompt_tokens_per_s,
        time_limit=time_limit,
    )
    return StressReport(stress=outcome, projection=projection, batch_size=best.batch_size,
                        generated_per_second=best.generated_tokens_per_s,
                        prompt_per_second=best.prompt_tokens_per_s)
