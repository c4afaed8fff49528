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


@pytest.mark.parametrize("ngl, sizes", [("auto", "1,2"), (-1, "1,auto"), ("auto", "2,auto")])
def test_auto_is_planned_once_with_the_bench_s_own_device_flags(monkeypatch, capsys, ngl, sizes):
    """bench's 'auto' plans the bench's own config: with --split-mode none --main-gpu 1 it fits GPU 1
    (roomy), not GPU 0 (full); one plan however many 'auto's, each note said once."""
    import aimo_gguf.bench as bench_module
    import aimo_gguf.engine.llama as llama_module
    import aimo_gguf.fit.gpus as devices
    import aimo_gguf.fit.plan as plan_module

    monkeypatch.setattr(llama_module, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(devices, "gpu_memories", lambda: [(1 << 40, 1 << 40, 0), (1 << 40, 0, 1 << 40)])
    planned, real = [], plan_module.plan_load
    monkeypatch.setattr(plan_module, "plan_load", lambda config, path: planned.append(config) or real(config, path))

    class Measured(Exception):
        pass

    def engine_rows(result, path, config, *args, **kwargs):
        raise Measured(result.settings, config)

    monkeypatch.setattr(bench_module, "_engine_rows", engine_rows)
    with pytest.raises(Measured) as stop:
        bench_module.bench(n_gpu_layers=ngl, batch_sizes=sizes, split_mode="none", main_gpu=1, flash_attn="on",
                           threads=1, max_tokens=8, progress=False)
    settings, config = stop.value.args
    assert [(c.split_mode, c.main_gpu, c.flash_attn, c.threads) for c in planned] == [("none", 1, "on", 1)]
    assert config.n_gpu_layers == settings.n_gpu_layers == -1  # all of them: GPU 1 holds the model
    assert ("auto" in sizes) == (max(settings.batch_sizes) > 2)
    err = capsys.readouterr().err
    assert err.count("--n-gpu-layers auto:") == (ngl == "auto")
    assert err.count("--batch-size auto:") == ("auto" in sizes)
