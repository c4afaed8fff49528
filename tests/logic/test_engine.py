"""The engine's parts that need no model: the GPU-layer ladder, the settings a run hands it."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import fields

import pytest

from aimo_gguf import engine as engine_module
from aimo_gguf.config import RunConfig
from aimo_gguf.engine import Engine, EngineOptions
from aimo_gguf.errors import InputError
from aimo_gguf.fit.plan import engine_options


def test_layer_ladder_halves_down_to_cpu():
    assert engine_module.layer_ladder(40, None) == [40, 20, 10, 5, 2, 1, 0]
    assert engine_module.layer_ladder(-1, 30) == [-1, 15, 7, 3, 1, 0]
    assert engine_module.layer_ladder(0, None) == [0]


def test_every_engine_setting_of_a_run_reaches_the_engine():
    """engine_options gives each flag's value to the engine unchanged."""
    config = RunConfig(cache_prompts=False, share_prompts=True, kv_unified=True, kv_type="q8_0", flash_attn="on",
                       threads=3, n_gpu_layers=7, ctx=300)
    options = engine_options(config, "m.gguf", batch_size=5)
    assert options.batch_size == 5
    assert (options.cache_prompts, options.share_prompts, options.kv_unified, options.kv_type,
            options.flash_attn, options.threads, options.n_gpu_layers, options.ctx) == (
        False, True, True, "q8_0", "on", 3, 7, config.sequence_ctx)
    assert engine_options(RunConfig(), "m.gguf", batch_size=1).cache_prompts is None  # on unless unified


@pytest.mark.parametrize("config", [
    RunConfig(), RunConfig(stop=["</s>"], raw_prompt=True, tensor_split="3,1", split_mode="row", main_gpu=1),
    RunConfig(vote="deepconf", kv_type="q4_0", sampler="chain", ignore_eos=True, repack=False),
    RunConfig(confidence=True, group_window=32, threads=2, n_gpu_layers=-1, cache_prompts=False),
])
def test_engine_options_pickle_whole(config):
    """A child process rebuilds the engine from its options: they survive pickling field for field."""
    options = engine_options(config, "m.gguf", batch_size=3, graded=True, verbose=True, token_budget=64)
    again = pickle.loads(pickle.dumps(options))
    assert again == options
    assert all(getattr(again, f.name) == getattr(options, f.name) for f in fields(EngineOptions))


@pytest.mark.parametrize("fields_", [dict(ctx=8), dict(batch_size=0), dict(kv_type="q2"), dict(flash_attn="maybe"),
                                     dict(sampler="greedy"), dict(split_mode="diagonal"),
                                     dict(kv_type="q8_0", flash_attn="off")])
def test_bad_engine_options_are_one_line_before_any_load(fields_):
    with pytest.raises(InputError):
        EngineOptions(model_path="m.gguf", **fields_)


def test_a_misspelt_engine_keyword_is_not_swallowed():
    with pytest.raises(TypeError):
        Engine("nothing.gguf", n_seq_max=8)


@pytest.mark.parametrize("module", ["aimo_gguf.config", "aimo_gguf.engine", "aimo_gguf.engine.api",
                                    "aimo_gguf.fit.plan", "aimo_gguf.cli", "aimo_gguf.gguf.converter"])
def test_importing_does_not_load_llama_cpp(module):
    code = f"import {module}, sys; assert 'llama_cpp' not in sys.modules, 'llama_cpp loaded'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_prompt_reuse_with_a_unified_cache_is_refused_before_any_load():
    with pytest.raises(InputError, match="--cache-prompts needs one KV stream per sequence"):
        Engine("nothing.gguf", kv_unified=True, cache_prompts=True)


@pytest.mark.parametrize("layers", ["auto", "-1", 2.0, None, True])
def test_gpu_layers_must_be_resolved_to_a_whole_number(layers):
    """'auto' is the load plan's to resolve: the engine refuses it in one line, not a llama.cpp TypeError."""
    with pytest.raises(InputError, match="n_gpu_layers must be a whole number"):
        EngineOptions(model_path="m.gguf", n_gpu_layers=layers)
