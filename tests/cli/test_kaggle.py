"""The AIMO3 adapter on the fake engine and a fake clock: the gateway's calls (every column of a row,
one Series each), the budget over the problems to come and beyond, failures, tool counters."""

from __future__ import annotations

import re

import pytest
from fakes import Clock, FakeEngine, TimedEngine, boxed

from aimo_gguf.errors import InputError
from aimo_gguf.kaggle import KaggleSolver, _scalar


@pytest.fixture
def clock() -> Clock:
    return Clock()


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
    s = KaggleSolver(engine=engine, total_seconds=110, safety_seconds=10, n_problems=4, samples=2, batch_size=2,
                     clock=clock)
    shares = []
    for i in range(4):
        before = s.seconds_left() / s.problems_left
        frame = s.predict(f"id{i}", f"problem {i}")
        shares.append(before)
        assert frame["answer"].to_list() == [12]
    assert shares[0] == pytest.approx(25.0) and shares[1] > 25.0  # unused time flows to the later problems
    assert s.stats.answered == 4 and s.stats.fallbacks == 0

def gateway_rows(csv_text: str, tmp_path):
    """What AIMO3's local gateway does: read the CSV, hand predict every column of a row, one Series each."""
    pl = pytest.importorskip("polars")
    path = tmp_path / "reference.csv"
    path.write_text(csv_text)
    for row in pl.read_csv(path).iter_slices(n_rows=1):
        yield [row[name] for name in row.columns]

def test_predict_takes_the_answer_column_of_reference_csv_and_counts_local_accuracy(tmp_path):
    engine = FakeEngine(lambda p, s: boxed(12), batch_size=2)
    solver = KaggleSolver(engine=engine, total_seconds=600, safety_seconds=10, n_problems=3, samples=2,
                          batch_size=2)
    csv_text = "id,problem,answer\na1,What is 3 times 4?,12\na2,What is 2 times 6?,12\na3,What is 1 plus 1?,2\n"
    frames = [solver.predict(*columns) for columns in gateway_rows(csv_text, tmp_path)]
    assert [f["answer"].to_list() for f in frames] == [[12], [12], [12]]
    assert solver.stats.failures == 0
    assert (solver.stats.graded, solver.stats.correct, solver.stats.accuracy) == (3, 2, 2 / 3)

def test_predict_without_an_answer_column_grades_nothing(tmp_path):
    solver = KaggleSolver(engine=FakeEngine(lambda p, s: boxed(5)), total_seconds=600, safety_seconds=10,
                          samples=1, batch_size=1)
    for columns in gateway_rows("id,problem\nb1,Q\n", tmp_path):
        assert solver.predict(*columns)["answer"].to_list() == [5]
    assert solver.stats.graded == 0 and solver.stats.accuracy is None

@pytest.mark.parametrize(("total", "safety"), [(60, 60), (60, 90), (0, 0), (float("inf"), 10)])
def test_a_safety_margin_that_leaves_no_time_is_refused(total, safety):
    with pytest.raises(InputError, match="total_seconds"):
        KaggleSolver(engine=FakeEngine(lambda p, s: ""), total_seconds=total, safety_seconds=safety)

def test_calls_beyond_the_expected_count_still_get_time_each(clock, capsys):
    engine = TimedEngine(lambda p, s: boxed(3), clock, step=1.0, batch_size=1)
    solver = KaggleSolver(engine=engine, total_seconds=100, safety_seconds=0, n_problems=2, samples=1,
                          batch_size=1, clock=clock)
    shares = []
    for i in range(6):
        start = solver.seconds_left()
        solver.predict(f"x{i}", "Q")
        shares.append(start)
    assert solver.stats.extra == 4 and solver.stats.fallbacks == 0  # every extra call got time to answer
    assert shares[-1] > 0
    assert capsys.readouterr().err.count("more problems than the 2 planned for") == 1

def test_the_adapter_reports_its_tool_calls(tmp_path):
    code = "Let me compute.\n```python\nprint(6 * 7)\n```\nSo the answer is \\boxed{42}."
    engine = FakeEngine(lambda p, s: code, batch_size=2)
    solver = KaggleSolver(engine=engine, total_seconds=600, safety_seconds=10, n_problems=1, samples=2,
                          batch_size=2, tir=True)
    assert solver.predict("t1", "What is 6 times 7?")["answer"].to_list() == [42]
    tools = solver.stats.tools
    assert tools["tool_calls"] == 2 and tools["tool_ok"] == 2 and tools["samples_with_tools"] == 2


def _series(name, value):
    pl = pytest.importorskip("polars")
    return pl.Series(name, [value])


def _pandas(name, value):
    import pandas as pd

    return pd.Series([value], name=name)


@pytest.mark.parametrize("make", [lambda n, v: v, _series, _pandas], ids=["plain", "polars", "pandas"])
@pytest.mark.parametrize("problem", [None, "", "   ", "\n\t", float("nan")])
def test_a_null_or_blank_problem_gets_the_fallback_at_once(make, problem, capsys):
    engine = FakeEngine(lambda p, s: boxed(12))
    solver = KaggleSolver(engine=engine, total_seconds=600, safety_seconds=10, samples=2, fallback_answer=3)
    if make is _series and isinstance(problem, float):
        problem = None  # polars has null, not NaN, in a string column
    frame = solver.predict(make("id", "e1"), make("problem", problem))
    assert frame.to_dicts() == [{"id": "e1", "answer": 3}]
    assert engine.pulled == []  # the model never saw it
    assert (solver.stats.empty, solver.stats.failures, solver.stats.problems) == (1, 0, 1)
    assert "e1: the problem is" in capsys.readouterr().err


@pytest.mark.parametrize("answer", [float("inf"), float("-inf"), float("nan"), 1e400, "twelve", "", None, [1, 2],
                                    {"a": 1}])
def test_an_answer_cell_that_is_no_integer_is_not_graded_and_never_raises(answer):
    solver = KaggleSolver(engine=FakeEngine(lambda p, s: boxed(12)), total_seconds=600, safety_seconds=10,
                          samples=1)
    frame = solver.predict("g1", "What is 7 + 5?", answer)
    assert frame["answer"].to_list() == [12]
    frame = solver.predict("g2", "What is 7 + 5?", answer=answer)
    assert frame["answer"].to_list() == [12]
    assert (solver.stats.graded, solver.stats.failures) == (0, 0)


@pytest.mark.parametrize("answer", [12, 12.0, "12", 5, "5"])
def test_an_integer_answer_cell_is_graded(answer):
    solver = KaggleSolver(engine=FakeEngine(lambda p, s: boxed(12)), total_seconds=600, safety_seconds=10,
                          samples=1)
    solver.predict("g1", "What is 7 + 5?", answer)
    assert (solver.stats.graded, solver.stats.correct) == (1, int(float(answer)) == 12)


NOW = 1_700_000_000.0  # a time.time() value (2023); the fake wall clock reads it


@pytest.mark.parametrize(("started_at", "message"), [
    (NOW + 5, "in the future"), (NOW + 86400, "in the future"),
    (12_345.6, "not time.monotonic()"), (0.0, "not time.monotonic()"), (NOW - 3600, "more than total_seconds"),
    (float("nan"), "must be a time.time() value"), (float("inf"), "must be a time.time() value"),
    ("yesterday", "must be a time.time() value"), (True, "must be a time.time() value"),
])
def test_a_started_at_in_the_future_or_from_another_clock_is_refused(started_at, message):
    with pytest.raises(InputError, match=re.escape(message)):
        KaggleSolver(engine=FakeEngine(lambda p, s: ""), total_seconds=1800, safety_seconds=60,
                     started_at=started_at, wall_clock=lambda: NOW)


@pytest.mark.parametrize("ago", [0.0, 0.5, 60.0, 1799.0, -0.5])
def test_a_started_at_in_the_budget_counts_the_time_already_spent(clock, ago):
    solver = KaggleSolver(engine=FakeEngine(lambda p, s: ""), total_seconds=1800, safety_seconds=60,
                          started_at=NOW - ago, wall_clock=lambda: NOW, clock=clock)
    assert solver.seconds_left() == pytest.approx(1800 - 60 - max(0.0, ago))


@pytest.mark.parametrize("ctx", [8, 16, 40])
def test_a_prompt_longer_than_the_context_is_counted_as_too_long(ctx):
    engine = FakeEngine(lambda p, s: boxed(12), n_ctx_seq=ctx)
    solver = KaggleSolver(engine=engine, total_seconds=600, safety_seconds=10, samples=2, fallback_answer=1)
    frame = solver.predict("long", "word " * 200)
    assert frame["answer"].to_list() == [1]
    assert (solver.stats.too_long, solver.stats.fallbacks, solver.stats.failures) == (1, 1, 0)


@pytest.mark.parametrize("bad", [0, -1])
def test_step_tokens_must_be_positive(bad):
    with pytest.raises(InputError, match="step_tokens"):
        KaggleSolver(engine=FakeEngine(lambda p, s: ""), total_seconds=60, safety_seconds=1, step_tokens=bad)
