"""aimo-gguf quantize: llama_model_quantize through the binding, written atomically."""

from __future__ import annotations

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.memory import read_shape
from aimo_gguf.models import default_model_path
from aimo_gguf.quantize import file_types

SRC = str(default_model_path())


def test_file_type_names_match_llama_cpp():
    types = file_types()
    assert types["Q4_K_M"] == 15 and types["Q8_0"] == 7 and types["F16"] == 1 and types["F32"] == 0
    assert "GUESSED" not in types


@pytest.mark.model
def test_requantized_model_loads_and_generates(runner, tmp_path):
    out = tmp_path / "models" / "smollm2-Q8_0.gguf"
    result = runner.invoke(cli, ["quantize", SRC, str(out), "--type", "q8_0", "--allow-requantize", "-t", "2"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert read_shape(str(out)).file_type == "Q8_0"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no .part left behind
    with Engine(out, ctx=128, batch_size=1, threads=2) as eng:
        prompt = eng.tokenize("<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n")
        done = list(eng.generate([Request(key=0, prompt=prompt, max_tokens=12, seed=0,
                                          sampling=SamplingParams(temperature=0))]))
    assert "Paris" in done[0].text


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
