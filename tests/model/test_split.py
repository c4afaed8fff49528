"""The split options on the real engine: on this CPU build they are said once and ignored, like -ngl."""

from __future__ import annotations

import llama_cpp
import pytest

from aimo_gguf.engine import Engine, llama
from aimo_gguf.gguf.files import default_model_path

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


@pytest.mark.parametrize("in_process", [True, False])
def test_the_adapter_with_two_replicas_shares_the_samples_and_the_vote(in_process):
    from aimo_gguf.kaggle import ANSWER_RANGE, KaggleSolver

    solver = KaggleSolver(replicas=2, threads=1, samples=4, temperature=0.0, max_tokens=16, total_seconds=600,
                          safety_seconds=10, in_process=in_process)
    try:
        pool = solver.engine
        if in_process:
            assert [e.batch_size for e in pool.engines] == [2, 2]  # half the samples on each
        else:  # the pool lives in the engine process
            assert pool is None and solver.served is not None
        answers = [int(solver.predict(f"q{i}", f"What is {i} + {i + 2}?")["answer"].to_list()[0]) for i in range(3)]
        assert all(ANSWER_RANGE[0] <= a <= ANSWER_RANGE[1] for a in answers)
        assert solver.stats.failures == 0 and solver.stats.problems == 3
        if in_process:
            assert all(e.stats.generated_tokens > 0 for e in pool.engines)  # both decoded
        assert solver.stats.answered + solver.stats.fallbacks == 3  # (the shared vote's early stop: tests/cli)
    finally:
        solver.close()
