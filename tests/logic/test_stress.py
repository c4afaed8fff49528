"""Stress runs (RSS along the full pipeline) and time projections."""

from __future__ import annotations

import pytest

from aimo_gguf.bench.stress import Projection, project, stress
from aimo_gguf.errors import InputError


@pytest.mark.parametrize(
    ("kwargs", "seconds"),
    [
        # 5000 x 1 x 256 tokens at 250 t/s generation, 60-token prompts at 300 t/s
        (dict(problems=5000, samples=1, max_tokens=256, prompt_tokens=60,
              generated_per_second=250, prompt_per_second=300), 5000 * (256 / 250 + 60 / 300)),
        (dict(problems=50, samples=8, max_tokens=2048, prompt_tokens=200,
              generated_per_second=1000, prompt_per_second=5000), 50 * 8 * (2.048 + 0.04)),
    ],
)
def test_project_worst_case_time(kwargs, seconds):
    assert project(**kwargs).seconds == pytest.approx(seconds)


def test_projection_sentence_says_whether_it_fits():
    fits = Projection(problems=5000, samples=1, max_tokens=256, seconds=41 * 60, time_limit=3600)
    assert fits.sentence() == "5000 problems x 1 sample x 256 tokens: projected 41 min, fits in 60 min"
    late = Projection(problems=50, samples=8, max_tokens=2048, seconds=6 * 3600, time_limit=5 * 3600)
    assert late.sentence() == "50 problems x 8 samples x 2048 tokens: projected 6.0 h, does NOT fit in 5.0 h"
    assert Projection(problems=1, samples=1, max_tokens=1, seconds=30, time_limit=None).fits is None


def test_project_rejects_zero_throughput():
    with pytest.raises(InputError):
        project(problems=1, samples=1, max_tokens=1, prompt_tokens=1, generated_per_second=0, prompt_per_second=1)


@pytest.mark.parametrize(("problems", "warmup"), [(1, 0), (100, 100), (100, 0)])
def test_stress_rejects_bad_sizes(problems, warmup):
    with pytest.raises(InputError):
        stress(problems=problems, warmup=warmup)
