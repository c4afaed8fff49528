"""aimo-gguf quantize: llama_model_quantize through the binding, written atomically."""

from __future__ import annotations

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.fit.memory import read_shape
from aimo_gguf.gguf.files import default_model_path

SRC = str(default_model_path())


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
