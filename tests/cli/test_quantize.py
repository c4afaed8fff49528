"""aimo-gguf quantize: llama_model_quantize through the binding, written atomically."""

from __future__ import annotations

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.gguf.files import default_model_path

SRC = str(default_model_path())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--type", "Q9_X"], "unknown file type 'Q9_X'"),
        (["--type", "Q8_0"], "a quantized input needs --allow-requantize"),
    ],
)
def test_quantize_errors_are_one_line_and_leave_nothing(runner, tmp_path, args, fragment):
    out = tmp_path / "out.gguf"
    result = runner.invoke(cli, ["quantize", SRC, str(out), *args])
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.strip().splitlines()[-1].startswith("Error:")
    assert list(tmp_path.iterdir()) == []


def test_quantize_refuses_to_overwrite_without_force(runner, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    result = runner.invoke(cli, ["quantize", SRC, str(out), "--type", "Q8_0", "--allow-requantize"])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert out.read_bytes() == b"keep me"


def test_quantize_missing_input(runner, tmp_path):
    result = runner.invoke(cli, ["quantize", str(tmp_path / "nope.gguf"), str(tmp_path / "o.gguf"), "--type", "Q8_0"])
    assert result.exit_code == 2 and "Model file not found" in result.stderr
