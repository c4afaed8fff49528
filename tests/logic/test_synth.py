"""synth without writing models: shapes from config.json and the registry, parameter counts of the real
models, the tensor list of each architecture, errors."""

from __future__ import annotations

import json

import pytest

from aimo_gguf.errors import InputError
from aimo_gguf.gguf.synthetic import f16_bytes, tensors_of
from aimo_gguf.synth import (
    DEFAULT_TYPES,
    describe,
    known_shapes,
    spec_from_config,
    spec_like,
)


@pytest.mark.parametrize(("name", "architecture", "params"), [
    # the published parameter counts of the real checkpoints
    ("Qwen2.5-0.5B-Instruct", "qwen2", 0.494e9),
    ("Qwen2.5-Math-1.5B-Instruct", "qwen2", 1.544e9),
    ("Qwen2.5-Math-7B-Instruct", "qwen2", 7.616e9),
    ("DeepSeek-R1-Distill-Qwen-14B", "qwen2", 14.77e9),
    ("QwQ-32B", "qwen2", 32.76e9),
    ("Llama-3.2-1B-Instruct", "llama", 1.236e9),
    ("gpt-oss-20b", "gpt-oss", 20.91e9),
    ("gpt-oss-120b", "gpt-oss", 116.83e9),
])
def test_known_shapes_have_the_real_parameter_count(name, architecture, params):
    spec = spec_like(name)
    assert spec.architecture == architecture
    assert spec.n_params == pytest.approx(params, rel=0.005)


def test_every_registry_model_has_a_shape():
    from aimo_gguf.models import load_registry

    names = set(known_shapes())
    for entry in load_registry():
        assert entry.name in names
        spec = spec_like(entry.name)
        assert (spec.layers, spec.hidden, spec.kv_heads, spec.vocab, spec.tied_embeddings) == (
            entry.layers, entry.hidden, entry.kv_heads, entry.vocab, entry.tied_embeddings)


def test_names_are_matched_without_case():
    assert spec_like("qwen2.5-math-7b-instruct").name == "Qwen2.5-Math-7B-Instruct"


def config(**extra) -> dict:
    base = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 50000}
    return {**base, **extra}


def test_a_config_json_or_its_folder(tmp_path):
    (tmp_path / "My-Model").mkdir()
    path = tmp_path / "My-Model" / "config.json"
    path.write_text(json.dumps(config()))
    for like in (path, path.parent, str(path)):
        spec = spec_like(like)
        assert spec.name == "My-Model" and spec.hidden == 64 and spec.head_dim == 16


def test_tensors_follow_llama_cpps_names_and_shapes():
    spec = spec_from_config(config(tie_word_embeddings=True), "t")
    names = {name: (shape, kind) for name, shape, kind in tensors_of(spec)}
    assert "output.weight" not in names  # tied: the embeddings serve as the head
    assert names["token_embd.weight"] == ((50000, 64), "f16")
    assert names["blk.1.attn_k.weight"] == ((32, 64), "f16") and names["blk.1.attn_k.bias"][0] == (32,)
    assert names["blk.0.ffn_down.weight"][0] == (64, 128)
    llama = spec_from_config(config(architectures=["LlamaForCausalLM"]), "l")
    assert "blk.0.attn_q.bias" not in {n for n, _, _ in tensors_of(llama)}  # llama has no QKV biases


def test_gpt_oss_has_experts_in_mxfp4_sinks_and_sliding_window():
    spec = spec_like("gpt-oss-20b")
    names = {name: (shape, kind) for name, shape, kind in tensors_of(spec)}
    assert names["blk.0.ffn_gate_exps.weight"] == ((32, 2880, 2880), "mxfp4")
    assert names["blk.0.ffn_down_exps.weight"] == ((32, 2880, 2880), "mxfp4")
    assert names["blk.0.attn_sinks.weight"] == ((64,), "f32")
    assert names["blk.0.attn_q.weight"][0] == (64 * 64, 2880)
    assert spec.sliding_window == 128 and spec.experts_used == 4
    assert DEFAULT_TYPES[spec.architecture] == "MXFP4_MOE"
    assert describe(spec)["output_bytes_about"] == pytest.approx(12.0e9, rel=0.02)  # the real file is 12.1 GB


def test_the_f16_file_size_is_two_bytes_a_weight():
    spec = spec_like("Qwen2.5-Math-1.5B-Instruct")
    assert f16_bytes(spec) == pytest.approx(2 * spec.n_params, rel=0.001)


@pytest.mark.parametrize(("changes", "message"), [
    ({"architectures": ["BertModel"]}, "is not one synth writes"),
    ({"architectures": []}, "is not one synth writes"),
    ({"hidden_size": None}, "lacks a usable"),
    ({"intermediate_size": 0}, "size of zero or less"),
    ({"num_attention_heads": 5}, "heads x head_dim"),
    ({"architectures": ["GptOssForCausalLM"]}, "num_local_experts"),
])
def test_bad_configs_are_one_line(changes, message):
    cfg = {k: v for k, v in {**config(), **changes}.items() if v is not None}
    with pytest.raises(InputError, match=message):
        spec_from_config(cfg, "bad")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="known: .*Qwen2.5-Math-7B-Instruct"):
        spec_like("Not-A-Model-7B")


GPT_OSS = {"architectures": ["GptOssForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
           "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 50000}
LLAMA = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 50000}


@pytest.mark.parametrize(("base", "changes", "message"), [
    # shapes llama.cpp aborts on when the file is loaded, or that divide by zero here
    (LLAMA, {"num_attention_heads": 0}, "zero or less"),
    (LLAMA, {"num_key_value_heads": 0}, "zero or less"),
    (LLAMA, {"num_attention_heads": -4}, "zero or less"),
    (LLAMA, {"hidden_size": 0}, "zero or less"),
    (LLAMA, {"num_hidden_layers": 0}, "zero or less"),
    (LLAMA, {"vocab_size": -1}, "zero or less"),
    (LLAMA, {"head_dim": 0}, "zero or less"),
    (LLAMA, {"num_attention_heads": 7, "num_key_value_heads": 3, "head_dim": 16}, "not a multiple of num_key_value"),
    (LLAMA, {"num_attention_heads": 4, "num_key_value_heads": 8}, "not a multiple of num_key_value"),
    (LLAMA, {"num_attention_heads": 6, "num_key_value_heads": 4, "head_dim": 16}, "not a multiple of num_key_value"),
    (LLAMA, {"num_attention_heads": 5, "num_key_value_heads": 5}, "not a multiple of num_attention_heads"),
    (LLAMA, {"head_dim": 15}, "odd"),
    (LLAMA, {"num_hidden_layers": 513}, "at most 512"),
    (config(), {"num_attention_heads": 0}, "zero or less"),
    (config(), {"num_attention_heads": 8, "num_key_value_heads": 3}, "not a multiple of num_key_value"),
    (GPT_OSS, {"num_experts_per_tok": 5}, "more than num_local_experts"),
    (GPT_OSS, {"num_local_experts": 2000}, "at most 1024"),
    (GPT_OSS, {"intermediate_size": 48}, "multiples of 32"),
    (GPT_OSS, {"hidden_size": 80}, "multiples of 32"),
    (GPT_OSS, {"rope_scaling": [1, 2]}, "rope_scaling must be an object"),
    # values of the wrong kind
    (LLAMA, {"hidden_size": "64"}, "must be a whole number"),
    (LLAMA, {"hidden_size": 64.5}, "must be a whole number"),
    (LLAMA, {"num_attention_heads": True}, "must be a whole number"),
    (LLAMA, {"num_key_value_heads": [2]}, "must be a whole number"),
    (LLAMA, {"rope_theta": 0}, "rope_theta must be a positive number"),
    (LLAMA, {"rms_norm_eps": "small"}, "rms_norm_eps must be a positive number"),
    (LLAMA, {"architectures": "LlamaForCausalLM"}, "is not one synth writes"),
    (LLAMA, {"architectures": [["LlamaForCausalLM"]]}, "is not one synth writes"),
])
def test_a_shape_llama_cpp_cannot_load_is_one_line_before_anything_is_written(base, changes, message):
    with pytest.raises(InputError, match=message):
        spec_from_config({**base, **changes}, "bad")


@pytest.mark.parametrize("heads, kv_heads", [(1, 1), (4, 1), (4, 2), (4, 4), (6, 3), (6, 2), (12, 4), (8, 8)])
def test_every_whole_grouping_of_query_heads_is_accepted(heads, kv_heads):
    spec = spec_from_config({**LLAMA, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                             "head_dim": 16}, "ok")
    assert (spec.heads, spec.kv_heads) == (heads, kv_heads)


@pytest.mark.parametrize("name", ["host-qwen-152k", "host-gpt-oss-201k"])
def test_host_work_shapes_keep_a_real_vocabulary_on_one_tiny_layer(name):
    spec = spec_like(name)
    real = spec_like("Qwen2.5-Math-1.5B-Instruct" if "qwen" in name else "gpt-oss-120b")
    assert (spec.architecture, spec.vocab) == (real.architecture, real.vocab)
    assert spec.layers == 1 and spec.hidden == 64 and not spec.tied_embeddings
    assert spec.n_params < 0.02 * real.n_params


@pytest.mark.parametrize("hidden", [64, 1536, 2880])
@pytest.mark.parametrize("logit_std", [None, 1.0, 8.0])
def test_the_head_is_scaled_to_the_logit_spread_asked_for(hidden, logit_std):
    from aimo_gguf.gguf.synthetic import INIT_STD, head_scale

    spec = spec_from_config(config(hidden_size=hidden, num_attention_heads=hidden // 32), "t")
    scale = head_scale(spec, logit_std)
    # A logit sums `hidden` products of the head's weights with unit-variance inputs.
    assert INIT_STD * scale * hidden ** 0.5 == pytest.approx(logit_std if logit_std else INIT_STD * hidden ** 0.5)


@pytest.mark.parametrize("logit_std", [0.0, -1.0, 101.0])
def test_a_logit_spread_out_of_range_is_refused(tmp_path, logit_std):
    from aimo_gguf.synth import synth

    with pytest.raises(InputError, match="--logit-std must be in"):
        synth("host-qwen-152k", tmp_path / "m.gguf", logit_std=logit_std, progress=False)
