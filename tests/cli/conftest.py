"""Fixtures the CLI tests share."""
from __future__ import annotations

import pytest
from helpers import PROBLEMS


@pytest.fixture
def files(tmp_path):
    """Two problems and a file that passes for a GGUF until it is loaded (the checks under test come first)."""
    problems = tmp_path / "problems.csv"
    problems.write_text(PROBLEMS)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    return problems, model
