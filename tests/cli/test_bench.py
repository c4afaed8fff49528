"""``aimo-gguf bench`` and ``aimo_gguf.bench``.

Pure logic (parsing, the table, JSON, the plot) on hand-made results; the real
SmolLM2 model (tests marked ``model``) on tiny work: batch sizes 1 and 2,
2 problems x 4 tokens, one thread.
"""

from __future__ import annotations

import sys

import pytest
from helpers import assert_one_line_error

from aimo_gguf.cli import cli


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-sizes", "0,x"], "--batch-sizes must be positive integers separated by commas"),
        (["--batch-sizes", ""], "--batch-sizes must be positive integers"),
        (["--problems", "0"], "--problems must be at least 1, got 0"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["-t", "0"], "--threads must be at least 1"),
        (["-ngl", "-2"], "--n-gpu-layers must be 'auto', -1 (all) or more"),
        (["--samplers", "batched,gpu"], "--samplers must be sampling paths separated by commas"),
        (["--confidence", "--vote", "entropy"], "--vote entropy needs it in every row"),
        (["--min-p", "1.5"], "--min-p must be in [0, 1)"),
    ],
)
def test_bad_values_one_line_exit_2(runner, args, fragment):
    result = runner.invoke(cli, ["bench", *args])
    assert_one_line_error(result, fragment)


def test_missing_model_one_line(runner, tmp_path):
    result = runner.invoke(cli, ["bench", "-m", str(tmp_path / "nope.gguf")])
    assert_one_line_error(result, "Model file not found")


def test_plot_without_matplotlib_fails_before_measuring(runner, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(cli, ["bench", "--plot", str(tmp_path / "b.png"), "-m", str(tmp_path / "nope.gguf")])
    assert_one_line_error(result, "--plot needs matplotlib", "pip install 'aimo-gguf[plot]'")


def test_unwritable_json_fails_before_measuring(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(cli, ["bench", "--json-file", str(blocker / "b.json")])
    assert_one_line_error(result, "cannot write the JSON")


def test_help_lists_options(runner):
    result = runner.invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for flag in ("--model", "-ngl", "--threads", "--batch-sizes", "--max-tokens", "--problems", "--samples",
                 "--no-baseline", "--json", "--json-file", "--plot"):
        assert flag in result.stdout
