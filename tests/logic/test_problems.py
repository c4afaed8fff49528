"""Tier-1 tests of reading problem sets and writing submissions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from aimo_gguf.errors import InputError, OutputError
from aimo_gguf.pipeline.problems import (
    GRADED_PROBLEMS,
    SAMPLE_PROBLEMS,
    Problem,
    read_problems,
    sample_problems_path,
    write_json_atomic,
    write_submission,
)

EXPECTED = [
    Problem(id="007", problem="What is 7 + 5?", answer=12),
    Problem(id="p2", problem="Line one,\nline two with \"quotes\".", answer=None),
    Problem(id="p3", problem="What is $2^5$?", answer=32),
]


# Every answer in the bundled sample set, as computed independently.
SAMPLE_ANSWERS = {
    "easy-add": 7 + 5,
    "easy-times": 3 * 4,
    "easy-minus": 100 - 1,
    "easy-power": 2**5,
    "easy-product": 9 * 8,
    "easy-sum": 15 + 27,
    "divisors-360": sum(1 for d in range(1, 361) if 360 % d == 0),
    "pow2-mod7": pow(2, 100, 7),
    "sum-1-to-100": sum(range(1, 101)),
    "choose-3-of-10": 10 * 9 * 8 // 6,
    "last-two-digits-3-2024": int(str(3**2024)[-2:]),
    "multiples-3-or-5": sum(1 for n in range(1, 1001) if n % 3 == 0 or n % 5 == 0),
}


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    return _write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _expected_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [p.id for p in EXPECTED],
            "problem": [p.problem for p in EXPECTED],
            "answer": ["12", "", "32"],
            "extra": ["x", "y", "z"],
        }
    )


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "problems.csv"
    _expected_frame().to_csv(path, index=False)
    assert read_problems(path) == EXPECTED


def test_csv_round_trip_str_path(tmp_path: Path) -> None:
    path = tmp_path / "problems.CSV"  # extension matching ignores case
    _expected_frame().to_csv(path, index=False)
    assert read_problems(str(path)) == EXPECTED


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"problems{suffix}"
    frame = _expected_frame()
    frame["answer"] = pd.array([12, None, 32], dtype="Int64")
    frame.to_parquet(path, index=False)
    assert read_problems(path) == EXPECTED


def test_parquet_float_answers_and_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "problems.parquet"
    pd.DataFrame({"id": [1, 2], "problem": ["a", "b"], "answer": [42.0, float("nan")]}).to_parquet(path)
    assert read_problems(path) == [Problem("1", "a", 42), Problem("2", "b", None)]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_jsonl_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"problems{suffix}"
    records = [{"id": p.id, "problem": p.problem, "answer": p.answer, "extra": 1} for p in EXPECTED]
    # A blank line in the middle and at the end is tolerated.
    text = json.dumps(records[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in records[1:]) + "\n"
    _write_text(path, text)
    assert read_problems(path) == EXPECTED


def test_jsonl_missing_answer_key_means_unknown(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "problem": "x"}, {"id": "b", "problem": "y", "answer": 3}])
    assert read_problems(path) == [Problem("a", "x", None), Problem("b", "y", 3)]


def test_preserves_input_order(tmp_path: Path) -> None:
    ids = ["z", "a", "m", "10", "2"]
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": i, "problem": f"q{i}"} for i in ids])
    assert [p.id for p in read_problems(path)] == ids


def test_csv_ids_stay_strings(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "p.csv", "id,problem\n007,a\n1e3,b\nNA,c\n0,d\n")
    problems = read_problems(path)
    assert [p.id for p in problems] == ["007", "1e3", "NA", "0"]
    assert all(type(p.id) is str for p in problems)


def test_answer_column_optional(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "p.csv", "id,problem\na,What?\n")
    assert read_problems(path) == [Problem("a", "What?", None)]


def test_csv_answer_forms(tmp_path: Path) -> None:
    path = _write_text(
        tmp_path / "p.csv",
        'id,problem,answer\na,q,42\nb,q,42.0\nc,q, 7 \nd,q,\ne,q,NaN\nf,q,-3\ng,q,1e3\n',
    )
    assert [p.answer for p in read_problems(path)] == [42, 42, 7, None, None, -3, 1000]


def test_jsonl_answer_forms(tmp_path: Path) -> None:
    records = [
        {"id": "a", "problem": "q", "answer": 42.0},
        {"id": "b", "problem": "q", "answer": "42"},
        {"id": "c", "problem": "q", "answer": None},
        {"id": "d", "problem": "q", "answer": ""},
        {"id": 5, "problem": "q", "answer": 0},
    ]
    problems = read_problems(_write_jsonl(tmp_path / "p.jsonl", records))
    assert [(p.id, p.answer) for p in problems] == [("a", 42), ("b", 42), ("c", None), ("d", None), ("5", 0)]


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffid,problem\na,q\n".encode())
    assert read_problems(path) == [Problem("a", "q", None)]


def test_sample_set_loads_with_answers() -> None:
    problems = read_problems(None)
    assert {p.id: p.answer for p in problems} == SAMPLE_ANSWERS
    assert [p.id for p in problems] == list(SAMPLE_ANSWERS)
    assert all(p.problem.strip() for p in problems)
    assert all(0 <= p.answer <= 99999 for p in problems if p.answer is not None)


def test_sample_name_and_path() -> None:
    path = sample_problems_path()
    assert path.name == "sample_problems.jsonl"
    assert path.is_file()
    assert read_problems(SAMPLE_PROBLEMS) == read_problems(path) == read_problems(None)


def _csv(text: str) -> tuple[str, str]:
    return ("p.csv", text)


def _jsonl(text: str) -> tuple[str, str]:
    return ("p.jsonl", text)


ERROR_CASES = {
    "unsupported-extension": (("p.txt", "id,problem\na,q\n"), ["p.txt", ".csv", ".parquet", ".jsonl"]),
    "no-extension": (("problems", "id,problem\na,q\n"), ["no extension", ".csv"]),
    "empty-csv": (_csv(""), ["p.csv", "is empty"]),
    "header-only-csv": (_csv("id,problem\n"), ["p.csv", "no problems"]),
    "empty-jsonl": (_jsonl("\n\n"), ["p.jsonl", "no problems"]),
    "malformed-csv": (_csv('id,problem\na,"unterminated\n'), ["cannot read problems file", "p.csv"]),
    "csv-too-many-fields": (_csv("id,problem\na,q\nb,q,extra,more\n"), ["cannot read problems file", "p.csv"]),
    "bad-jsonl-line": (_jsonl('{"id": "a", "problem": "q"}\n{"id": "b", "problem": \n'), ["p.jsonl", "line 2", "not valid JSON"]),
    "jsonl-not-object": (_jsonl('{"id": "a", "problem": "q"}\n\n[1, 2]\n'), ["line 3", "array", "not an object"]),
    "missing-column": (_csv("id,question\na,q\n"), ["p.csv is missing column", "missing column 'problem'", "'id', 'question'"]),
    "missing-both-columns": (_csv("name,question\na,q\n"), ["missing columns 'id', 'problem'", "'name', 'question'"]),
    "jsonl-missing-field": (_jsonl('{"id": "a", "problem": "q"}\n{"id": "b", "text": "q"}\n'), ["line 2", "missing field 'problem'", "'id', 'text'"]),
    "empty-id": (_csv("id,problem\na,q\n,q2\n"), ["p.csv", "row 2", "empty id"]),
    "blank-id": (_csv("id,problem\n   ,q\n"), ["row 1", "empty id"]),
    "jsonl-null-id": (_jsonl('{"id": null, "problem": "q"}\n'), ["line 1", "empty id"]),
    "jsonl-missing-id-value": (_jsonl('{"id": "", "problem": "q"}\n'), ["line 1", "empty id"]),
    "duplicate-id": (_csv("id,problem\na,q\nb,q\na,q\nb,q\n"), ["p.csv", "duplicate id 'a'", "row 1 and row 3"]),
    "empty-problem": (_csv('id,problem\na,q\nb,""\n'), ["p.csv", "'b'", "row 2", "empty problem text"]),
    "blank-problem": (_jsonl('{"id": "x9", "problem": "  \\n "}\n'), ["'x9'", "empty problem text"]),
    "non-text-problem": (_jsonl('{"id": "x9", "problem": 5}\n'), ["'x9'", "must be text"]),
    "non-integer-answer": (_csv("id,problem,answer\na,q,1\nb,q,forty\n"), ["p.csv", "'forty'", "'b'", "not an integer"]),
    "fractional-answer": (_csv("id,problem,answer\nc7,q,4.5\n"), ["'4.5'", "'c7'", "not an integer"]),
    "jsonl-fractional-answer": (_jsonl('{"id": "c8", "problem": "q", "answer": 2.5}\n'), ["'2.5'", "'c8'", "not an integer"]),
    "jsonl-bool-answer": (_jsonl('{"id": "c9", "problem": "q", "answer": true}\n'), ["'True'", "'c9'", "not an integer"]),
    "jsonl-list-answer": (_jsonl('{"id": "d1", "problem": "q", "answer": [1]}\n'), ["'d1'", "not an integer"]),
    "jsonl-infinite-answer": (_jsonl('{"id": "d2", "problem": "q", "answer": "inf"}\n'), ["'d2'", "not an integer"]),
    "not-utf8-csv": (("p.csv", b"id,problem\na,\xff\xfe caf\xe9\n"), ["p.csv", "not UTF-8"]),
    "not-utf8-jsonl": (("p.jsonl", b'{"id": "a", "problem": "\xff"}\n'), ["p.jsonl", "not UTF-8"]),
    "garbage-parquet": (("p.parquet", b"this is not parquet at all"), ["cannot read problems file", "p.parquet"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_bad_input_raises_input_error(tmp_path: Path, case: str) -> None:
    (name, content), fragments = ERROR_CASES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _write_text(path, content)
    with pytest.raises(InputError) as info:
        read_problems(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError, match=r"not found: .*nope\.csv"):
        read_problems(path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        read_problems(folder)


def test_parquet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["a"], "text": ["q"]}).to_parquet(path)
    with pytest.raises(InputError, match=r"missing column 'problem' \(columns found: 'id', 'text'\)"):
        read_problems(path)


def test_parquet_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": pd.Series([], dtype=str), "problem": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(InputError, match="contains no problems"):
        read_problems(path)


def test_parquet_null_problem(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"id": ["a", "b"], "problem": ["q", None]}).to_parquet(path)
    with pytest.raises(InputError, match=r"problem 'b' \(row 2\) has empty problem text"):
        read_problems(path)


def test_write_submission_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "out" / "nested" / "submission.csv"
    write_submission(path, iter([("007", 12), ("b,c", 0), ("p3", 99999)]))
    assert path.read_bytes() == b'id,answer\n007,12\n"b,c",0\np3,99999\n'


def test_write_submission_empty(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, [])
    assert path.read_text() == "id,answer\n"


def test_write_submission_round_trips_through_pandas(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, [("007", 5), ("x", 42)])
    frame = pd.read_csv(path, dtype={"id": str})
    assert frame["id"].tolist() == ["007", "x"]
    assert frame["answer"].tolist() == [5, 42]


def test_write_submission_rejects_float_answer_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_submission(path, [("a", 1), ("b", 2.5)])  # type: ignore[list-item]
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_atomic_write_overwrites_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    path.write_text("stale content that is longer than the new one\n" * 10)
    write_submission(path, [("a", 1)])
    assert path.read_text() == "id,answer\na,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "run.json"
    path.parent.mkdir()
    path.write_text("{}\n")
    write_json_atomic(path, {"z": 1, "a": [1, 2], "name": "café"})
    assert path.read_text(encoding="utf-8") == '{\n  "z": 1,\n  "a": [\n    1,\n    2\n  ],\n  "name": "café"\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]


def test_write_json_atomic_unserialisable_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_write_into_unwritable_location_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_submission(blocker / "submission.csv", [("a", 1)])


def test_the_graded_set_is_what_its_script_makes_and_every_answer_is_right():
    import importlib.util
    import math
    import re

    spec = importlib.util.spec_from_file_location("make_graded_set", Path(__file__).parents[2] / "scripts" /
                                                  "make_graded_set.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = sample_problems_path(GRADED_PROBLEMS)
    assert path.read_text(encoding="utf-8") == script.render()
    problems = read_problems(GRADED_PROBLEMS)
    assert len(problems) >= 300 and len({p.id for p in problems}) == len(problems)
    assert {p.id.split("-")[0] for p in problems} == {"L1", "L2", "L3", "L4", "L5"}
    # Recompute every answer from the numbers in its text.
    for p in problems:
        numbers = [int(n) for n in re.findall(r"\d+", p.problem)]
        if "gets" in p.problem:
            assert p.answer == numbers[0] + numbers[1]
        elif "remainder when" in p.problem:
            assert p.answer == numbers[0] % numbers[1]
        elif "sum of the integers from 1 to" in p.problem:
            assert p.answer == numbers[-1] * (numbers[-1] + 1) // 2
        elif "be chosen from a class" in p.problem:
            assert p.answer == math.comb(numbers[1], numbers[0])
        elif "sum of the digits" in p.problem:
            assert p.answer == sum(map(int, str(numbers[0])))
        elif "gives away" in p.problem:
            assert p.answer == numbers[0] - numbers[1]
        elif "boxes with" in p.problem:
            assert p.answer == numbers[0] * numbers[1]
        elif "shared equally" in p.problem:
            assert p.answer * numbers[1] == numbers[0]
        elif "packs of" in p.problem:
            assert p.answer == numbers[0] * numbers[1] + numbers[2]
        elif "bags of" in p.problem:
            assert p.answer == numbers[0] * numbers[1] - numbers[2]
        elif "are multiples of" in p.problem:
            assert p.answer == numbers[0] // numbers[1]
        elif "positive divisors" in p.problem:
            assert p.answer == sum(numbers[0] % d == 0 for d in range(1, numbers[0] + 1))
        elif "arithmetic sequence" in p.problem:
            a, b, _, k = numbers
            assert p.answer == a + (k - 1) * (b - a)
        else:
            raise AssertionError(f"a kind of problem this test does not check: {p.problem}")
        assert 0 <= p.answer <= 99999
