"""aimo-gguf info: a GGUF file described from its header, with a memory estimate."""

from __future__ import annotations

import json

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.info import describe


def test_info_describes_the_embedded_model(runner):
    result = runner.invoke(cli, ["info", "--ctx", "2048", "-b", "16"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "llama, 30 layers" in out and "Q4_1" in out and "135 M" in out
    assert "chat template    yes" in out
    # 16 x 2048 tokens of f16 KV is llama.cpp's 720 MiB
    assert "KV 720.0 MiB" in out


def test_info_json_split_adds_up(runner):
    result = runner.invoke(cli, ["info", "--json", "-ngl", "10", "--ctx", "1024", "-b", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    est = data["estimate"]
    assert data["file_type"] == "Q4_1" and data["n_layers"] == 30 and data["batch_size"] == 4
    assert est["n_gpu_layers"] == 10
    assert est["weights_cpu"] + est["weights_gpu"] == data["weight_bytes"]
    assert est["kv_gpu"] == 10 * 1024 * 384 * 2 * 4 and est["kv_cpu"] == 20 * 1024 * 384 * 2 * 4
    assert est["total"] == est["cpu"] + est["gpu"]


def test_info_batch_auto_uses_the_budget():
    small = describe(batch_size="auto", max_memory="300MiB")
    large = describe(batch_size="auto", max_memory="1GiB")
    assert 1 <= small.batch_size < large.batch_size
    assert small.estimate.cpu <= 300 * 2**20


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["missing.gguf"], "Model file not found"), (["-b", "0"], "--batch-size must be 'auto' or at least 1")],
)
def test_info_bad_input_is_one_line(runner, args, fragment):
    result = runner.invoke(cli, ["info", *args])
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.count("\n") == 1


def test_info_rejects_a_file_that_is_not_gguf(runner, tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a model")
    result = runner.invoke(cli, ["info", str(bogus)])
    assert result.exit_code == 2 and "Not a GGUF file" in result.stderr
