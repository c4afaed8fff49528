"""The progress bar of ``run``: problems, samples, tokens/s and ETA on stderr, refreshed inside long problems."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from ..engine.api import EngineStats
from .summary import RunSummary

PROGRESS_INTERVAL = 0.5  # seconds between progress-bar refreshes inside a long problem, in a terminal
PROGRESS_INTERVAL_LOG = 10.0  # the same when stderr is a log (a Kaggle notebook): a line each time


class _Counted(Protocol):
    """What the bar reads of a run's results source (``runner.ResultSource``)."""

    stats: EngineStats

    def progress_note(self) -> str: ...


class ProgressBar:
    """tqdm on stderr: problems, samples, tokens/s, ETA; refreshed inside long problems too."""

    def __init__(self, total: int, source: _Counted, summary: RunSummary, *, enabled: bool) -> None:
        self.enabled = enabled
        self.source, self.summary = source, summary
        self._last = 0.0
        self._t0 = time.perf_counter()
        self.interval = PROGRESS_INTERVAL if sys.stderr.isatty() else PROGRESS_INTERVAL_LOG
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=summary.resumed, unit="problem", file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1,
                             mininterval=0.1 if sys.stderr.isatty() else PROGRESS_INTERVAL_LOG)

    def refresh(self) -> None:
        now = time.perf_counter()
        if self._bar is None or now - self._last < self.interval:
            return
        self._last = now
        rate = self.source.stats.generated_tokens / max(now - self._t0, 1e-9)  # read anew: it may be a snapshot
        note = self.source.progress_note()
        self._bar.set_postfix_str(f"samples={self.summary.samples} tok/s={rate:.1f}" + (f" {note}" if note else ""),
                                  refresh=False)
        self._bar.refresh()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._last = 0.0  # the last figures, not those of the last refresh
            self.refresh()
            self._bar.close()
