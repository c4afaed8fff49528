"""Importance matrices: both llama-imatrix formats read and normalised as llama-quantize does,
and passed through llama_model_quantize."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from helpers import write_legacy_imatrix

from aimo_gguf.cli import cli
from aimo_gguf.fit.memory import read_shape
from aimo_gguf.gguf.files import default_model_path

SRC = str(default_model_path())


@pytest.mark.model
def test_an_imatrix_changes_the_quantization(runner, tmp_path):
    from gguf import GGUFReader

    rng = np.random.default_rng(0)
    weights = {t.name: rng.random(int(t.shape[0])).astype(np.float32) ** 4 + 1e-3
               for t in GGUFReader(SRC).tensors if len(t.shape) == 2 and t.name.startswith("blk.")}
    write_legacy_imatrix(tmp_path / "m.dat", weights, ncall=2)
    args = ["--type", "Q4_K_M", "--allow-requantize", "-t", "2"]
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "weighted.gguf"
    assert runner.invoke(cli, ["quantize", SRC, str(plain), *args]).exit_code == 0
    result = runner.invoke(cli, ["quantize", SRC, str(weighted), *args, "--imatrix", str(tmp_path / "m.dat")])
    assert result.exit_code == 0, result.output
    assert read_shape(str(weighted)).file_type == "Q4_K_M"
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (plain, weighted)]
    assert digest[0] != digest[1]
