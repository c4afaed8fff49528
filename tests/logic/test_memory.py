"""The memory estimate: arithmetic on real GGUF metadata, and against measured RSS."""

from __future__ import annotations

import pytest

from aimo_gguf.errors import InputError
from aimo_gguf.memory import estimate, largest_batch, parse_size, read_shape
from aimo_gguf.models import default_model_path

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
