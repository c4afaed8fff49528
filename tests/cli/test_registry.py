"""models/registry.json and aimo-gguf models: the recommended models and where they fit."""

from __future__ import annotations

import json

from aimo_gguf.cli import cli


def test_models_command_prints_the_fit_table_and_pull_commands(runner):
    result = runner.invoke(cli, ["models", "--ctx", "4096", "-b", "4", "--gpu", "16GB,80GB", "--pull"])
    assert result.exit_code == 0, result.output
    assert "4 sequences x up to 4096 tokens, KV f16:" in result.output
    assert "16GB GPU" in result.output and "80GB GPU" in result.output
    assert "aimo-gguf pull bartowski/Qwen2.5-Math-7B-Instruct-GGUF Qwen2.5-Math-7B-Instruct-Q4_K_M.gguf" in result.output


def test_models_json_and_bad_gpu_size(runner):
    result = runner.invoke(cli, ["models", "--json", "--gpu", "15GiB"])
    rows = json.loads(result.stdout)
    assert {"n_gpu_layers", "gpu_bytes"} <= set(rows[0]["fits"]["15GiB"])
    result = runner.invoke(cli, ["models", "--gpu", "lots"])
    assert result.exit_code == 2 and "'lots' is not a size" in result.output
