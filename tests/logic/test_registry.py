"""models/registry.json and aimo-gguf models: the recommended models and where they fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aimo_gguf.fit.memory import estimate, read_shape
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.models import Entry, fit, load_registry
from aimo_gguf.quantize import file_types

ROOT = Path(__file__).resolve().parents[2]


def test_models_registry_json_is_the_bundled_registry():
    link = ROOT / "models" / "registry.json"
    assert json.loads(link.read_text()) == json.loads((ROOT / "aimo_gguf" / "data" / "registry.json").read_text())


def test_every_entry_is_complete_and_pullable():
    entries = load_registry()
    assert len(entries) >= 10
    types = file_types()
    for e in entries:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", e.repo), e
        assert e.files and all(f.endswith(".gguf") for f in e.files), e
        assert e.quant in types, e
        assert e.size_gb > 0 and e.layers > 0 and e.kv_heads > 0 and e.head_dim > 0 and e.vocab > 0, e
        assert e.ctx_train >= 4096 and e.license, e
        assert e.quant in "".join(e.files), e  # the file is the quantization it claims
    assert len({(e.name, e.quant) for e in entries}) == len(entries)


def _smollm2_entry() -> Entry:
    shape = read_shape(str(default_model_path()))
    return Entry(name="SmolLM2", quant="Q4_1", repo="x/y", files=("a.gguf",), size_gb=0,
                 bytes=shape.file_bytes, layers=30, hidden=576, kv_heads=3, head_dim=64, vocab=49152,
                 tied_embeddings=True, ctx_train=8192, license="apache-2.0")


def test_a_shape_from_listed_numbers_matches_the_real_header():
    real = read_shape(str(default_model_path()))
    listed = _smollm2_entry().shape()
    for n in (0, 10, 31):
        a = estimate(real, ctx=2048, batch_size=8, n_gpu_layers=n)
        b = estimate(listed, ctx=2048, batch_size=8, n_gpu_layers=n)
        assert b.kv_gpu == a.kv_gpu and b.kv_cpu == a.kv_cpu
        assert b.weights_gpu + b.weights_cpu == pytest.approx(a.weights_gpu + a.weights_cpu, rel=0.10)
        # embeddings often keep more bits than the file's type: the blocks get the
        # rest of the size, so the GPU share errs on the safe (larger) side
        assert a.weights_gpu <= b.weights_gpu <= 1.25 * a.weights_gpu


def test_fit_grows_with_the_gpu_and_shrinks_with_the_batch():
    e = next(x for x in load_registry() if x.name == "DeepSeek-R1-Distill-Qwen-14B" and x.quant == "Q4_K_M")
    small = fit(e, 16 * 10**9, ctx=8192, batch_size=8)
    big = fit(e, 80 * 10**9, ctx=8192, batch_size=8)
    assert 0 < small.n_gpu_layers < e.layers and big.n_gpu_layers == -1
    assert small.gpu_used <= 16 * 10**9
    assert fit(e, 16 * 10**9, ctx=8192, batch_size=32).n_gpu_layers < small.n_gpu_layers
    assert fit(e, 10**9, ctx=8192, batch_size=8).n_gpu_layers == 0  # not even one layer: CPU only


def test_sliding_window_layers_make_gpt_oss_kv_small():
    e = next(x for x in load_registry() if x.name == "gpt-oss-20b")
    shape = e.shape()
    assert sum(shape.swa_layers) == e.layers // 2 and shape.sliding_window == 128
    full = estimate(shape, ctx=16384, batch_size=1, n_gpu_layers=-1).kv_per_sequence
    # 12 full layers x 16384 cells x 2 x 8 x 64 x 2 bytes, plus 12 windows of 128 + 512 cells (padded)
    assert full == 12 * 16384 * 2048 + 12 * 768 * 2048


def test_every_model_names_a_recipe_that_exists():
    from aimo_gguf.models import load_registry
    from aimo_gguf.recipes import RECIPES

    entries = load_registry()
    assert all(e.recipe in RECIPES for e in entries)
    assert {e.recipe for e in entries if e.name.startswith("gpt-oss")} == {"aimo3-gpt-oss"}
    assert {e.recipe for e in entries if "R1" in e.name or "QwQ" in e.name} == {"r1-distill"}
