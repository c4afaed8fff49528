"""aimo-gguf compare: next-token agreement and KL divergence of two models, and their accuracy."""

from __future__ import annotations

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.compare import compare
from aimo_gguf.errors import ModelError
from aimo_gguf.gguf.files import default_model_path

SRC = str(default_model_path())


def test_bad_text_files_are_one_line(runner, tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("  \n")
    for path, message in [(tmp_path / "none.txt", "no such file"), (empty, "is empty")]:
        result = runner.invoke(cli, ["compare", SRC, SRC, "--text", str(path)])
        assert result.exit_code == 2 and message in result.stderr
    with pytest.raises(ModelError, match="Model file not found"):
        compare(SRC, tmp_path / "missing.gguf", progress=False)
