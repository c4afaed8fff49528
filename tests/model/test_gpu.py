"""On a GPU, through a CUDA build of llama-cpp-python: real offload (-ngl -1), -ngl auto on a free and on a
nearly full device, the fall back down the layer ladder when the layers do not fit, and the estimate's GPU
part against NVML. ``scripts/gpu_check.sh run`` runs these there (``pytest -m gpu``), on the synthetic model
it names in ``AIMO_GGUF_GPU_MODEL``; on a CPU build every test here skips, with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import gpu_offload_supported

from aimo_gguf.config import RunConfig
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.fit.gpus import gpu_memory
from aimo_gguf.fit.memory import measure, read_shape
from aimo_gguf.fit.plan import GPU_RUNTIME_RESERVE, plan_load

GPU_MODEL_ENV = "AIMO_GGUF_GPU_MODEL"  # read before conftest clears AIMO_GGUF_* for each test
_MODEL = os.environ.get(GPU_MODEL_ENV)
MiB = 2**20

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_offload_supported(),
                       reason="needs a CUDA build of llama-cpp-python and a GPU (scripts/gpu_check.sh)"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The GPU check's synthetic Qwen2.5-0.5B, or one written here (needs the embedded tokenizer). CUDA's
    context of this process is made first (by PyTorch, when it is there), so what the tests measure and
    leave free is the engine's alone: llama.cpp shares that context."""
    if gpu_memory() is None:
        pytest.skip("NVML sees no GPU (install nvidia-ml-py)")
    try:
        import torch

        torch.zeros(1, device="cuda")
    except ImportError:
        pass
    if _MODEL:
        return Path(_MODEL)
    from aimo_gguf.synth import synth

    return synth("Qwen2.5-0.5B-Instruct", tmp_path_factory.mktemp("gpu") / "qwen05.gguf", progress=False)


def used() -> int:
    return gpu_memory()[1]


@contextmanager
def occupy(leave_free: int):
    """Hold GPU memory (PyTorch's plain cudaMalloc) until only ``leave_free`` bytes are free."""
    torch = pytest.importorskip("torch")
    free = gpu_memory()[2]
    take = free - leave_free
    if take <= 0:
        yield
        return
    block = torch.empty(take, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    try:
        yield
    finally:
        del block
        torch.cuda.empty_cache()


def greedy(engine: Engine, n: int = 4, tokens: int = 16) -> list[int]:
    prompt = engine.tokenize("What is 2 + 2?")
    done = list(engine.generate([Request(key=i, prompt=prompt, max_tokens=tokens, seed=i,
                                         sampling=SamplingParams(temperature=0)) for i in range(n)]))
    return [len(c.tokens) for c in done]


def test_every_layer_goes_to_the_gpu_and_decodes(model):
    shape = read_shape(str(model))
    before = used()
    with Engine(model, n_gpu_layers=-1, ctx=512, batch_size=4, ignore_eos=True) as engine:
        assert engine.info.gpu_offload_supported and engine.info.n_gpu_layers == shape.n_layers + 1
        assert used() - before > sum(shape.block_bytes)  # the weights really are on the device
        assert greedy(engine) == [16] * 4


PROBE = """
import sys
from aimo_gguf.engine import Engine, Request, SamplingParams
path, batch = sys.argv[1], int(sys.argv[2])
with Engine(path, n_gpu_layers=-1, ctx=1024, batch_size=batch, ignore_eos=True) as engine:
    prompt = engine.tokenize("What is 2 + 2?")
    list(engine.generate([Request(key=i, prompt=prompt, max_tokens=8, seed=i,
                                  sampling=SamplingParams(temperature=0)) for i in range(batch)]))
    print("ready", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("batch", [1, 16])
def test_the_gpu_estimate_holds(model, batch):
    """NVML's growth while a fresh process holds the model and a context (after decoding), against the
    estimate's GPU part plus CUDA's context, which that process makes."""
    before = used()
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(model), str(batch)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "ready"
        growth = used() - before
    finally:
        probe.stdin.close()
        probe.wait(timeout=60)
    est = measure(model, ctx=1024, batch_size=batch, n_gpu_layers=-1)
    expected = est.gpu + GPU_RUNTIME_RESERVE
    assert abs(growth - expected) <= 0.15 * expected, (
        f"NVML growth {growth / MiB:.0f} MiB, estimate {est.gpu / MiB:.0f} + CUDA's context "
        f"{GPU_RUNTIME_RESERVE / MiB:.0f} MiB")


def test_auto_takes_every_layer_when_the_gpu_has_room(model):
    config = RunConfig(n_gpu_layers="auto", batch_size=4, ctx=1024)
    assert plan_load(config, model).n_gpu_layers == -1


def test_auto_takes_fewer_layers_on_a_nearly_full_gpu_and_they_load(model):
    shape = read_shape(str(model))
    full = measure(model, ctx=1024, batch_size=4, n_gpu_layers=-1)
    with occupy(GPU_RUNTIME_RESERVE + full.gpu // 2):  # -ngl auto keeps the reserve back; this process has one
        layers = plan_load(RunConfig(n_gpu_layers="auto", batch_size=4, ctx=1024), model).n_gpu_layers
        assert 0 < layers < shape.n_layers
        with Engine(model, n_gpu_layers=layers, ctx=1024, batch_size=4, ignore_eos=True) as engine:
            assert engine.info.n_gpu_layers == layers
            assert not any("GPU layers failed" in note for note in engine.info.notes)
            assert greedy(engine) == [16] * 4


def test_layers_that_do_not_fit_fall_back_down_the_ladder(model):
    """-ngl -1 with room for about a quarter of the model: the load steps down (halving) until it fits."""
    full = measure(model, ctx=1024, batch_size=4, n_gpu_layers=-1)
    with occupy(full.gpu // 4), \
            Engine(model, n_gpu_layers=-1, ctx=1024, batch_size=4, ignore_eos=True) as engine:
        assert engine.info.n_gpu_layers < read_shape(str(model)).n_layers
        assert any("GPU layers failed" in note for note in engine.info.notes)
        assert greedy(engine) == [16] * 4
