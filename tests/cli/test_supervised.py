"""``run`` with the engine in a supervised child process, killed for real: an abort, a segfault, an illegal
instruction, an exit without goodbye, at a problem's first decode, while loading, during a tool call.

The child loads the fake engine (``fakes.load_prompt_engine``, named by the test-only
``AIMO_GGUF_CHILD_LOADER``) and dies where ``AIMO_GGUF_CHILD_FAULT`` says (``aimo_gguf.supervise.faults``):
real deaths by real signals of a real process, with the engine's native part faked. Each run must leave a
complete submission and summary, the right answer for every problem the crash did not hit, and no process
behind it (sandbox workers included).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
from fakes import PromptEngine, problems_of

from aimo_gguf.errors import EngineError
from aimo_gguf.pipeline.runner import run
from aimo_gguf.supervise.source import MAX_RESTARTS, STRIKES

TESTS = Path(__file__).resolve().parents[1]
N = 8
SIGNAL_OF = {"abort": "died of SIGABRT", "sigsegv": "died of SIGSEGV", "sigill": "died of SIGILL",
             "exit": "exited with code 3"}


@pytest.fixture
def fault(monkeypatch):
    """Children load the fake engine; ``fault(spec)`` sets where they die."""
    monkeypatch.setenv("AIMO_GGUF_CHILD_LOADER", "fakes:load_prompt_engine")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    return lambda spec: monkeypatch.setenv("AIMO_GGUF_CHILD_FAULT", spec)


class Descendants:
    """Every process below this one while a run goes (polled every 10 ms), to check that none outlives it."""

    def __init__(self) -> None:
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}  # read when first seen: a dead process has none
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Descendants:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                if p.pid not in self.seen:
                    self.seen[p.pid] = p
                    try:
                        self.commands[p.pid] = " ".join(p.cmdline())
                    except psutil.Error:
                        self.commands[p.pid] = ""
            time.sleep(0.01)

    def sandbox_workers(self) -> int:
        return sum("sandbox/worker.py" in command for command in self.commands.values())

    def stray(self, wait: float = 5.0) -> list[int]:
        """The processes seen that are still alive (not zombies) ``wait`` seconds from now at the latest."""
        deadline = time.monotonic() + wait
        while True:
            alive = [pid for pid, p in self.seen.items() if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def solve(tmp_path: Path, **options) -> tuple[dict[str, int], dict, Descendants]:
    problems = problems_of(N, answers=[i + 1 for i in range(N)])
    output, summary = tmp_path / "sub.csv", tmp_path / "summary.json"
    with Descendants() as seen:
        try:
            run(problems, output=output, summary=summary, progress=False,
                **{"batch_size": 8, "samples": 2, "threads": 1, **options})
        finally:
            rows = output.read_text().splitlines()
    assert rows[0] == "id,answer" and len(rows) == N + 1  # complete, whatever happened
    answers = {row.split(",")[0]: int(row.split(",")[1]) for row in rows[1:]}
    return answers, json.loads(summary.read_text()), seen


def right(*, but: tuple[str, ...] = ()) -> dict[str, int]:
    return {f"p{i}": 0 if f"p{i}" in but else i + 1 for i in range(N)}


def journaled(tmp_path: Path) -> set[str]:
    lines = (tmp_path / "sub.journal.jsonl").read_text().splitlines()[1:]
    return {json.loads(line)["id"] for line in lines}


@pytest.mark.parametrize("batch_size, samples", [(1, 1), (4, 2), (8, 2), (6, 3)])
def test_a_child_gives_what_one_process_gives(tmp_path, fault, batch_size, samples):
    answers, summary, seen = solve(tmp_path, batch_size=batch_size, samples=samples)
    engine = PromptEngine(batch_size=batch_size, steps=lambda p, s: 3)
    here = run(problems_of(N, answers=[i + 1 for i in range(N)]), output=None, engine=engine, progress=False,
               batch_size=batch_size, samples=samples)
    assert answers == dict(here.answers) == right()
    for key in ("samples", "valid_answers", "correct", "generated_tokens", "fallbacks", "majority"):
        assert summary[key] == getattr(here.summary, key), key
    assert summary["engine_crashes"] == summary["problems_lost_to_crashes"] == 0
    assert seen.seen and not seen.stray()


@pytest.mark.parametrize("mb", [300, 700])
def test_the_summary_s_peak_memory_is_the_engine_process_s(tmp_path, fault, monkeypatch, mb):
    """The model is in the engine process: the summary's peak RSS is its, not the parent's (which holds none)."""
    monkeypatch.setenv("FAKE_ENGINE_MB", str(mb))
    _, summary, _ = solve(tmp_path)
    assert mb <= summary["peak_rss_mb"] < mb + 400


@pytest.mark.parametrize("how", ["abort", "sigsegv", "sigill", "exit"])
def test_a_crash_costs_the_problems_in_flight_one_more_try(tmp_path, fault, capsys, how):
    fault(f"{how}@decode:p3@once")
    answers, summary, seen = solve(tmp_path)
    assert answers == right()
    assert (summary["engine_crashes"], summary["problems_lost_to_crashes"]) == (1, 0)
    assert journaled(tmp_path) == set(right())
    lines = [line for line in capsys.readouterr().err.splitlines() if SIGNAL_OF[how] in line]
    assert len(lines) == 1 and "restarting the engine" in lines[0], lines
    assert not seen.stray()


@pytest.mark.parametrize("how", ["abort", "sigsegv"])
def test_a_problem_in_flight_at_two_crashes_gets_the_fallback(tmp_path, fault, capsys, how):
    fault(f"{how}@decode:p3")
    answers, summary, seen = solve(tmp_path)
    assert answers == right(but=("p3",))  # the others were retried alone, and answered
    assert (summary["engine_crashes"], summary["problems_lost_to_crashes"]) == (STRIKES, 1)
    assert summary["fallbacks"] == 1 and summary["not_started"] == 0
    assert journaled(tmp_path) == set(right()) - {"p3"}  # --resume tries it again
    assert f"in flight at {STRIKES} engine crashes" in capsys.readouterr().err
    assert not seen.stray()


def test_a_death_while_loading_restarts(tmp_path, fault):
    fault("abort@load@once")
    answers, summary, seen = solve(tmp_path)
    assert answers == right()
    assert (summary["engine_crashes"], summary["problems_lost_to_crashes"]) == (1, 0)
    assert not seen.stray()


@pytest.mark.parametrize("how", ["sigsegv", "sigill", "abort"])
def test_restarts_run_out_and_the_run_ends_written(tmp_path, fault, capsys, how):
    fault(f"{how}@load")
    with pytest.raises(EngineError, match=f"crashed {MAX_RESTARTS + 1} times"):
        solve(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine_crashes"] == MAX_RESTARTS + 1 and summary["fallbacks"] == N
    assert len(summary["notes"]) == len(set(summary["notes"]))  # each said once (a SIGILL's --no-repack note)
    assert ("restarted with --no-repack" in " ".join(summary["notes"])) == (how == "sigill")
    assert "no restart left" in capsys.readouterr().err


def test_sigill_at_the_first_decode_restarts_without_repacking(tmp_path, fault):
    fault("sigill@decode:p0@once")
    answers, summary, seen = solve(tmp_path)
    assert answers == right()
    assert (summary["engine_crashes"], summary["problems_lost_to_crashes"], summary["repack"]) == (1, 0, False)
    assert any("--no-repack" in note for note in summary["notes"])


def test_a_crash_during_a_tool_call_leaves_no_sandbox_worker(tmp_path, fault):
    fault("sigsegv@tool:p2@once")
    answers, summary, seen = solve(tmp_path, tir=True, batch_size=4)
    assert answers == right()
    assert summary["engine_crashes"] == 1 and summary["tools"]["tool_calls"] >= N
    assert seen.sandbox_workers() >= 1
    assert not seen.stray()
