"""Tier 2: accuracy at k and the length-capped samples of a graded run, on the fake engine: the summary's
counters against a brute-force recomputation from the traces, their fixed size, resume, and report."""

from __future__ import annotations

import json
import random
from itertools import combinations

import pytest
from click.testing import CliRunner
from fakes import FakeEngine, boxed, conf

from aimo_gguf.cli import cli
from aimo_gguf.engine.confidence import Confidence
from aimo_gguf.pipeline import runner
from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.solving.metrics import k_values
from aimo_gguf.solving.voting import Vote, pick

SAMPLES = 6


def graded_run(tmp_path, *, n=24, samples=SAMPLES, vote="entropy", seed=5, name="s", reply=None, **kw):
    rng = random.Random(seed)
    table = [[rng.choice([1, 1, 2, 3, None]) for _ in range(samples)] for _ in range(n)]
    confidences = [[conf(rng.uniform(0.05, 2), group=rng.uniform(1, 9)) for _ in range(samples)] for _ in range(n)]
    answers = random.Random(seed + 1)  # the same problems whatever n: a resumed run reads the journal's
    problems = [Problem(id=f"q{i}", problem=f"q{i}", answer=answers.choice([1, 2])) for i in range(n)]
    engine = FakeEngine(reply or (lambda p, s: boxed(table[p][s])), batch_size=4,
                        confidence=lambda p, s: confidences[p][s])
    kw.setdefault("early_stop", False)
    result = runner.run(problems, output=tmp_path / f"{name}.csv", summary=tmp_path / f"{name}.json",
                        traces=tmp_path / f"{name}.jsonl", progress=False, engine=engine, samples=samples,
                        batch_size=4, vote=vote, **kw)
    return result, problems


def traced_votes(path) -> dict[str, list[Vote]]:
    votes: dict[str, list[Vote]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        confidence = Confidence(**r["confidence"]) if r["confidence"] else None
        votes.setdefault(r["id"], []).append(Vote(r["sample"], r["answer"], confidence,
                                                  capped=r["finish_reason"] == "length"))
    return votes


def brute_at_k(votes, k, expected, mode):
    subsets = list(combinations(votes, k))
    passed = sum(any(v.answer == expected for v in s) for s in subsets) / len(subsets)
    winners = [pick(list(s), mode) for s in subsets]
    voted = sum((0 if w is None else w) == expected for w in winners) / len(subsets)
    return passed, voted


@pytest.mark.parametrize("vote", ["majority", "entropy", "deepconf"])
def test_the_at_k_counters_match_brute_force_over_the_traced_samples(tmp_path, vote):
    result, problems = graded_run(tmp_path, vote=vote)
    data = json.loads((tmp_path / "s.json").read_text())
    votes = traced_votes(tmp_path / "s.jsonl")
    expected = {p.id: p.answer for p in problems}
    accuracy = data["at_k_accuracy"]
    for k in k_values(SAMPLES):
        rows = [brute_at_k(votes[pid], k, expected[pid], mode) for pid in votes for mode in ("majority", vote)]
        passed = sum(r[0] for r in rows[::2]) / len(problems)
        majority = sum(r[1] for r in rows[::2]) / len(problems)
        weighted = sum(r[1] for r in rows[1::2]) / len(problems)
        assert accuracy["pass"][str(k)] == pytest.approx(passed, abs=1e-6)
        assert accuracy["majority"][str(k)] == pytest.approx(majority, abs=1e-6)
        assert accuracy["vote"][str(k)] == pytest.approx(weighted, abs=1e-6)
    # At the ends they are the counters the run already had.
    assert accuracy["pass"]["1"] == pytest.approx(data["pass_at_1"], abs=1e-6)
    assert accuracy["pass"][str(SAMPLES)] == pytest.approx(data["pass_at_n_accuracy"])
    assert accuracy["majority"][str(SAMPLES)] == pytest.approx(data["mode_accuracy"]["majority"])
    assert accuracy["vote"][str(SAMPLES)] == pytest.approx(data["accuracy"])
    assert "pass@k" in result.summary.table() and "maj@k" in result.summary.table()


@pytest.mark.parametrize("n", [3, 40])
def test_the_counters_stay_the_same_size_whatever_the_number_of_problems(tmp_path, n):
    graded_run(tmp_path, n=n, samples=8)
    at_k = json.loads((tmp_path / "s.json").read_text())["at_k"]
    assert at_k["k"] == [1, 2, 4, 8]
    assert all(len(v) == 4 for v in at_k.values()) and at_k["problems"] == [n] * 4


def test_a_problem_with_fewer_voting_samples_counts_only_at_the_k_it_has(tmp_path):
    # Early stopping on: unanimous problems stop after a few samples.
    graded_run(tmp_path, n=10, samples=8, vote="majority", reply=lambda p, s: boxed(1), early_stop_votes=2)
    at_k = json.loads((tmp_path / "s.json").read_text())["at_k"]
    assert at_k["problems"][0] == 10 and at_k["problems"][-1] == 0


def test_length_capped_samples_count_only_a_stated_answer_and_are_reported_apart(tmp_path):
    # Sample 0 stops after its box; samples 1-2 run past the limit: one boxed before the cut, one not.
    replies = {0: "So the answer is \\boxed{1}.", 1: "The answer is 2, and to check: " + "7 " * 50,
               2: "We count 1 then 1 then " + "1 " * 60}
    result, problems = graded_run(tmp_path, n=4, samples=3, vote="majority", reply=lambda p, s: replies[s],
                                  max_tokens=40)
    for vs in traced_votes(tmp_path / "s.jsonl").values():
        by_sample = {v.sample: v for v in vs}
        assert not by_sample[0].capped and by_sample[1].capped and by_sample[2].capped
        assert by_sample[1].answer == 2  # stated before the cut
        assert by_sample[2].answer is None  # its last number is wherever the limit fell
    s = result.summary
    assert (s.capped, s.capped_answered, s.capped_graded) == (8, 4, 8)
    assert s.capped_correct == sum(p.answer == 2 for p in problems)
    # Votes 1 (sample 0) and 2 (capped) tie: the lower sample wins, with or without the capped ones.
    assert s.correct_without_capped == s.correct == sum(p.answer == 1 for p in problems)
    assert "length-capped" in s.table()


def test_resume_keeps_the_at_k_and_capped_counters(tmp_path):
    # Replies by sample number only: a resumed run numbers its problems from 0 again.
    replies = ["\\boxed{1}", "\\boxed{2}", "The answer is 1; " + "9 " * 40, "\\boxed{2}", "so 3 " * 20, "\\boxed{1}"]
    kw = dict(reply=lambda p, s: replies[s], max_tokens=30, vote="majority")
    full, _ = graded_run(tmp_path, n=8, name="full", **kw)
    graded_run(tmp_path, n=4, name="part", journal=tmp_path / "j.jsonl", **kw)
    resumed, _ = graded_run(tmp_path, n=8, name="part", journal=tmp_path / "j.jsonl", resume=True, **kw)
    assert resumed.summary.resumed == 4 and full.summary.capped == 16
    for name in ("capped", "capped_answered", "capped_graded", "capped_correct", "correct_without_capped"):
        assert getattr(resumed.summary, name) == getattr(full.summary, name), name
    for series, sums in full.summary.at_k.items():  # summed in another order: equal up to rounding
        assert resumed.summary.at_k[series] == pytest.approx(sums), series


def test_report_prints_accuracy_at_k_and_the_capped_samples_and_plots_both(tmp_path):
    graded_run(tmp_path, name="a", vote="majority", max_tokens=30)
    graded_run(tmp_path, name="b", vote="entropy", max_tokens=30)
    plot = tmp_path / "curves.png"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                      "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    modes, at_k, capped = result.stdout.strip().split("\n\n")
    assert "| k=1 | k=2 | k=4 | k=6 |" in at_k
    assert sum("maj@k" in line for line in at_k.splitlines()) == 2 and "entropy@k" in at_k
    assert "majority@k" not in at_k  # a majority run's vote is its maj@k
    assert len(capped.splitlines()) == 4 and "voted, without them" in capped
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_reads_a_summary_from_before_these_counters(tmp_path):
    graded_run(tmp_path, name="old")
    data = json.loads((tmp_path / "old.json").read_text())
    for key in ("at_k", "at_k_accuracy", "capped", "capped_answered", "capped_graded", "capped_correct",
                "correct_without_capped"):
        data.pop(key)
    (tmp_path / "old.json").write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "old.json")])
    assert result.exit_code == 0 and "\n\n" not in result.stdout.strip()  # the modes table alone


def test_report_refuses_a_malformed_at_k_table_in_one_line(tmp_path):
    graded_run(tmp_path, name="bad")
    data = json.loads((tmp_path / "bad.json").read_text())
    data["at_k_accuracy"] = {"pass": {"one": 0.5}}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "bad.json")])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
