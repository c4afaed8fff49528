"""Tier 3: the batched engine on the real SmolLM2-135M GGUF (CPU)."""

from __future__ import annotations

import pytest

from aimo_gguf.engine import Engine
from aimo_gguf.errors import ModelError


def test_not_a_gguf_file_is_a_model_error(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="Not a GGUF file"):
        Engine(bogus)
