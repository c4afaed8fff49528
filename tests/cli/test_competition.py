"""Competition mode on the fake engine and a fake clock: time budgets, early stopping on votes, --resume."""

from __future__ import annotations

import csv

import pytest
from fakes import Clock, FakeEngine, TimedEngine, boxed, problems_of

from aimo_gguf.config import RunConfig
from aimo_gguf.errors import InputError
from aimo_gguf.pipeline import runner
from aimo_gguf.pipeline.journal import Journal, default_journal, fingerprint
from aimo_gguf.solving.solver import ProblemResult, solve


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_each_problem_gets_the_time_left_over_the_problems_left(clock):
    engine = TimedEngine(lambda p, s: boxed(7), clock, step=1.0, batch_size=1)
    results = list(solve(problems_of(4), engine, RunConfig(samples=2, batch_size=1), deadline=clock.now + 100, clock=clock))
    budgets = [r.budget for r in sorted(results, key=lambda r: r.index)]
    # 100 s for 4 problems; each used 2 s, which the later ones share
    assert budgets == pytest.approx([25.0, 98 / 3, 96 / 2, 94.0])
    assert all(not r.cut for r in results) and all(0 < r.seconds <= 2.0 for r in results)


def test_problems_side_by_side_share_the_time_they_run_in(clock):
    engine = TimedEngine(lambda p, s: boxed(7), clock, step=1.0, batch_size=8)
    results = list(solve(problems_of(8), engine, RunConfig(samples=2, batch_size=8), deadline=clock.now + 100, clock=clock))
    # 4 problems run at once: the first gets 100 * 4 / 8 s
    first = min(results, key=lambda r: r.index)
    assert first.budget == pytest.approx(50.0)


def test_a_problem_out_of_time_is_cut_and_voted_on_what_finished(clock):
    # every step finishes one sample; a problem needs 4 steps but gets 100/2 * ... seconds
    engine = TimedEngine(lambda p, s: boxed(5 if s < 2 else 9), clock, step=10.0, batch_size=1)
    cfg = RunConfig(samples=4, batch_size=1, early_stop=False)
    results = sorted(solve(problems_of(2), engine, cfg, deadline=clock.now + 50, clock=clock), key=lambda r: r.index)
    first, second = results
    assert first.cut and first.samples == 3 and first.answer == 5  # 25 s: samples at 10, 20 finish, cut at 30
    assert first.seconds <= first.budget + 10.0
    assert second.cut or second.samples == 4


def test_at_the_deadline_nothing_more_starts_and_the_rest_is_missing(clock):
    engine = TimedEngine(lambda p, s: boxed(1), clock, step=5.0, batch_size=1)
    cfg = RunConfig(samples=1, batch_size=1)
    results = list(solve(problems_of(10), engine, cfg, deadline=clock.now + 20, clock=clock))
    assert len(results) < 10  # the caller writes fallbacks for problems never started
    assert clock.now <= 1000 + 20 + 5.0  # at most one step past the deadline


def test_run_with_a_time_limit_writes_every_row_and_counts_cut_problems(clock, tmp_path):
    engine = TimedEngine(lambda p, s: boxed(3), clock, step=10.0, batch_size=1)
    out = tmp_path / "sub.csv"
    result = runner.run(problems_of(6), output=out, progress=False, samples=3, batch_size=1, early_stop=False,
                        time_limit=100, time_margin=5, engine=engine, clock=clock)
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


def _result(i: int, answer: int) -> ProblemResult:
    return ProblemResult(index=i, id=f"p{i}", answer=answer, votes=1, valid=1, samples=1, fallback=False,
                         too_long=False, early_stopped=False, majority=True, correct=None, seconds=1.0)


def test_resume_skips_journaled_problems(tmp_path):
    engine = FakeEngine(lambda p, s: boxed(40 + p), batch_size=2)
    out = tmp_path / "sub.csv"
    settings = fingerprint(RunConfig(samples=1), "fake.gguf")
    with Journal(default_journal(out), settings, resume=False) as j:
        j.append(_result(1, 99))  # p1 was solved before the crash
    result = runner.run(problems_of(3), output=out, progress=False, samples=1, batch_size=2, resume=True,
                        engine=engine)
    # p1 comes from the journal, not recomputed; the fake replies by position among the problems run
    assert result.answers == [("p0", 40), ("p1", 99), ("p2", 41)]
    assert result.summary.resumed == 1 and result.summary.problems_done == 3
    assert [r.key[0] for r in engine.pulled] == [0, 1]  # only p0 and p2 ran (indices within the rest)
    assert default_journal(out).name == "sub.journal.jsonl"
    assert len(default_journal(out).read_text().splitlines()) == 4


def test_a_margin_as_long_as_the_limit_is_refused():
    with pytest.raises(InputError, match=r"--time-margin \(10 s\) must be shorter than --time-limit"):
        RunConfig(time_limit=10, time_margin=10)
    assert RunConfig(time_limit=1).margin == pytest.approx(0.1)  # the automatic margin fits short limits
    assert RunConfig(time_limit=18000).margin == 60.0
