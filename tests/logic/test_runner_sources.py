"""The runner's result sources: what they read from their engine, and when."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from fakes import FakeEngine

from aimo_gguf.config import RunConfig
from aimo_gguf.pipeline.problems import read_problems
from aimo_gguf.pipeline.runner import LocalSource, run


class SnapshotEngine:
    """An engine whose ``stats`` is computed on each access (as an EnginePool sums its engines')."""

    def __init__(self, inner: FakeEngine) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    @property
    def stats(self):
        live = self._inner.stats
        return replace(live, finish_reasons=Counter(live.finish_reasons))


def test_local_source_reads_the_engines_stats_each_time():
    engine = SnapshotEngine(FakeEngine(lambda problem, sample: "\\boxed{7}"))
    source = LocalSource(engine, RunConfig())
    engine._inner.stats.generated_tokens += 5
    assert source.stats.generated_tokens == 5  # not the snapshot taken when the source was made


def test_a_run_counts_the_tokens_of_an_engine_with_snapshot_stats(tmp_path):
    engine = SnapshotEngine(FakeEngine(lambda problem, sample: "\\boxed{7}"))
    result = run(read_problems("sample")[:2], output=tmp_path / "s.csv", engine=engine, samples=2, progress=False)
    assert result.summary.generated_tokens == engine._inner.stats.generated_tokens > 0
