"""The README's promises for ``run``, each a property over many inputs: regression tests of issue 20.

- Bad input is one ``Error:`` line and exit 2, before any model loads (a load
  outside the model tier fails the test), and a bad ``AIMO_GGUF_*`` value names
  its variable.
- Nothing that is not a journal is ever changed; no output replaces another
  file; a path ending in '/' names a folder.
- A signal (INT, TERM, HUP) never loses what finished.
- A failure on one problem never loses the others.
"""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error

from aimo_gguf.cli import cli

PROBLEMS = "id,problem\na,What is 1 + 1?\nb,What is 2 + 2?\n"


@pytest.fixture
def files(tmp_path):
    problems = tmp_path / "problems.csv"
    problems.write_text(PROBLEMS)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    return problems, model


# --- ids: the submission repeats them verbatim ---------------------------------------------------------------


@pytest.mark.parametrize(("cell", "fragment"), [
    ('"\\ud800"', "a character UTF-8 cannot encode"),  # a lone surrogate: no UTF-8 file can hold it
    ('"a\\udfffb"', "a character UTF-8 cannot encode"),
    ('"\\ud83d"', "a character UTF-8 cannot encode"),
    ("true", "of type bool"),  # was written as 1
    ("false", "of type bool"),  # was written as 0
])
def test_an_id_the_submission_cannot_repeat_is_one_line_naming_its_line(runner, files, tmp_path, cell, fragment):
    _, model = files
    problems = tmp_path / "p.jsonl"
    problems.write_text(f'{{"id": "ok", "problem": "What is 1 + 1?"}}\n{{"id": {cell}, "problem": "2 + 2?"}}\n')
    out = tmp_path / "sub.csv"
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(out)])
    assert_one_line_error(result, str(problems), "line 2", fragment)
    assert not out.exists()
