"""Competition mode: the time budget, early stopping on votes, the journal and --resume,
and the AIMO3 inference-server adapter."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_solver import FakeEngine, boxed, problems_of

from aimo_gguf import solver
from aimo_gguf.config import RunConfig
from aimo_gguf.errors import InputError
from aimo_gguf.journal import Journal, default_journal, fingerprint
from aimo_gguf.kaggle import KaggleSolver, _scalar
from aimo_gguf.solver import ProblemResult, solve

# --- tier 1 and 2: a fake engine on a fake clock -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedEngine(FakeEngine):
    """A FakeEngine whose every step takes ``step`` seconds of the fake clock."""

    def __init__(self, reply, clock: Clock, step: float, **kw) -> None:
        super().__init__(reply, **kw)
        self.clock = clock
        self.step = step

    def generate(self, requests, on_step=None):
        def tick():
            self.clock.now += self.step
            if on_step is not None:
                on_step()

        yield from super().generate(requests, on_step=tick)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(solver, "clock", c)
    return c


def test_each_problem_gets_the_time_left_over_the_problems_left(clock):
    engine = TimedEngine(lambda p, s: boxed(7), clock, step=1.0, batch_size=1)
    results = list(solve(problems_of(4), engine, RunConfig(samples=2, batch_size=1), deadline=clock.now + 100))
    budgets = [r.budget for r in sorted(results, key=lambda r: r.index)]
    # 100 s for 4 problems; each used 2 s, which the later ones share
    assert budgets == pytest.approx([25.0, 98 / 3, 96 / 2, 94.0])
    assert all(not r.cut for r in results) and all(0 < r.seconds <= 2.0 for r in results)


def test_problems_side_by_side_share_the_time_they_run_in(clock):
    engine = TimedEngine(lambda p, s: boxed(7), clock, step=1.0, batch_size=8)
    results = list(solve(problems_of(8), engine, RunConfig(samples=2, batch_size=8), deadline=clock.now + 100))
    # 4 problems run at once: the first gets 100 * 4 / 8 s
    first = min(results, key=lambda r: r.index)
    assert first.budget == pytest.approx(50.0)


def test_a_problem_out_of_time_is_cut_and_voted_on_what_finished(clock):
    # every step finishes one sample; a problem needs 4 steps but gets 100/2 * ... seconds
    engine = TimedEngine(lambda p, s: boxed(5 if s < 2 else 9), clock, step=10.0, batch_size=1)
    cfg = RunConfig(samples=4, batch_size=1, early_stop=False)
    results = sorted(solve(problems_of(2), engine, cfg, deadline=clock.now + 50), key=lambda r: r.index)
    first, second = results
    assert first.cut and first.samples == 3 and first.answer == 5  # 25 s: samples at 10, 20 finish, cut at 30
    assert first.seconds <= first.budget + 10.0
    assert second.cut or second.samples == 4


def test_at_the_deadline_nothing_more_starts_and_the_rest_is_missing(clock):
    engine = TimedEngine(lambda p, s: boxed(1), clock, step=5.0, batch_size=1)
    cfg = RunConfig(samples=1, batch_size=1)
    results = list(solve(problems_of(10), engine, cfg, deadline=clock.now + 20))
    assert len(results) < 10  # the caller writes fallbacks for problems never started
    assert clock.now <= 1000 + 20 + 5.0  # at most one step past the deadline


def test_run_with_a_time_limit_writes_every_row_and_counts_cut_problems(clock, tmp_path, monkeypatch):
    engine = TimedEngine(lambda p, s: boxed(3), clock, step=10.0, batch_size=1)
    monkeypatch.setattr(solver, "Engine", lambda *a, **k: engine)
    monkeypatch.setattr(solver, "resolve_model", lambda m: Path("fake.gguf"), raising=False)
    import aimo_gguf.models

    monkeypatch.setattr(aimo_gguf.models, "resolve_model", lambda m: Path("fake.gguf"))
    out = tmp_path / "sub.csv"
    result = solver.run(problems_of(6), output=out, progress=False, samples=3, batch_size=1, early_stop=False,
                        time_limit=100, time_margin=5)
    s = result.summary
    rows = list(csv.reader(out.open()))
    assert len(rows) == 7
    assert s.time_limit == 100 and s.cut >= 1 and s.problems_done + s.not_started == 6
    assert s.fallbacks >= s.not_started
    assert set(s.problem_seconds) == {"min", "median", "max"} and s.budget_seconds["max"] <= 95
    assert "problems cut" in s.table()


def test_early_stop_votes_stops_at_n_votes():
    engine = FakeEngine(lambda p, s: boxed(4), batch_size=1)
    (r,) = solve(problems_of(1), engine, RunConfig(samples=8, batch_size=1, early_stop=False, early_stop_votes=3))
    assert r.answer == 4 and r.samples == 3 and r.early_stopped
    assert len(engine.pulled) == 3


def test_early_stop_votes_waits_for_the_leader():
    answers = [1, 2, 1, 2, 2, 2, 1, 1]
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=1)
    (r,) = solve(problems_of(1), engine, RunConfig(samples=8, batch_size=1, early_stop=False, early_stop_votes=3))
    assert r.answer == 2 and r.samples == 5


def test_bad_competition_options_are_one_line(runner):
    from aimo_gguf.cli import cli

    for args, message in [(["--time-limit", "0"], "--time-limit must be positive"),
                          (["--early-stop-votes", "-1"], "--early-stop-votes must be 0"),
                          (["--time-margin", "-2"], "--time-margin must be 0")]:
        result = runner.invoke(cli, ["run", *args])
        assert result.exit_code == 2 and message in result.stderr


# --- the journal --------------------------------------------------------------------------


def _result(i: int, answer: int) -> ProblemResult:
    return ProblemResult(index=i, id=f"p{i}", answer=answer, votes=1, valid=1, samples=1, fallback=False,
                         too_long=False, early_stopped=False, majority=True, correct=None, seconds=1.0)


def test_journal_round_trip_and_settings_check(tmp_path):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(samples=2), "m.gguf")
    with Journal(path, settings, resume=False) as j:
        j.append(_result(0, 11))
        j.append(_result(1, 22))
    with Journal(path, settings, resume=True) as j:
        assert {k: v["answer"] for k, v in j.entries.items()} == {"p0": 11, "p1": 22}
        j.append(_result(2, 33))
    assert len(path.read_text().splitlines()) == 4
    with pytest.raises(InputError, match=r"other settings \(samples: 2, now 3\)"):
        Journal(path, fingerprint(RunConfig(samples=3), "m.gguf"), resume=True)
    with Journal(path, settings, resume=False) as j:  # without --resume: a new journal...
        assert j.entries == {}
    assert len(path.read_text().splitlines()) == 4  # ...which replaces the old one only at its first entry
    with Journal(path, settings, resume=False) as j:
        j.append(_result(5, 55))
    assert len(path.read_text().splitlines()) == 2


def test_a_journal_torn_in_its_header_starts_over(tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    path.write_text('{"journal": 1, "sett')
    with Journal(path, settings, resume=True) as j:
        assert j.entries == {}
        j.append(_result(0, 5))
    with Journal(path, settings, resume=True) as j:
        assert list(j.entries) == ["p0"]


def test_an_unwritable_journal_warns_once_and_the_run_goes_on(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "j.jsonl").mkdir()  # a folder where the file should be: every open fails
    with Journal(folder / "j.jsonl", fingerprint(RunConfig(), "m.gguf"), resume=False) as j:
        j.append(_result(0, 1))
        j.append(_result(1, 2))
    assert capsys.readouterr().err.count("cannot write the journal") == 1


def test_resume_fingerprint_covers_tir_and_the_model_file(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(10))
    plain, tir = fingerprint(RunConfig(), model), fingerprint(RunConfig(tir=True), model)
    assert plain != tir and plain["model_bytes"] == 14
    assert fingerprint(RunConfig(batch_size=64, threads=1), model) == plain  # speed settings do not matter


def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    with Journal(path, settings, resume=False) as j:
        j.append(_result(0, 5))
    with path.open("a") as f:
        f.write('{"id": "p1", "answ')  # killed mid-write
    with Journal(path, settings, resume=True) as j:
        assert list(j.entries) == ["p0"]
        j.append(_result(2, 7))
    assert "ignoring the unfinished last line" in capsys.readouterr().err
    with Journal(path, settings, resume=True) as j:
        assert list(j.entries) == ["p0", "p2"]


def test_a_corrupt_middle_line_or_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    path.write_text(json.dumps({"journal": 1, "settings": settings}) + "\nnot json\n" + '{"id": "a", "answer": 1}\n')
    with pytest.raises(InputError, match="line 2: not JSON"):
        Journal(path, settings, resume=True)
    path.write_text('{"hello": 1}\n')
    with pytest.raises(InputError, match="is not an aimo-gguf journal"):
        Journal(path, settings, resume=True)


def test_resume_skips_journaled_problems(tmp_path, monkeypatch):
    engine = FakeEngine(lambda p, s: boxed(40 + p), batch_size=2)
    import aimo_gguf.models

    monkeypatch.setattr(solver, "Engine", lambda *a, **k: engine)
    monkeypatch.setattr(aimo_gguf.models, "resolve_model", lambda m: Path("fake.gguf"))
    out = tmp_path / "sub.csv"
    settings = fingerprint(RunConfig(samples=1), "fake.gguf")
    with Journal(default_journal(out), settings, resume=False) as j:
        j.append(_result(1, 99))  # p1 was solved before the crash
    result = solver.run(problems_of(3), output=out, progress=False, samples=1, batch_size=2, resume=True)
    # p1 comes from the journal, not recomputed; the fake replies by position among the problems run
    assert result.answers == [("p0", 40), ("p1", 99), ("p2", 41)]
    assert result.summary.resumed == 1 and result.summary.problems_done == 3
    assert [r.key[0] for r in engine.pulled] == [0, 1]  # only p0 and p2 ran (indices within the rest)
    assert default_journal(out).name == "sub.journal.jsonl"
    assert len(default_journal(out).read_text().splitlines()) == 4


# --- the adapter's input shapes ----------------------------------------------------------


def test_scalar_accepts_polars_pandas_lists_and_plain_values():
    import pandas as pd

    pl = pytest.importorskip("polars")
    assert _scalar(pl.Series("id", ["abc"])) == "abc"
    assert _scalar(pd.Series(["xyz"])) == "xyz"
    assert _scalar(["q"]) == "q" and _scalar("plain") == "plain"
    with pytest.raises(ValueError):
        _scalar(pl.Series("id", ["a", "b"]))


class BrokenEngine(FakeEngine):
    def generate(self, requests, on_step=None):
        raise RuntimeError("CUDA error: out of memory")


def test_predict_never_raises_and_answers_the_fallback(capsys):
    pl = pytest.importorskip("polars")
    s = KaggleSolver(engine=BrokenEngine(lambda p, q: ""), total_seconds=60, safety_seconds=1, fallback_answer=7,
                     samples=1, batch_size=1)
    frame = s.predict(pl.Series("id", ["x1"]), pl.Series("problem", ["What is 1+1?"]))
    assert frame.to_dicts() == [{"id": "x1", "answer": 7}]
    frame = s.predict(pl.Series("id", ["a", "b"]), "two rows is wrong")
    assert frame["answer"].to_list() == [7]
    assert s.stats.failures == 2 and "CUDA error: out of memory" in capsys.readouterr().err


def test_predict_spreads_the_budget_over_the_problems_to_come(clock):
    engine = TimedEngine(lambda p, s: boxed(12), clock, step=1.0, batch_size=2)
    s = KaggleSolver(engine=engine, total_seconds=110, safety_seconds=10, n_problems=4, samples=2, batch_size=2)
    shares = []
    for i in range(4):
        before = s.seconds_left() / s.problems_left
        frame = s.predict(f"id{i}", f"problem {i}")
        shares.append(before)
        assert frame["answer"].to_list() == [12]
    assert shares[0] == pytest.approx(25.0) and shares[1] > 25.0  # unused time flows to the later problems
    assert s.stats.answered == 4 and s.stats.fallbacks == 0


# --- tier 3: the real model ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMO_GGUF_")}
    return env


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
                           "--time-limit", "12", "--time-margin", "1"], capture_output=True, text=True, env=_env())
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
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


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
    from aimo_gguf.problems import read_problems
    from aimo_gguf.solver import run

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


def test_a_margin_as_long_as_the_limit_is_refused():
    with pytest.raises(InputError, match=r"--time-margin \(10 s\) must be shorter than --time-limit"):
        RunConfig(time_limit=10, time_margin=10)
    assert RunConfig(time_limit=1).margin == pytest.approx(0.1)  # the automatic margin fits short limits
    assert RunConfig(time_limit=18000).margin == 60.0
