"""Tier 3: the batched engine on the real SmolLM2-135M GGUF (CPU)."""

from __future__ import annotations

from aimo_gguf import engine as engine_module


def test_layer_ladder_halves_down_to_cpu():
    assert engine_module.layer_ladder(40, None) == [40, 20, 10, 5, 2, 1, 0]
    assert engine_module.layer_ladder(-1, 30) == [-1, 15, 7, 3, 1, 0]
    assert engine_module.layer_ladder(0, None) == [0]
