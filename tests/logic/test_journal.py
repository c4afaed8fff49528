"""The run journal behind --resume: round trips, settings checks, torn lines, locks, foreign files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aimo_gguf.config import RunConfig
from aimo_gguf.errors import InputError
from aimo_gguf.journal import Journal, fingerprint
from aimo_gguf.solver import ProblemResult


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
         "from aimo_gguf.journal import Journal, fingerprint; "
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
