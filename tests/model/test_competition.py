"""Competition mode on the real model: a time limit met by the process, SIGKILL then --resume,
early stopping on votes, and the adapter driven row by row like the gateway."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import clean_env

from aimo_gguf.kaggle import KaggleSolver
from aimo_gguf.pipeline.journal import default_journal


def _write_problems(path: Path, n: int) -> Path:
    from aimo_gguf.bench import synthetic_problems

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem"])
        for p in synthetic_problems(n):
            w.writerow([p.id, p.problem])
    return path


@pytest.mark.model
@pytest.mark.slow
def test_a_short_time_limit_ends_in_time_with_every_row(tmp_path):
    problems = _write_problems(tmp_path / "p.csv", 60)
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "aimo_gguf", "run", str(problems), "-o", str(out), "--summary",
                           str(summary), "-q", "-t", "2", "-n", "4", "-b", "16", "--max-tokens", "512",
                           "--time-limit", "12", "--time-margin", "1"], capture_output=True, text=True, env=clean_env())
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert wall < 12 + 1.5  # the process, interpreter start included, ends within the limit
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [p.id for p in __import__("aimo_gguf.bench").bench.synthetic_problems(60)]
    s = json.loads(summary.read_text())
    assert s["cut"] + s["not_started"] > 0 and s["problems_done"] + s["not_started"] == 60
    assert s["budget_seconds"]["max"] < 12


def _greedy_run(problems, out, *extra, **popen):
    cmd = [sys.executable, "-m", "aimo_gguf", "run", str(problems), "-o", str(out), "-q", "-t", "2", "-n", "1",
           "-b", "4", "--max-tokens", "40", "--temperature", "0", *extra]
    return subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.model
@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_submission(tmp_path):
    problems = _write_problems(tmp_path / "p.csv", 24)
    whole = tmp_path / "whole.csv"
    assert _greedy_run(problems, whole).wait() == 0
    out = tmp_path / "killed.csv"
    journal = default_journal(out)
    proc = _greedy_run(problems, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 6:  # header + 5 problems
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = journal.read_text().splitlines()
    assert 6 <= len(lines) < 25 and not out.exists()  # killed mid-way, before the submission
    resumed = _greedy_run(problems, out, "--resume", "--summary", str(tmp_path / "s.json"))
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["resumed"] == len(lines) - 1
    assert out.read_text() == whole.read_text()


@pytest.mark.model
def test_early_stopping_saves_tokens_without_changing_greedy_answers(tmp_path):
    from aimo_gguf.pipeline.problems import read_problems
    from aimo_gguf.pipeline.runner import run

    # batch 2 < 4 samples: the first two samples finish before the others start
    kw = dict(output=None, journal=False, progress=False, samples=4, batch_size=2, max_tokens=48, temperature=0.0,
              threads=2)
    problems = read_problems(None)[:6]
    full = run(problems, early_stop=False, **kw)
    early = run(problems, early_stop=True, early_stop_votes=2, **kw)
    assert early.answers == full.answers
    assert early.summary.generated_tokens < full.summary.generated_tokens
    assert early.summary.samples_skipped > 0


@pytest.mark.model
def test_predict_row_by_row_like_the_gateway(tmp_path):
    pl = pytest.importorskip("polars")
    problems = _write_problems(tmp_path / "test.csv", 6)
    t0 = time.monotonic()
    s = KaggleSolver(total_seconds=10, safety_seconds=1, n_problems=6, samples=2, batch_size=4, max_tokens=600,
                     threads=2)
    frames = []
    for i, row in enumerate(pl.read_csv(problems).iter_rows(named=True)):
        if i % 2:
            frames.append(s.predict(pl.Series("id", [row["id"]]), pl.Series("problem", [row["problem"]])))
        else:
            frames.append(s.predict(row["id"], row["problem"]))  # plain strings
    wall = time.monotonic() - t0
    s.close()
    assert wall < 10 + 1.0
    out = pl.concat(frames)
    assert out.columns == ["id", "answer"] and out.height == 6
    assert out["answer"].dtype == pl.Int64 and all(0 <= a <= 99999 for a in out["answer"])
    assert s.stats.problems == 6 and s.stats.failures == 0
    assert s.stats.cut > 0  # 9 s for 6 problems of up to 600 tokens: some were cut

