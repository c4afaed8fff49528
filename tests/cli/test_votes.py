"""Tier 2: confidence votes, the early-stop rules, --stop-below, the per-problem cap and the grading
counters, on the fake engine (which hands out scripted confidence aggregates)."""

from __future__ import annotations

import json
import random

import pytest
from fakes import Clock, FakeEngine, TimedEngine, boxed, conf, problems_of

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import FINISH_LOW_CONFIDENCE
from aimo_gguf.errors import InputError
from aimo_gguf.pipeline import runner
from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.solving.solver import solve
from aimo_gguf.solving.voting import VOTE_MODES, Vote, pick


def solve_one(answers, confidences=None, **kw):
    kw.setdefault("samples", len(answers))
    kw.setdefault("batch_size", 1)
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=kw["batch_size"],
                        confidence=(lambda p, s: confidences[s]) if confidences else None)
    (result,) = solve(problems_of(1, answers=[kw.pop("expected", None)]), engine, RunConfig(**kw))
    return result, engine


def test_entropy_votes_pick_the_sure_minority():
    answers = [3, 3, 3, 8, 8]
    sure, unsure = conf(0.1), conf(2.0)
    confidences = [unsure, unsure, unsure, sure, sure]
    assert solve_one(answers, confidences)[0].answer == 3  # majority
    result, _ = solve_one(answers, confidences, vote="entropy")
    assert result.answer == 8 and result.votes == 2
    assert result.mode_answers == {"majority": 3, "entropy": 8, "tail": 8, "deepconf": 3}


def test_early_stopping_under_weights_waits_until_no_heavy_vote_could_change_the_winner():
    answers = [1, 1, 1, 2, 2]
    confidences = [conf(1.0)] * 5
    # Plain majority: after three votes for 1, two votes left cannot catch up.
    result, engine = solve_one(answers, confidences)
    assert result.early_stopped and len(engine.pulled) == 3
    # Entropy votes can weigh up to 1 / floor = 20: the same three votes decide nothing.
    result, engine = solve_one(answers, confidences, vote="entropy")
    assert not result.early_stopped and len(engine.pulled) == 5 and result.answer == 1
    # A bigger floor bounds the weight: 1 / 1.0 = 1, the plain case again.
    result, engine = solve_one(answers, confidences, vote="entropy", vote_floor=1.0)
    assert result.early_stopped and len(engine.pulled) == 3


def test_stop_once_n_agree_holds_under_weights_and_keep_top_waits_for_every_sample():
    answers = [4, 9, 4, 4, 4, 4, 4, 4]
    confidences = [conf(1.0)] * 8
    result, engine = solve_one(answers, confidences, vote="entropy", early_stop_votes=3)
    assert result.early_stopped and len(engine.pulled) == 4
    result, engine = solve_one(answers, confidences, keep_top=50)
    assert not result.early_stopped and len(engine.pulled) == 8


def test_early_stop_lead_and_unanswered_samples():
    result, engine = solve_one([5, 6, 5, 5, 6, 6, 6, 6], early_stop=False, early_stop_lead=2)
    assert result.early_stopped and len(engine.pulled) == 4 and result.answer == 5
    result, engine = solve_one([None, 2, None, 2, 2, 2], early_stop=False, stop_unanswered=2)
    assert result.early_stopped and len(engine.pulled) == 3 and result.answer == 2 and result.votes == 1


@pytest.mark.parametrize("batch_size", [1, 8])
def test_stop_below_cuts_the_doubtful_samples_after_the_warm_up_and_they_do_not_vote(batch_size):
    answers = [7, 7, 7, 7, 3, 7, 3, 3]
    groups = [5.0, 6.0, 7.0, 8.0, 1.0, 9.0, 1.0, 1.0]
    confidences = [conf(1.0, group=g) for g in groups]
    steps = (lambda p, s: s + 1) if batch_size > 1 else None  # warm-up samples finish first
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=batch_size, steps=steps,
                        confidence=lambda p, s: confidences[s])
    cfg = RunConfig(samples=8, batch_size=batch_size, early_stop=False, stop_below=50, stop_warmup=4)
    (result,) = solve(problems_of(1), engine, cfg)
    # Threshold: the median of 5, 6, 7, 8 = 6.5; samples 4, 6 and 7 fall below it.
    assert result.low_confidence == 3
    assert [c.request.key[1] for c in engine.finished if c.finish_reason == FINISH_LOW_CONFIDENCE] == [4, 6, 7]
    assert result.answer == 7 and result.valid == 5 and result.samples == 8
    assert all(r.stop_below == pytest.approx(6.5) for r in engine.pulled[4:])


def test_a_problem_time_cap_holds_without_a_time_limit_and_under_one():
    clock = Clock()
    engine = TimedEngine(lambda p, s: boxed(5), clock, step=10.0, batch_size=1)
    cfg = RunConfig(samples=6, batch_size=1, early_stop=False, problem_time_cap=25)
    results = sorted(solve(problems_of(2), engine, cfg, clock=clock), key=lambda r: r.index)
    assert [r.budget for r in results] == [25, 25]
    assert all(r.cut and r.samples == 3 for r in results)
    # Under --time-limit a problem gets min(its share, the cap); what it leaves goes to the next.
    clock = Clock()
    engine = TimedEngine(lambda p, s: boxed(5), clock, step=10.0, batch_size=1)
    cfg = RunConfig(samples=2, batch_size=1, problem_time_cap=30)
    results = sorted(solve(problems_of(3), engine, cfg, deadline=clock.now + 60, clock=clock),
                     key=lambda r: r.index)
    assert results[0].budget == pytest.approx(20.0)  # 60 / 3 < 30
    assert results[1].budget == pytest.approx(20.0)  # (60 - 20) / 2
    assert results[2].budget == pytest.approx(20.0)  # the 20 s left, under the cap
    assert not any(r.cut for r in results)


def test_bad_vote_options_are_one_line_errors():
    for kw, text in [(dict(vote="loudest"), "--vote"), (dict(keep_top=0), "--keep-top"),
                     (dict(stop_below=120), "--stop-below"), (dict(stop_below=10, samples=4), "--stop-warmup"),
                     (dict(vote="entropy", confidence=False), "--no-confidence"), (dict(vote_floor=0), "--vote-floor"),
                     (dict(problem_time_cap=0), "--problem-time-cap"), (dict(early_stop_lead=-1), "--early-stop-lead")]:
        with pytest.raises(InputError, match=text):
            RunConfig(**kw)


def test_confidence_is_asked_of_the_engine_only_when_something_needs_it():
    assert RunConfig().confidence_settings() is None
    assert RunConfig().confidence_settings(graded=True) is not None
    assert RunConfig().confidence_settings(traces=True) is not None
    assert RunConfig(vote="tail", tail_window=64).confidence_settings().tail_window == 64
    assert RunConfig(confidence=False).confidence_settings(graded=True) is None


def test_the_grading_counters_match_a_recomputation_from_the_traces(tmp_path):
    rng = random.Random(3)
    n, samples = 40, 6
    table = [[rng.choice([1, 1, 2, 2, 3, None]) for _ in range(samples)] for _ in range(n)]
    confidences = [[conf(rng.uniform(0.05, 2), group=rng.uniform(1, 9), tail=rng.uniform(0.05, 2))
                    for _ in range(samples)] for _ in range(n)]
    problems = [Problem(id=f"q{i}", problem=f"q{i}", answer=rng.choice([1, 2])) for i in range(n)]
    engine = FakeEngine(lambda p, s: boxed(table[p][s]), batch_size=4, confidence=lambda p, s: confidences[p][s])
    result = runner.run(problems, output=tmp_path / "sub.csv", summary=tmp_path / "s.json",
                        traces=tmp_path / "t.jsonl", progress=False, engine=engine, samples=samples, batch_size=4,
                        early_stop=False, vote="entropy")
    data = json.loads((tmp_path / "s.json").read_text())
    traces: dict[str, list[dict]] = {}
    for line in (tmp_path / "t.jsonl").read_text().splitlines():
        record = json.loads(line)
        traces.setdefault(record["id"], []).append(record)
    expected = {p.id: p.answer for p in problems}
    correct = dict.fromkeys(VOTE_MODES, 0)
    pass1 = passn = tokens = 0
    for pid, records in traces.items():
        votes = []
        for r in sorted(records, key=lambda r: r["sample"]):
            votes.append(Vote(r["sample"], r["answer"], type(conf())(**r["confidence"])))
            tokens += r["tokens"]
        for mode in VOTE_MODES:
            winner = pick(votes, mode)
            correct[mode] += (0 if winner is None else winner) == expected[pid]
        right = sum(v.answer == expected[pid] for v in votes)
        pass1 += right / len(votes)
        passn += right > 0
    assert data["mode_correct"] == correct
    assert data["correct"] == correct["entropy"] and data["vote"] == "entropy"
    assert data["pass_at_1"] == pytest.approx(pass1 / n)
    assert data["pass_at_n"] == passn
    assert data["answer_tokens"] == tokens and data["tokens_per_problem"] == pytest.approx(tokens / n, abs=0.1)
    assert data["mode_accuracy"]["majority"] == pytest.approx(correct["majority"] / n)
    table_text = result.summary.table()
    assert "pass@1 / pass@n" in table_text and "by vote mode" in table_text


# --- aimo-gguf report ---------------------------------------------------------------------------------------


@pytest.fixture
def two_summaries(tmp_path):
    """Two graded runs on the fake engine: majority and entropy votes, the same samples."""
    rng = random.Random(11)
    table = [[rng.choice([1, 2, None]) for _ in range(4)] for _ in range(12)]
    confidences = [[conf(rng.uniform(0.1, 2)) for _ in range(4)] for _ in range(12)]
    problems = [Problem(id=f"q{i}", problem=f"q{i}", answer=1) for i in range(12)]
    paths = []
    for vote in ("majority", "entropy"):
        engine = FakeEngine(lambda p, s: boxed(table[p][s]), batch_size=4, confidence=lambda p, s: confidences[p][s])
        path = tmp_path / f"{vote}.json"
        runner.run(problems, output=tmp_path / f"{vote}.csv", summary=path, progress=False, engine=engine,
                   samples=4, batch_size=4, early_stop=False, vote=vote)
        paths.append(path)
    return paths


def test_report_prints_every_mode_side_by_side_and_plots(two_summaries, tmp_path):
    from click.testing import CliRunner

    from aimo_gguf.cli import cli

    plot = tmp_path / "modes.png"
    result = CliRunner().invoke(cli, ["report", *map(str, two_summaries), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    modes_table = result.stdout.split("\n\n")[0]  # then accuracy at k and the length-capped samples
    lines = [line for line in modes_table.splitlines() if line.startswith("| ")]
    assert lines[0].split(" | ")[1:4] == ["model", "vote", "graded"] and len(lines) == 3
    majority, entropy = (json.loads(p.read_text()) for p in two_summaries)
    # The same samples: every mode's accuracy is the same in both runs; each run's own column is its vote.
    assert majority["mode_correct"] == entropy["mode_correct"]
    assert majority["correct"] == majority["mode_correct"]["majority"]
    assert entropy["correct"] == entropy["mode_correct"]["entropy"]
    assert f"{entropy['pass_at_1']:.1%}" in lines[2] and "(n=4)" in lines[2]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content, message", [
    ("not json", "is not a summary JSON"),
    ('{"a": 1}', "is not an aimo-gguf run summary"),
    ('{"graded": 0, "samples_per_problem": 4}', "no answer column"),
])
def test_report_refuses_what_is_not_a_graded_summary_in_one_line(tmp_path, content, message):
    from click.testing import CliRunner

    from aimo_gguf.cli import cli

    path = tmp_path / "s.json"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["report", str(path)])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.json")])
    assert missing.exit_code != 0 and "no such file" in missing.output


def test_report_will_not_plot_over_a_summary(two_summaries):
    from click.testing import CliRunner

    from aimo_gguf.cli import cli

    result = CliRunner().invoke(cli, ["report", str(two_summaries[0]), "--plot", str(two_summaries[0])])
    assert result.exit_code != 0 and "--plot" in result.output
    assert json.loads(two_summaries[0].read_text())["graded"] == 12


def test_stop_once_n_agree_counts_the_answer_the_weighted_vote_submits():
    # One sure vote for 9, then three unsure votes for 4: under entropy 9 leads, so "3 agree on 4" stops
    # nothing (stopping there would submit 9 on one vote); 9's third vote does.
    answers = [9, 4, 4, 4, 9, 9, 9, 9]
    confidences = [conf(0.05)] + [conf(2.0)] * 3 + [conf(0.05)] * 4
    result, engine = solve_one(answers, confidences, vote="entropy", early_stop_votes=3)
    assert result.answer == 9 and result.votes == 3 and len(engine.pulled) == 6
    result, engine = solve_one(answers, confidences, early_stop_votes=3)  # majority: 4 has 3 at sample 3
    assert result.answer == 4 and len(engine.pulled) == 4


def test_the_warm_up_is_the_first_sample_numbers_whatever_finishes_first():
    # Later samples finish first (fewer steps); the warm-up is still samples 0-3, and only 4-7 can be cut.
    answers = [7] * 8
    groups = [5.0, 6.0, 7.0, 8.0, 1.0, 1.0, 9.0, 9.0]
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=8, steps=lambda p, s: 20 - s,
                        confidence=lambda p, s: conf(1.0, group=groups[s]))
    cfg = RunConfig(samples=8, batch_size=8, early_stop=False, stop_below=50, stop_warmup=4)
    (result,) = solve(problems_of(1), engine, cfg)
    assert result.low_confidence == 0  # 4-7 finished before the warm-up did: nothing to cut them with
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=8, steps=lambda p, s: s + 1,
                        confidence=lambda p, s: conf(1.0, group=groups[s]))
    (result,) = solve(problems_of(1), engine, cfg)
    assert result.low_confidence == 2
    assert all(r.stop_below is None for r in engine.pulled[:4])


@pytest.mark.parametrize("content", [
    '{"graded": "x", "samples_per_problem": 4}',
    '{"graded": 3, "samples_per_problem": "x"}',
    '{"graded": 3, "samples_per_problem": 4, "mode_correct": {"majority": "a"}}',
    '{"graded": 3, "samples_per_problem": 4, "tokens_per_problem": "many"}',
])
def test_report_on_a_summary_with_wrong_types_is_one_line(tmp_path, content):
    from click.testing import CliRunner

    from aimo_gguf.cli import cli

    path = tmp_path / "s.json"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["report", str(path)])
    assert result.exit_code != 0 and "Traceback" not in result.output and "wrong type" in result.output


def test_without_confidence_only_majority_is_counted(tmp_path):
    problems = [Problem(id=f"q{i}", problem=f"q{i}", answer=1) for i in range(3)]
    engine = FakeEngine(lambda p, s: boxed(1), batch_size=2)
    result = runner.run(problems, output=tmp_path / "sub.csv", progress=False, engine=engine, samples=2, batch_size=2)
    assert result.summary.mode_correct == {"majority": 3}


def test_resume_is_refused_when_the_vote_changes_and_keeps_the_grading_counters(tmp_path):
    problems = [Problem(id=f"q{i}", problem=f"q{i}", answer=i % 2) for i in range(6)]

    def engine():  # replies by sample number only: a resumed run numbers its problems from 0 again
        return FakeEngine(lambda p, s: boxed(s % 2 if s < 3 else None), batch_size=4,
                          confidence=lambda p, s: conf(0.5 + s, group=3.0 + s))

    kw = dict(output=tmp_path / "sub.csv", progress=False, samples=4, batch_size=4, early_stop=False)
    full = runner.run(problems, engine=engine(), **kw, journal=tmp_path / "full.jsonl")
    runner.run(problems[:3], engine=engine(), **kw)  # the journal holds the first three problems
    with pytest.raises(InputError, match="vote"):
        runner.run(problems, engine=engine(), **kw, resume=True, vote="entropy")
    resumed = runner.run(problems, engine=engine(), **kw, resume=True)
    assert resumed.summary.resumed == 3
    for name in ("correct", "pass_at_1_sum", "pass_at_n", "mode_correct", "low_confidence", "answer_tokens"):
        assert getattr(resumed.summary, name) == getattr(full.summary, name), name
