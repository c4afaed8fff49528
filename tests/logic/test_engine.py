"""The engine's parts that need no model: the GPU-layer ladder, the settings a run hands it."""

from __future__ import annotations

import inspect

import pytest

from aimo_gguf import engine as engine_module
from aimo_gguf.config import RunConfig
from aimo_gguf.engine import Engine
from aimo_gguf.errors import InputError
from aimo_gguf.fit.plan import engine_kwargs


def test_layer_ladder_halves_down_to_cpu():
    assert engine_module.layer_ladder(40, None) == [40, 20, 10, 5, 2, 1, 0]
    assert engine_module.layer_ladder(-1, 30) == [-1, 15, 7, 3, 1, 0]
    assert engine_module.layer_ladder(0, None) == [0]


def test_every_engine_setting_of_a_run_reaches_the_engine():
    """engine_kwargs names only Engine parameters, and each flag's value goes through unchanged."""
    accepted = set(inspect.signature(Engine.__init__).parameters) - {"self", "model_path"}
    config = RunConfig(cache_prompts=False, share_prompts=True, kv_unified=True, kv_type="q8_0", flash_attn="on",
                       threads=3, n_gpu_layers=7, ctx=300)
    kwargs = engine_kwargs(config, 5)
    assert set(kwargs) <= accepted
    assert kwargs["batch_size"] == 5
    assert (kwargs["cache_prompts"], kwargs["share_prompts"], kwargs["kv_unified"], kwargs["kv_type"],
            kwargs["flash_attn"], kwargs["threads"], kwargs["n_gpu_layers"], kwargs["ctx"]) == (
        False, True, True, "q8_0", "on", 3, 7, config.sequence_ctx)
    assert engine_kwargs(RunConfig(), 1)["cache_prompts"] is None  # the engine's default: on unless unified


def test_prompt_reuse_with_a_unified_cache_is_refused_before_any_load():
    with pytest.raises(InputError, match="--cache-prompts needs one KV stream per sequence"):
        Engine("nothing.gguf", kv_unified=True, cache_prompts=True)
