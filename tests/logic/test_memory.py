"""The memory estimate: arithmetic on real GGUF metadata, and against measured RSS."""

from __future__ import annotations

import pytest

from aimo_gguf.errors import InputError
from aimo_gguf.fit.memory import estimate, largest_batch, parse_size, read_shape
from aimo_gguf.gguf.files import default_model_path

MiB = 2**20


@pytest.fixture(scope="module")
def smollm2():
    return read_shape(str(default_model_path()))


def test_smollm2_shape(smollm2):
    assert (smollm2.architecture, smollm2.n_layers, smollm2.n_vocab) == ("llama", 30, 49152)
    # 3 KV heads x (64 + 64) per layer, no sliding window
    assert set(smollm2.kv_elements) == {384}
    assert not any(smollm2.swa_layers)
    # llama.cpp reports "CPU_Mapped model buffer size = 92.10 MiB"
    assert smollm2.weight_bytes / MiB == pytest.approx(92.10, abs=0.01)


@pytest.mark.parametrize(
    ("n_gpu_layers", "blocks_on_gpu", "output_on_gpu"),
    [(0, 0, False), (10, 10, False), (30, 30, False), (31, 30, True), (-1, 30, True), (99, 30, True)],
)
def test_gpu_split_follows_offloaded_layers(smollm2, n_gpu_layers, blocks_on_gpu, output_on_gpu):
    est = estimate(smollm2, ctx=1024, batch_size=4, n_gpu_layers=n_gpu_layers)
    block = smollm2.block_bytes
    expected_gpu = sum(block[30 - blocks_on_gpu :]) + (smollm2.output_bytes if output_on_gpu else 0)
    assert est.weights_gpu == expected_gpu
    assert est.weights_cpu + est.weights_gpu == smollm2.weight_bytes
    per_layer_kv = 1024 * 384 * 2 * 4
    assert est.kv_gpu == blocks_on_gpu * per_layer_kv
    assert est.kv_cpu == (30 - blocks_on_gpu) * per_layer_kv


def test_largest_batch_fits_the_budget(smollm2):
    small = largest_batch(smollm2, ctx=1024, max_memory=400 * MiB)
    large = largest_batch(smollm2, ctx=1024, max_memory=2000 * MiB)
    assert 1 <= small < large
    assert estimate(smollm2, ctx=1024, batch_size=small).cpu <= 400 * MiB
    assert estimate(smollm2, ctx=1024, batch_size=small + 1).cpu > 400 * MiB
    # a smaller KV type fits more sequences in the same budget
    assert largest_batch(smollm2, ctx=1024, max_memory=400 * MiB, kv_type="q4_0") > small
    with pytest.raises(InputError, match="even one sequence"):
        largest_batch(smollm2, ctx=4096, max_memory=50 * MiB)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16GiB", 16 * 2**30), ("800MiB", 800 * MiB), ("2G", 2 * 10**9), ("1.5GB", 1_500_000_000), ("4096", 4096),
     ("512 mib", 512 * MiB)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12XB", "-1GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(InputError, match="not a memory size"):
        parse_size(text)


def shape_like(n_embd: int, n_ff: int, n_vocab: int = 151936, **changes):
    from aimo_gguf.fit.memory import ModelShape

    base = dict(name="x", file_type="Q4_K_M", n_params=0, file_bytes=0, has_chat_template=True, architecture="qwen2",
                n_layers=4, n_ctx_train=4096, n_vocab=n_vocab, block_bytes=(100 * MiB,) * 4, output_bytes=50 * MiB,
                input_bytes=50 * MiB, kv_elements=(512,) * 4, swa_layers=(False,) * 4, sliding_window=0,
                block_repack=(60 * MiB,) * 4, output_repack=0, n_embd=n_embd, n_ff=n_ff, n_merges=n_vocab)
    return ModelShape(**{**base, **changes})


@pytest.mark.parametrize(("n_embd", "n_ff", "llama_cpp_mib"), [
    (896, 4864, 36.26), (1536, 8960, 65.26), (3584, 18944, 139.76),  # Qwen2.5 0.5B, 1.5B, 7B (llama.cpp's figures)
])
def test_the_compute_formula_matches_llama_cpps_figures(n_embd, n_ff, llama_cpp_mib):
    from aimo_gguf.fit.memory import _compute_bytes

    assert _compute_bytes(shape_like(n_embd, n_ff), batch_size=16) / MiB == pytest.approx(llama_cpp_mib, rel=0.02)


def test_every_part_is_counted_where_llama_cpp_puts_it():
    shape = shape_like(896, 4864)
    cpu = estimate(shape, ctx=640, batch_size=16)
    assert cpu.repack_cpu == 4 * 60 * MiB  # every block is on the CPU: its repacked copy too
    assert cpu.samplers == 16 * 151936 * 12 and cpu.output == 16 * 151936 * 4
    assert cpu.compute_gpu == 0 and cpu.gpu == 0
    assert cpu.cpu == (cpu.weights_cpu + cpu.repack_cpu + cpu.kv_cpu + cpu.output + cpu.compute_cpu + cpu.samplers
                       + cpu.vocab + cpu.overhead)
    gpu = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=-1)
    assert gpu.repack_cpu == 0 and gpu.weights_cpu == 50 * MiB  # only the embeddings stay
    assert gpu.compute_gpu > 0 and gpu.kv_cpu == 0
    half = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=2)
    assert half.repack_cpu == 2 * 60 * MiB


def test_llama_cpps_own_figures_replace_the_formulas():
    shape = shape_like(896, 4864)
    measured = {"compute": {"CPU": 10 * MiB, "CUDA_Host": 2 * MiB, "CUDA0": 300 * MiB}, "output": {"CPU": 5 * MiB},
                "host_heap": {"CPU": 40 * MiB}}
    est = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=-1, measured=measured)
    assert (est.compute_cpu, est.compute_gpu) == (12 * MiB, 300 * MiB)
    assert (est.output, est.vocab, est.source) == (5 * MiB, 40 * MiB, "llama.cpp")


def test_a_simulation_without_a_gpu_leaves_the_gpus_compute_to_the_formula():
    # A CPU build simulates -ngl 10 with every buffer on the CPU: the GPU's compute buffer is not 0.
    shape = shape_like(896, 4864)
    measured = {"compute": {"CPU": 36 * MiB}, "output": {"CPU": 5 * MiB}, "host_heap": {"CPU": 40 * MiB}}
    est = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=2, measured=measured)
    formula = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=2)
    assert est.compute_gpu == formula.compute_gpu > 0 and est.compute_cpu == formula.compute_cpu
    assert (est.output, est.vocab) == (5 * MiB, 40 * MiB) and est.source == "llama.cpp, compute by formula"
    cpu_only = estimate(shape, ctx=640, batch_size=16, n_gpu_layers=0, measured=measured)
    assert (cpu_only.compute_cpu, cpu_only.compute_gpu, cpu_only.source) == (36 * MiB, 0, "llama.cpp")


def test_most_gpu_layers_fills_the_budget_and_no_more():
    from aimo_gguf.fit.memory import most_gpu_layers

    shape = shape_like(896, 4864)
    for budget_mib in (10, 150, 260, 380, 2000):
        layers = most_gpu_layers(shape, ctx=640, batch_size=4, max_memory=budget_mib * MiB)
        if layers:
            assert estimate(shape, ctx=640, batch_size=4, n_gpu_layers=layers).gpu <= budget_mib * MiB
        following = shape.n_layers + 1 if layers < 0 else layers + 1
        if layers >= 0 and following <= shape.n_layers + 1:
            assert estimate(shape, ctx=640, batch_size=4, n_gpu_layers=following).gpu > budget_mib * MiB
    assert most_gpu_layers(shape, ctx=640, batch_size=4, max_memory=10 * MiB) == 0
    assert most_gpu_layers(shape, ctx=640, batch_size=4, max_memory=2000 * MiB) == -1
