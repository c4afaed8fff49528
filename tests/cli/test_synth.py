"""aimo-gguf synth at the CLI edge: a config.json it cannot use is one line, and nothing is written."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error

from aimo_gguf.cli import cli


@pytest.mark.parametrize("content", ["[]", "[1, 2]", "42", '"a string"', "null", "true"])
def test_a_config_json_that_is_not_an_object_is_one_line(tmp_path, runner, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    for args in (["--dry-run"], ["-o", str(tmp_path / "m.gguf")]):
        assert_one_line_error(runner.invoke(cli, ["synth", "--like", str(path), *args]), "not a JSON object")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"num_attention_heads": 0}, "zero or less"),
    ({"num_attention_heads": 7, "num_key_value_heads": 3, "head_dim": 16}, "not a multiple of num_key_value_heads"),
])
def test_a_shape_llama_cpp_would_abort_on_is_refused_before_writing(tmp_path, runner, changes, fragment):
    import json

    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 50000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, **changes}))
    result = runner.invoke(cli, ["synth", "--like", str(path), "-o", str(tmp_path / "m.gguf"), "--type", "F16"])
    assert_one_line_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
