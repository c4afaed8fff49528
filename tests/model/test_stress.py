"""Stress runs (RSS along the full pipeline) and time projections."""

from __future__ import annotations

import pytest

from aimo_gguf.bench.stress import stress


@pytest.mark.model
def test_stress_keeps_rss_flat_through_the_pipeline():
    result = stress(problems=120, warmup=40, progress=False, threads=1, batch_size=8)
    assert result.summary.problems_done == 120
    assert result.summary.samples == 120
    assert 0 < result.rss_start < result.rss_warm
    assert result.growth < 20, result
    assert result.flat
