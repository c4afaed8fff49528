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


@pytest.mark.parametrize("free, layers", [(0, 0), (1 << 40, -1)])
def test_auto_gpu_layers_are_planned_for_each_model(monkeypatch, capsys, free, layers):
    """compare -ngl auto on a GPU build gives the engine the plan's layer count, never 'auto'."""
    from aimo_gguf import engine as engine_package
    from aimo_gguf.engine import llama
    from aimo_gguf.errors import InputError
    from aimo_gguf.fit import gpus

    monkeypatch.setattr(llama, "supports_gpu_offload", lambda: True)
    monkeypatch.setattr(gpus, "gpu_memories", lambda: [(free, 0, free)])
    seen = []

    def engine(path, **options):
        seen.append(options["n_gpu_layers"])
        raise InputError("loaded no model")

    monkeypatch.setattr(engine_package, "Engine", engine, raising=False)
    with pytest.raises(InputError, match="loaded no model"):
        compare(SRC, SRC, n_gpu_layers="auto", max_text_tokens=32)
    assert seen == [layers]
    assert "--n-gpu-layers auto:" in capsys.readouterr().err
