"""The run journal behind --resume: round trips, settings checks, torn lines, locks, foreign files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from aimo_gguf.config import RunConfig
from aimo_gguf.errors import InputError
from aimo_gguf.pipeline.journal import Journal, fingerprint
from aimo_gguf.solving.solver import ProblemResult


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
    for changed in (dict(prompt_style="think"), dict(reasoning_effort="low"), dict(think_reserve=64)):
        assert fingerprint(RunConfig(**changed), model) != plain  # the prompt decides answers too


def test_the_fingerprint_counts_every_part_of_a_split_model(tmp_path):
    first, second = tmp_path / "m-00001-of-00002.gguf", tmp_path / "m-00002-of-00002.gguf"
    first.write_bytes(b"GGUF" + bytes(10))
    second.write_bytes(b"GGUF" + bytes(20))
    assert fingerprint(RunConfig(), first)["model_bytes"] == 38


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



# --- what --resume may change, and who may write ------------------------------------------------------


@pytest.mark.parametrize("content", [
    b"id,problem\na,What is 1 + 1?\nb,What is 2 + 2?",  # a CSV without its last newline
    b"just one line, no newline",
    b'{"journal": 1, "settings": [1, 2]}\n{"id": "a", "ans',  # a header of the wrong shape
    b'["journal", 1]\n',
])
def test_resume_on_a_file_that_is_not_a_journal_changes_nothing(tmp_path, content):
    path = tmp_path / "other.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="is not an aimo-gguf journal"):
        Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=True)
    assert path.read_bytes() == content


def test_a_run_that_fails_to_start_leaves_no_empty_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=False).close()
    assert not path.exists()


def test_a_second_writer_is_refused_and_told_who_holds_the_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from aimo_gguf.config import RunConfig; "
         "from aimo_gguf.pipeline.journal import Journal, fingerprint; "
         f"j = Journal({str(path)!r}, fingerprint(RunConfig(), 'm.gguf'), resume=False); "
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=rf"in use by process {holder.pid}"):
            Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=False)
    finally:
        holder.kill()
        holder.wait()
    with Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=False) as j:  # free again once it is gone
        j.append(_result(0, 1))
    assert len(path.read_text().splitlines()) == 2


def test_a_second_journal_in_the_same_process_is_refused_too(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=False):
        with pytest.raises(InputError, match="in use by another run"):
            Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=False)


def test_devices_are_not_files_of_the_run_to_protect_and_not_written_into_either():
    from aimo_gguf.outputs import check_distinct, check_writable

    check_distinct({"--traces": "/dev/null", "--journal": "/dev/null"}, outputs={"--traces", "--journal"})
    before = set(os.listdir("/dev"))
    with pytest.raises(InputError, match="character device, not a regular file"):
        check_writable("/dev/null", "traces", replace=False)
    assert set(os.listdir("/dev")) == before  # refused before any probe beside it in /dev


# --- issue 20: a file that is not a journal is never changed, with or without --resume ------------------------

NOT_JOURNALS = [
    b"notes I keep\n",
    b"id,problem\na,What is 1 + 1?\n",
    b'{"id": "a", "answer": 1}\n',  # an entry without a header
    b'{"journal": "1", "settings": {}}\n',  # a header of the wrong shape
    b'{"journal": 1, "settings": [1, 2]}\n{"id": "a"}\n',
    b'{"journal": 1}x\n',
    b"\x00\x01\x02 binary",
    b"just one line, no newline",
]


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("content", NOT_JOURNALS)
def test_a_file_that_is_not_a_journal_is_never_changed(tmp_path, content, resume):
    """Before, without --resume such a file was emptied at the run's first problem."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="is not an aimo-gguf journal"):
        with Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=resume) as j:
            j.append(_result(0, 1))
    assert path.read_bytes() == content


@pytest.mark.parametrize("content", [
    b"",  # an empty file holds nothing to lose
    b'{"journal": 1, "sett',  # a header cut short by a kill
    b'{"journal": 2, "settings": {"samples": 4}}\n{"id": "a", "answer": 1}\n',  # a journal of another version
])
def test_without_resume_only_an_empty_file_or_a_journal_is_replaced(tmp_path, content):
    path = tmp_path / "j.jsonl"
    path.write_bytes(content)
    settings = fingerprint(RunConfig(), "m.gguf")
    with Journal(path, settings, resume=False) as j:
        j.append(_result(0, 1))
    header, entry = path.read_text().splitlines()
    assert json.loads(header) == {"journal": 1, "settings": settings} and json.loads(entry)["answer"] == 1


def test_a_journal_of_another_format_names_its_version(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"journal": 2, "settings": {}}\n{"id": "a", "answer": 1}\n')
    with pytest.raises(InputError, match=r"journal of format 2, and this aimo-gguf reads format 1: run without "
                                         r"--resume"):
        Journal(path, fingerprint(RunConfig(), "m.gguf"), resume=True)


# --- issue 20: --resume takes only entries aimo-gguf writes ----------------------------------------------------

GOOD = {"id": "p0", "answer": 7, "votes": 1, "valid": 1, "samples": 1, "fallback": False, "too_long": False,
        "early_stopped": False, "majority": True, "correct": None}


@pytest.mark.parametrize(("change", "fault"), [
    ({"answer": "abc"}, "its answer 'abc' is not an integer"),
    ({"answer": 3.7}, "its answer 3.7 is not an integer"),
    ({"answer": 7.0}, "its answer 7.0 is not an integer"),
    ({"answer": True}, "its answer True is not an integer"),
    ({"answer": None}, "its answer None is not an integer"),
    ({"answer": [7]}, "its answer [7] is not an integer"),
    ({"answer": 1000000000000}, "its answer 1000000000000 is outside the answer range 0..99999"),
    ({"answer": -4}, "its answer -4 is outside the answer range 0..99999"),
    ({"answer": None, "id": "x"}, "its answer None"),
    ({"id": 5}, "its id 5 is not text"),
    ({"id": None}, "its id None is not text"),
    ({"votes": -1}, "its votes -1 is negative"),
    ({"samples": "2"}, "its samples '2' is not an integer"),
    ({"fallback": 0}, "its fallback 0 is not true or false"),
    ({"correct": "yes"}, "its correct 'yes' is not true or false or null"),
    ({"seconds": "1"}, "its seconds '1' is not a number"),
    ({"seconds": -1.0}, "its seconds -1.0 is negative"),
    ({"budget": float("inf")}, "its budget inf is not a number or null"),
    ({"mode_answers": [1]}, "its mode_answers [1] is not an object of answers or null"),
    ({"at_k": [0.5]}, "its at_k [0.5] is not an object of lists of numbers or null"),
    ({"at_k": {"pass": ["x"]}}, "its at_k {'pass': ['x']} is not an object of lists of numbers or null"),
    ({"at_k": {"pass": 0.5}}, "its at_k {'pass': 0.5} is not an object of lists of numbers or null"),
    ({"mode_answers": {"majority": "7"}}, "its mode_answers {'majority': '7'} is not an object of answers or null"),
    ({"mode_answers": {"majority": 100000}}, "its answer 100000 is outside the answer range"),
] + [({name: None} if name != "correct" else {"correct": 1}, f"its {name} ")
     for name in ("votes", "valid", "samples", "fallback", "too_long", "early_stopped", "majority", "correct")])
def test_resume_refuses_an_entry_aimo_gguf_does_not_write_naming_its_line(tmp_path, change, fault):
    """Before, a missing field or an answer of 'abc' was a TypeError, and 10**12 or -4 went into the submission.
    A bad entry is refused (not solved again: that would hide an edited or foreign journal)."""
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    good = json.dumps(GOOD)
    bad = json.dumps({**GOOD, "id": "p1", **change})
    path.write_text(json.dumps({"journal": 1, "settings": settings}) + f"\n{good}\n{bad}\n{good}\n")
    with pytest.raises(InputError, match=rf"j.jsonl, line 3: {re.escape(fault)}.*fix or delete that line") as e:
        Journal(path, settings, resume=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("missing", ["id", "answer", "votes", "valid", "samples", "fallback", "too_long",
                                     "early_stopped", "majority", "correct"])
def test_resume_refuses_an_entry_missing_a_field(tmp_path, missing):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    entry = {k: v for k, v in GOOD.items() if k != missing}
    path.write_text(json.dumps({"journal": 1, "settings": settings}) + "\n" + json.dumps(entry) + "\n")
    with pytest.raises(InputError, match=rf"line 2: its field '{missing}' is missing"):
        Journal(path, settings, resume=True)


@pytest.mark.parametrize("line", ["[1, 2]", "5", '"text"', "null"])
def test_resume_refuses_a_line_that_is_no_object(tmp_path, line):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(), "m.gguf")
    path.write_text(json.dumps({"journal": 1, "settings": settings}) + f"\n{line}\n")
    with pytest.raises(InputError, match="line 2: a JSON "):
        Journal(path, settings, resume=True)


def test_resume_takes_entries_of_a_journal_older_than_a_field_and_in_a_range_of_its_own(tmp_path):
    path = tmp_path / "j.jsonl"
    settings = fingerprint(RunConfig(min_answer=-10, max_answer=10**12, fallback_answer=-10), "m.gguf")
    old = {**GOOD, "answer": -4}  # no seconds, tokens, mode_answers...: written before they existed
    big = {**GOOD, "id": "p1", "answer": 10**12, "seconds": 3, "mode_answers": {"majority": None}}
    path.write_text(json.dumps({"journal": 1, "settings": settings}) + f"\n{json.dumps(old)}\n{json.dumps(big)}\n")
    with Journal(path, settings, resume=True) as j:
        assert {k: v["answer"] for k, v in j.entries.items()} == {"p0": -4, "p1": 10**12}
