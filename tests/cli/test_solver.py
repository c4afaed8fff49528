"""Tier 2: the solver's logic on the fake engine (no model, no llama.cpp decode).

``FakeEngine`` (tests/fakes.py) declares the same ``BatchEngine`` interface as
the real engine; its samples take ``steps(problem, sample)`` steps each (1 by
default), so tests choose the finishing order.
"""

from __future__ import annotations

import csv
import gc
import json
import random
import warnings
from collections import Counter

import pytest
from fakes import FakeEngine, boxed, problems_of

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import FINISH_CANCELLED, FINISH_EOS
from aimo_gguf.outputs import TraceWriter
from aimo_gguf.pipeline import runner
from aimo_gguf.pipeline.problems import Problem
from aimo_gguf.solving import solver
from aimo_gguf.solving.solver import ProblemResult, build_prompts, sample_seed, solve
from aimo_gguf.styles.prompts import raw_prompt

FIFO = {"fifo": lambda p, s: s + 1, "lifo": lambda p, s: 100 - s}  # sample 0 first / last


def config(**kw) -> RunConfig:
    kw.setdefault("samples", 4)
    kw.setdefault("batch_size", 1)
    return RunConfig(**kw)


def solve_all(problems, engine, cfg, **kw) -> list[ProblemResult]:
    return list(solve(problems, engine, cfg, **kw))


def majority(answers: list[int | None]) -> int | None:
    """The tests' own majority rule: the most votes, a tie to the answer voted for first; None never wins."""
    votes = [a for a in answers if a is not None]
    return max(votes, key=lambda a: (votes.count(a), -votes.index(a)), default=None)


def by_index(results: list[ProblemResult]) -> list[ProblemResult]:
    return sorted(results, key=lambda r: r.index)


# --- votes -----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("early_stop", [True, False])
def test_votes_winner_counts_and_majority(batch_size, early_stop):
    answers = [7, 7, 3, None]
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=batch_size)
    (result,) = solve_all(problems_of(1), engine, config(samples=4, batch_size=batch_size, early_stop=early_stop))
    assert result.answer == 7
    assert result.votes == 2
    assert result.valid == 3
    assert result.samples == 4
    # has_majority: 2 * votes > finished samples; 2 * 2 > 4 is False.
    assert result.majority is False
    assert result.fallback is False
    assert result.too_long is False
    # The vote is only decided by the last sample: nothing to stop early.
    assert result.early_stopped is False
    assert len(engine.pulled) == 4


def test_votes_strict_majority():
    answers = [7, 7, 3]
    engine = FakeEngine(lambda p, s: boxed(answers[s]))
    (result,) = solve_all(problems_of(1), engine, config(samples=3, early_stop=False))
    assert (result.answer, result.votes, result.valid, result.samples) == (7, 2, 3, 3)
    assert result.majority is True  # 2 * 2 > 3


@pytest.mark.parametrize("order", ["fifo", "lifo"])
def test_tie_break_does_not_depend_on_finishing_order(order):
    # 3 and 7 both have two votes; 3 voted first (sample 0), so 3 wins whatever the order.
    answers = [3, 7, 7, 3]
    engine = FakeEngine(lambda p, s: boxed(answers[s]), batch_size=4, steps=FIFO[order])
    (result,) = solve_all(problems_of(1), engine, config(samples=4, batch_size=4))
    assert result.answer == 3
    assert result.votes == 2
    assert result.majority is False


def test_answers_are_range_checked_with_config():
    answers = [123456, 5, 123456, 123456]  # out of the default 0..99999 range except 5
    engine = FakeEngine(lambda p, s: boxed(answers[s]))
    (result,) = solve_all(problems_of(1), engine, config(samples=4, early_stop=False))
    assert (result.answer, result.votes, result.valid) == (5, 1, 1)

    engine = FakeEngine(lambda p, s: boxed(answers[s]))
    (result,) = solve_all(problems_of(1), engine, config(samples=4, early_stop=False, modulo=1000))
    assert (result.answer, result.votes, result.valid) == (456, 3, 4)


# --- early stop ------------------------------------------------------------


def test_early_stop_batch_1_pulls_fewer_requests():
    engine = FakeEngine(lambda p, s: boxed(7))
    (result,) = solve_all(problems_of(1), engine, config(samples=5, batch_size=1))
    # After three 7s the two remaining samples cannot even tie: decided.
    assert result.early_stopped is True
    assert (result.answer, result.votes, result.valid, result.samples) == (7, 3, 3, 3)
    assert result.majority is True
    assert len(engine.pulled) == 3
    assert not any(c.finish_reason == FINISH_CANCELLED for c in engine.finished)


def test_no_early_stop_pulls_every_sample():
    engine = FakeEngine(lambda p, s: boxed(7))
    (result,) = solve_all(problems_of(1), engine, config(samples=5, batch_size=1, early_stop=False))
    assert result.early_stopped is False
    assert (result.answer, result.votes, result.valid, result.samples) == (7, 5, 5, 5)
    assert len(engine.pulled) == 5


def test_early_stop_needs_an_undecidable_remainder():
    # 7, 7, 3, ... with 5 samples: after 7,7,3 the two left could tie 7 (2 vs 1+2): not decided.
    answers = [7, 7, 3, 7, 7]
    engine = FakeEngine(lambda p, s: boxed(answers[s]))
    (result,) = solve_all(problems_of(1), engine, config(samples=5))
    # After sample 3 (7): 3 > 1 + 1, decided with one sample left.
    assert result.early_stopped is True
    assert len(engine.pulled) == 4
    assert (result.answer, result.votes, result.samples) == (7, 3, 4)


def test_early_stop_batch_4_cancels_in_flight_samples():
    engine = FakeEngine(lambda p, s: boxed(7), batch_size=4, steps=lambda p, s: s + 1)
    cfg = config(samples=5, batch_size=4)
    (result,) = solve_all(problems_of(1), engine, cfg)
    assert result.early_stopped is True
    # Samples 0..3 start together, 4 takes 0's slot; 0, 1, 2 finish with 7 and
    # decide the vote: 3 and 4 are cancelled.
    assert len(engine.pulled) == 5
    reasons = Counter(c.finish_reason for c in engine.finished)
    assert reasons == {FINISH_EOS: 3, FINISH_CANCELLED: 2}
    assert (result.answer, result.votes, result.valid, result.samples) == (7, 3, 3, 3)
    assert all(r.cancelled for r in engine.pulled[3:])
    assert not any(r.cancelled for r in engine.pulled[:3])


def test_early_stop_cancelled_samples_count_as_skipped_in_run(tmp_path, monkeypatch):
    engine = FakeEngine(lambda p, s: boxed(7), batch_size=4, steps=lambda p, s: s + 1)
    result = run_with(monkeypatch, tmp_path, engine, problems_of(1), samples=5, batch_size=4)
    summary = result.summary
    assert summary.samples == 3
    assert summary.samples_skipped == 2
    assert summary.early_stopped == 1
    assert summary.majority == 1
    assert summary.valid_answers == 3


def test_early_stop_frees_slots_for_the_next_problems():
    # Every problem is decided after 3 of its 5 samples; with batch 1, only 3 per problem run.
    engine = FakeEngine(lambda p, s: boxed(p))
    results = solve_all(problems_of(4), engine, config(samples=5, batch_size=1))
    assert [r.answer for r in by_index(results)] == [0, 1, 2, 3]
    assert all(r.early_stopped for r in results)
    assert len(engine.pulled) == 12


def test_early_stop_winner_equals_full_vote_random():
    """Early stopping never changes an answer: it only skips samples that cannot matter."""
    rng = random.Random(1234)
    n_problems, n_samples = 60, 7
    table = [[rng.choice([1, 2, 3, None]) for _ in range(n_samples)] for _ in range(n_problems)]
    reply = lambda p, s: boxed(table[p][s])  # noqa: E731
    for batch_size in (1, 3, 8):
        for order in ("fifo", "lifo", "random"):
            lengths = [[rng.randint(1, 9) for _ in range(n_samples)] for _ in range(n_problems)]
            steps = (lambda p, s: lengths[p][s]) if order == "random" else FIFO[order]
            engine = FakeEngine(reply, batch_size=batch_size, steps=steps)
            results = by_index(solve_all(problems_of(n_problems), engine, config(samples=n_samples, batch_size=batch_size)))
            assert [r.index for r in results] == list(range(n_problems))
            for r in results:
                expected = majority(table[r.index])
                if expected is None:
                    assert r.fallback and r.answer == 0
                else:
                    assert r.answer == expected, (batch_size, order, r)
                assert r.samples <= n_samples
                if not r.early_stopped:
                    assert r.samples == n_samples
            assert engine.max_active <= batch_size
            # Every pulled request came back exactly once.
            assert Counter(c.request.key for c in engine.finished) == Counter(r.key for r in engine.pulled)


# --- fallback and too long -------------------------------------------------


def test_no_valid_answer_gives_the_fallback():
    engine = FakeEngine(lambda p, s: "no idea")
    (result,) = solve_all(problems_of(1), engine, config(samples=3, fallback_answer=42))
    assert result.answer == 42
    assert result.fallback is True
    assert (result.votes, result.valid, result.samples) == (0, 0, 3)
    assert result.majority is False
    assert result.too_long is False
    assert result.early_stopped is False


def test_too_long_prompt_is_a_fallback_without_requests():
    problems = [
        Problem(id="short", problem="What is 1 + 1?"),
        Problem(id="long", problem="x" * 500),
        Problem(id="after", problem="What is 2 + 2?"),
    ]
    engine = FakeEngine(lambda p, s: boxed(p + 10), n_ctx_seq=300, batch_size=2)
    results = by_index(solve_all(problems, engine, config(samples=2, batch_size=2, fallback_answer=9)))
    assert [r.id for r in results] == ["short", "long", "after"]
    long = results[1]
    assert long.too_long is True
    assert long.fallback is True
    assert long.answer == 9
    assert (long.votes, long.valid, long.samples) == (0, 0, 0)
    assert engine.pulled_for(1) == []  # the solver never sends a prompt that cannot fit
    assert results[0].answer == 10 and not results[0].too_long
    assert results[2].answer == 12 and not results[2].too_long


def test_prompt_exactly_at_context_is_too_long():
    problem = Problem(id="p", problem="What?")
    n = len(build_prompts(FakeEngine(str), [problem], config())[0])
    for n_ctx, too_long in ((n, True), (n + 1, False)):
        engine = FakeEngine(lambda p, s: boxed(1), n_ctx_seq=n_ctx)
        (result,) = solve_all([problem], engine, config(samples=1))
        assert result.too_long is too_long


def test_only_problem_too_long():
    engine = FakeEngine(lambda p, s: boxed(1), n_ctx_seq=20)
    (result,) = solve_all(problems_of(1), engine, config(samples=3))
    assert result.too_long and result.fallback and result.answer == 0
    assert engine.pulled == []


def test_engine_side_too_long_finishes_the_problem_once():
    # An empty prompt passes the solver's length check but the engine refuses it.
    class EmptyPromptEngine(FakeEngine):
        def tokenize(self, text):
            return [] if "EMPTY" in text else super().tokenize(text)

    problems = [Problem(id="a", problem="EMPTY"), Problem(id="b", problem="What is 1?")]
    engine = EmptyPromptEngine(lambda p, s: boxed(5), batch_size=1)
    results = solve_all(problems, engine, config(samples=3))
    assert sorted(r.id for r in results) == ["a", "b"]
    a = next(r for r in results if r.id == "a")
    assert a.too_long and a.fallback and a.answer == 0
    b = next(r for r in results if r.id == "b")
    assert b.answer == 5 and not b.too_long


# --- results ---------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_one_result_per_problem_and_correctness(batch_size):
    # Replies: p0 -> 0, p1 -> 1, p2 -> 6, p3 -> 3, p4 -> 12.
    known = [0, None, 6, None, 8]
    problems = problems_of(5, answers=known)
    engine = FakeEngine(lambda p, s: boxed(p * 3 if p % 2 == 0 else p), batch_size=batch_size)
    results = solve_all(problems, engine, config(samples=3, batch_size=batch_size))
    assert len(results) == 5
    assert sorted(r.index for r in results) == list(range(5))
    for r in results:
        assert r.id == problems[r.index].id
    assert {r.index: r.answer for r in results} == {0: 0, 1: 1, 2: 6, 3: 3, 4: 12}
    assert {r.index: r.correct for r in results} == {0: True, 1: None, 2: True, 3: None, 4: False}


def test_correct_true_and_fallback_graded():
    problems = [Problem(id="a", problem="q", answer=7), Problem(id="b", problem="q", answer=0)]
    engine = FakeEngine(lambda p, s: boxed(7) if p == 0 else "nothing")
    results = by_index(solve_all(problems, engine, config(samples=2)))
    assert results[0].correct is True
    assert results[1].fallback is True and results[1].answer == 0 and results[1].correct is True


def test_results_are_yielded_lazily_as_problems_finish():
    engine = FakeEngine(lambda p, s: boxed(1), batch_size=1)
    it = solve(problems_of(50), engine, config(samples=2))
    first = next(it)
    assert first.index == 0
    # Only what was needed to decide the first problem (plus one look-ahead pull) ran.
    assert len(engine.pulled) <= 3
    it.close()


def test_traces_stream_every_finished_sample(tmp_path):
    import io

    answers = {(0, 0): 7, (0, 1): None, (1, 0): 4, (1, 1): 4}
    engine = FakeEngine(lambda p, s: boxed(answers[p, s]), batch_size=2)
    buf = io.StringIO()
    solve_all(problems_of(2), engine, config(samples=2, batch_size=2, early_stop=False), traces=TraceWriter(buf))
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 4
    assert {(d["id"], d["sample"]): d["answer"] for d in lines} == {
        ("p0", 0): 7, ("p0", 1): None, ("p1", 0): 4, ("p1", 1): 4
    }
    assert all(d["finish_reason"] == FINISH_EOS and d["text"] and d["tokens"] > 0 for d in lines)


def test_cancelled_samples_are_not_traced():
    import io

    engine = FakeEngine(lambda p, s: boxed(7), batch_size=4, steps=lambda p, s: s + 1)
    buf = io.StringIO()
    solve_all(problems_of(1), engine, config(samples=5, batch_size=4), traces=TraceWriter(buf))
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 3
    assert all(d["finish_reason"] != FINISH_CANCELLED for d in lines)


def test_on_step_is_passed_to_the_engine():
    calls = []
    engine = FakeEngine(lambda p, s: boxed(1))
    solve_all(problems_of(2), engine, config(samples=2, early_stop=False), on_step=lambda: calls.append(1))
    assert len(calls) == engine.steps == 4


# --- prompts, seeds and requests -------------------------------------------


def test_sample_seed_is_deterministic_and_distinct():
    assert sample_seed(0, "p1", 0) == sample_seed(0, "p1", 0)
    assert 0 <= sample_seed(0, "p1", 0) < 2**32
    seeds = {sample_seed(0, "p1", j) for j in range(64)}
    assert len(seeds) == 64
    assert sample_seed(0, "p1", 0) != sample_seed(0, "p2", 0)
    assert sample_seed(0, "p1", 0) != sample_seed(1, "p1", 0)
    # "1:2" vs "12" style ambiguities do not collide across the fields.
    assert sample_seed(1, "2", 3) != sample_seed(12, "", 3)


def test_requests_share_prompt_and_prefix_and_carry_config():
    engine = FakeEngine(lambda p, s: boxed(p), batch_size=3)
    cfg = config(samples=3, batch_size=3, early_stop=False, seed=5, max_tokens=77,
                 temperature=0.3, top_k=7, top_p=0.5, min_p=0.1)
    problems = problems_of(3)
    solve_all(problems, engine, cfg)
    assert len(engine.pulled) == 9
    prefixes = set()
    for i, problem in enumerate(problems):
        reqs = engine.pulled_for(i)
        assert [r.key for r in reqs] == [(i, j) for j in range(3)]
        assert len({r.prefix_key for r in reqs}) == 1
        prefixes.add(reqs[0].prefix_key)
        assert all(r.prompt == reqs[0].prompt for r in reqs)
        assert list(reqs[0].prompt) == build_prompts(engine, [problem], cfg)[0]
        assert [r.seed for r in reqs] == [sample_seed(5, problem.id, j) for j in range(3)]
        for r in reqs:
            assert r.max_tokens == 77
            assert (r.sampling.temperature, r.sampling.top_k, r.sampling.top_p, r.sampling.min_p) == (
                0.3, 7, 0.5, 0.1
            )
    assert len(prefixes) == 3  # problems never share a prefix key


def test_seeds_do_not_depend_on_batch_size():
    def seeds(batch_size):
        engine = FakeEngine(lambda p, s: boxed(s), batch_size=batch_size)
        solve_all(problems_of(3), engine, config(samples=4, batch_size=batch_size, early_stop=False))
        return {r.key: r.seed for r in engine.pulled}

    assert seeds(1) == seeds(4)


def test_build_prompts_chat_and_raw():
    engine = FakeEngine(str)
    problem = Problem(id="x", problem="  What is 1 + 1?  ")
    chat = "".join(map(chr, build_prompts(engine, [problem], config(system_prompt="SYS"))[0]))
    assert chat == "<s><system>SYS</system>\n<user>What is 1 + 1?</user>\n<assistant>"
    raw = "".join(map(chr, build_prompts(engine, [problem], config(system_prompt="SYS", raw_prompt=True))[0]))
    assert raw == raw_prompt(problem.problem, "SYS")
    no_template = FakeEngine(str, chat_template=None)
    assert build_prompts(no_template, [problem], config(system_prompt="SYS"))[0] == engine.tokenize(raw)



@pytest.mark.parametrize("n", [1, 3, 20])
def test_build_prompts_works_the_style_out_once(monkeypatch, n):
    import aimo_gguf.solving.solver as solver_module

    calls, real = [], solver_module.style_for
    monkeypatch.setattr(solver_module, "style_for", lambda engine, cfg: calls.append(cfg) or real(engine, cfg))
    problems = [Problem(id=str(i), problem=f"What is {i} + 1?") for i in range(n)]
    prompts = build_prompts(FakeEngine(str), problems, config())
    assert len(prompts) == n and len(calls) == 1
    assert ["".join(map(chr, p)).count(f"What is {i} + 1?") for i, p in enumerate(prompts)] == [1] * n

# --- memory ----------------------------------------------------------------


def live_in_flight() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module objects warns
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(o, solver._InFlight) for o in gc.get_objects())


@pytest.mark.parametrize("batch_size", [1, 8])
def test_many_problems_complete_and_keep_no_per_problem_state(batch_size):
    n = 2000
    problems = problems_of(n, answers=[i % 7 for i in range(n)])
    engine = FakeEngine(lambda p, s: boxed(p % 7 if s else p % 5), batch_size=batch_size)
    cfg = config(samples=3, batch_size=batch_size)
    baseline = live_in_flight()
    seen = set()
    peak = 0
    it = solve(problems, engine, cfg)
    for k, result in enumerate(it):
        seen.add(result.index)
        if k % 250 == 0:
            peak = max(peak, live_in_flight() - baseline)
    assert len(seen) == n
    # While running, only problems with samples in flight are alive (plus the one being issued).
    assert peak <= batch_size + 2
    del it
    assert live_in_flight() == baseline
    assert engine.max_active <= batch_size


def test_closing_the_generator_early_leaves_nothing_behind():
    baseline = live_in_flight()
    engine = FakeEngine(lambda p, s: boxed(1), batch_size=4)
    it = solve(problems_of(100), engine, config(samples=4, batch_size=4))
    for _ in range(10):
        next(it)
    it.close()
    assert live_in_flight() == baseline


# --- run() with the fake engine injected -----------------------------------


def run_with(monkeypatch, tmp_path, engine, problems, **options):
    return runner.run(problems, output=tmp_path / "sub.csv", summary=tmp_path / "summary.json",
                      traces=tmp_path / "traces.jsonl", progress=False, engine=engine, **options)


def test_run_writes_submission_in_input_order_and_consistent_summary(tmp_path, monkeypatch):
    rng = random.Random(7)
    n, samples = 30, 5
    table = [[rng.choice([1, 1, 2, None]) for _ in range(samples)] for _ in range(n)]
    problems = [Problem(id=f"id{n - i}", problem=f"q{i}", answer=1 if i % 3 else None) for i in range(n)]
    problems.append(Problem(id="toolong", problem="y" * 5000, answer=3))
    engine = FakeEngine(lambda p, s: boxed(table[p][s]) if p < n else "", batch_size=4, n_ctx_seq=1000)
    result = run_with(monkeypatch, tmp_path, engine, problems, samples=samples, batch_size=4, fallback_answer=11)
    assert not engine.closed  # the caller's engine stays the caller's

    with open(tmp_path / "sub.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "answer"]
    assert [r[0] for r in rows[1:]] == [p.id for p in problems]
    assert rows[1:] == [[i, str(a)] for i, a in result.answers]
    assert result.answers[-1] == ("toolong", 11)

    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["problems"] == s["problems_done"] == n + 1
    assert s["samples"] + s["samples_skipped"] == n * samples  # the too-long problem counts neither
    assert s["samples"] == sum(r.samples for r in result.results)
    assert s["too_long"] == 1
    assert s["fallbacks"] == sum(r.fallback for r in result.results)
    assert s["graded"] == sum(p.answer is not None for p in problems)
    assert s["correct"] == sum(bool(r.correct) for r in result.results)
    assert s["early_stopped"] == sum(r.early_stopped for r in result.results)
    assert s["finish_reasons"] == dict(sorted(engine.stats.finish_reasons.items()))
    assert s["samples_per_problem"] == samples and s["batch_size"] == 4
    assert s["interrupted"] is False

    traces = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert len(traces) == s["samples"]

    # Small runs keep their results, in input order.
    assert [r.index for r in result.results] == list(range(n + 1))
    for r in result.results[:n]:
        expected = majority(table[r.index])
        assert r.answer == (11 if expected is None else expected)


def test_run_large_keeps_no_results(tmp_path, monkeypatch):
    engine = FakeEngine(lambda p, s: boxed(p % 100), batch_size=2)
    problems = problems_of(runner.KEEP_RESULTS + 1)
    result = run_with(monkeypatch, tmp_path, engine, problems, samples=1, batch_size=2)
    assert result.results == []
    assert [a for _, a in result.answers] == [i % 100 for i in range(len(problems))]
    assert result.summary.problems_done == len(problems)


def interrupting_reply(at_problem: int):
    def reply(p, s):
        if p == at_problem:
            raise KeyboardInterrupt
        return boxed(p + 1)

    return reply


def test_run_interrupted_writes_fallback_for_the_rest(tmp_path, monkeypatch):
    engine = FakeEngine(interrupting_reply(3), batch_size=1)
    result = run_with(monkeypatch, tmp_path, engine, problems_of(6), samples=1, batch_size=1, fallback_answer=99)
    s = result.summary
    assert s.interrupted is True
    answers = dict(result.answers)
    assert [answers[f"p{i}"] for i in range(2)] == [1, 2]
    assert [answers[f"p{i}"] for i in range(3, 6)] == [99, 99, 99]
    assert s.problems_done + s.fallbacks - sum(r.fallback for r in result.results) == 6
    rows = (tmp_path / "sub.csv").read_text().splitlines()
    assert rows[0] == "id,answer" and len(rows) == 7
    assert (tmp_path / "summary.json").exists()


def test_run_interrupted_keeps_every_finished_answer(tmp_path, monkeypatch):
    # p2's only sample finished before p3's sample started; the interrupt hits during p3.
    engine = FakeEngine(interrupting_reply(3), batch_size=1)
    result = run_with(monkeypatch, tmp_path, engine, problems_of(6), samples=1, batch_size=1, fallback_answer=99)
    assert dict(result.answers)["p2"] == 3
    assert result.summary.problems_done == 3


def test_result_is_yielded_when_its_last_sample_returns():
    engine = FakeEngine(lambda p, s: boxed(1), batch_size=1)
    it = solve(problems_of(3), engine, config(samples=1))
    first = next(it)
    assert first.index == 0
    # Problem 0's only sample came back at step 1; nothing else should have to run first.
    assert engine.steps == 1
    it.close()
