"""The engine process on the real model: a real abort at a problem's first decode costs nothing but the retry,
and the answers equal those of a run in one process (greedy, so the tokens are the same)."""

from __future__ import annotations

import json
import os

import pytest

from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.pipeline.runner import run

PROBLEMS = [Problem(id=f"q{i}", problem=f"What is {i + 3} times {i + 7}?") for i in range(4)]
FAST = dict(samples=1, batch_size=4, max_tokens=16, temperature=0, threads=2, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["abort", "sigsegv"])
def test_a_real_engine_killed_mid_run_gives_the_same_submission(tmp_path, monkeypatch, capsys, how):
    here = run(PROBLEMS, output=tmp_path / "here.csv", in_process=True, **FAST)
    monkeypatch.setenv("AIMO_GGUF_CHILD_FAULT", f"{how}@decode:q2@once")
    child = run(PROBLEMS, output=tmp_path / "child.csv", summary=tmp_path / "s.json", **FAST)
    assert child.answers == here.answers
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["engine_crashes"], summary["problems_lost_to_crashes"]) == (1, 0)
    assert f"died of SIG{'ABRT' if how == 'abort' else 'SEGV'}" in capsys.readouterr().err
    assert not os.environ.get("AIMO_GGUF_CHILD_LOADER")  # the real engine, not the fake
