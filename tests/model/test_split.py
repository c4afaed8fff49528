"""The split options on the real engine: on this CPU build they are said once and ignored, like -ngl."""

from __future__ import annotations

import llama_cpp
import pytest

from aimo_gguf.engine import Engine, llama
from aimo_gguf.models import default_model_path

pytestmark = pytest.mark.skipif(llama.supports_gpu_offload(), reason="a GPU build really splits")


def test_split_options_are_said_once_and_ignored_on_a_cpu_build():
    with Engine(default_model_path(), ctx=64, batch_size=1, threads=1, split_mode="row", tensor_split=(3.0, 1.0),
                main_gpu=1) as engine:
        notes = [n for n in engine.info.notes if "--split-mode" in n]
        assert notes == ["--split-mode, --tensor-split and --main-gpu are ignored: no GPU to split over"]
    with Engine(default_model_path(), ctx=64, batch_size=1, threads=1) as engine:
        assert not [n for n in engine.info.notes if "--split-mode" in n]  # the defaults say nothing


def test_a_load_with_the_split_gets_its_parameters(monkeypatch):
    seen = []
    real = llama_cpp.llama_model_load_from_file

    def spy(path, params):
        seen.append((params.split_mode, params.main_gpu, [params.tensor_split[i] for i in range(2)]))
        return real(path, params)

    monkeypatch.setattr(llama.llama_cpp, "llama_model_load_from_file", spy)
    model = llama.LlamaModel(default_model_path(), split_mode="row", tensor_split=(3.0, 1.0), main_gpu=0)
    model.close()
    assert seen == [(llama_cpp.LLAMA_SPLIT_MODE_ROW, 0, [3.0, 1.0])]
