"""Stress runs and time projections: will a problem set finish inside the limit?

``stress`` pushes many synthetic problems through the full ``run`` pipeline
with short generations and samples the process RSS after a warm-up, halfway
and at the end: summary-only verification must keep it flat. ``project``
turns measured throughput into a time estimate for a real budget.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..errors import InputError
from ..pipeline.runner import run
from ..pipeline.summary import RunSummary, rss_mb
from ..solving.solver import ProblemResult
from . import synthetic_problems

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
    marks = {warmup: "warm", problems // 2: "mid", problems: "end"}
    rss: dict[str, float] = {"start": rss_mb()}
    done = [0]

    def sample(_: ProblemResult) -> None:
        done[0] += 1
        mark = marks.get(done[0])
        if mark:
            rss[mark] = rss_mb()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(synthetic_problems(problems), config=config, output=Path(tmp) / "submission.csv",
                     progress=progress, on_result=sample)
    seconds = time.perf_counter() - t0
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


def stress_report(result: StressResult, projection: Projection | None = None,
                  echo: Callable[[str], None] = print) -> None:
    """The stress table, for the CLI."""
    echo(f"stress: {result.problems} problems in {result.seconds:.0f} s "
         f"({result.problems / result.seconds:.1f} problems/s)")
    echo(f"RSS: start {result.rss_start:.0f} MiB, after {result.warmup} {result.rss_warm:.0f} MiB, "
         f"halfway {result.rss_mid:.0f} MiB, end {result.rss_end:.0f} MiB")
    verdict = "flat" if result.flat else f"GROWING (limit {RSS_GROWTH_LIMIT_MB:.0f} MiB)"
    echo(f"RSS growth after warm-up: {result.growth:+.1f} MiB: {verdict}")
    if projection is not None:
        echo(projection.sentence())
