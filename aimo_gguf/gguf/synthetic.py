"""A model's shapes as GGUF content: ``SynthSpec``, its tensors under llama.cpp's names, its metadata,
and a BPE tokenizer copied from another GGUF.

``aimo-gguf synth`` writes whole models with them, and the engine's CPU probe
(``aimo_gguf.engine.probe``) its tiny test model: here, below both, so the
engine never imports the synth command.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

SYNTH_KEY = "aimo_gguf.synthetic"  # metadata: True in every file synth writes
SYNTH_LIKE_KEY = "aimo_gguf.synthetic_like"  # metadata: the model whose shapes it has
SYNTH_LOGIT_STD_KEY = "aimo_gguf.synthetic_logit_std"  # metadata: the logits' spread asked for, if any
F16, F32, MXFP4 = "f16", "f32", "mxfp4"  # how each tensor is stored


@dataclass(frozen=True)
class SynthSpec:
    """The shapes of one model, as its config.json gives them."""

    name: str
    architecture: str  # llama.cpp's: qwen2, llama, gpt-oss
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # dense FFN width (the expert width for gpt-oss)
    vocab: int
    tied_embeddings: bool
    ctx_train: int
    rope_theta: float
    rms_eps: float
    experts: int = 0
    experts_used: int = 0
    sliding_window: int = 0
    rope_scaling: dict | None = None

    @property
    def n_params(self) -> int:
        """Parameters of the model (what a real checkpoint of this shape holds)."""
        return sum(math.prod(shape) for _, shape, _ in tensors_of(self))


def tensors_of(spec: SynthSpec) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, kind) of every tensor, in llama.cpp's names; numpy shape = GGUF ne reversed."""
    d, hd, v = spec.hidden, spec.head_dim, spec.vocab
    q, kv = spec.heads * hd, spec.kv_heads * hd
    yield "token_embd.weight", (v, d), F16
    yield "output_norm.weight", (d,), F32
    if not spec.tied_embeddings:
        yield "output.weight", (v, d), F16
    for i in range(spec.layers):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (d,), F32
        yield b + "attn_q.weight", (q, d), F16
        yield b + "attn_k.weight", (kv, d), F16
        yield b + "attn_v.weight", (kv, d), F16
        if spec.architecture in ("qwen2", "gpt-oss"):
            yield b + "attn_q.bias", (q,), F32
            yield b + "attn_k.bias", (kv,), F32
            yield b + "attn_v.bias", (kv,), F32
        yield b + "attn_output.weight", (d, q), F16
        if spec.architecture == "gpt-oss":
            e, f = spec.experts, spec.ffn
            yield b + "attn_output.bias", (d,), F32
            yield b + "attn_sinks.weight", (spec.heads,), F32
            yield b + "post_attention_norm.weight", (d,), F32
            yield b + "ffn_gate_inp.weight", (e, d), F16
            yield b + "ffn_gate_inp.bias", (e,), F32
            yield b + "ffn_gate_exps.weight", (e, f, d), MXFP4
            yield b + "ffn_gate_exps.bias", (e, f), F32
            yield b + "ffn_up_exps.weight", (e, f, d), MXFP4
            yield b + "ffn_up_exps.bias", (e, f), F32
            yield b + "ffn_down_exps.weight", (e, d, f), MXFP4
            yield b + "ffn_down_exps.bias", (e, d), F32
        else:
            yield b + "ffn_norm.weight", (d,), F32
            yield b + "ffn_gate.weight", (spec.ffn, d), F16
            yield b + "ffn_up.weight", (spec.ffn, d), F16
            yield b + "ffn_down.weight", (d, spec.ffn), F16


TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                  "tokenizer.ggml.eos_token_id")
OPTIONAL_TOKENIZER_KEYS = ("tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template")


def tokenizer_fields(source: str | Path | None) -> dict:
    """The tokenizer metadata synth copies: from ``source`` (any GGUF with a BPE tokenizer: a model,
    or a file ``write_tokenizer`` wrote), else from the embedded model."""
    from .header import read_header

    if source is None:
        from .files import default_model_path

        source = default_model_path()
    elif not Path(source).is_file():
        raise InputError(f"tokenizer file {source} not found")
    fields = read_header(str(source), strings=("tokenizer.ggml.tokens", "tokenizer.ggml.merges")).fields
    missing = [k for k in TOKENIZER_KEYS if k not in fields]
    if missing:
        raise InputError(f"{source} has no usable tokenizer (missing {', '.join(missing)})")
    if fields["tokenizer.ggml.model"] != "gpt2":
        raise InputError(f"{source}: synth needs a BPE ('gpt2') tokenizer, not {fields['tokenizer.ggml.model']!r}")
    return {k: fields[k] for k in TOKENIZER_KEYS + OPTIONAL_TOKENIZER_KEYS if k in fields}


def add_tokenizer(writer, fields: dict, *, pad: int, specials: dict[int, str] | None = None) -> None:
    from gguf import TokenType

    field = fields.__getitem__
    tokens = list(field("tokenizer.ggml.tokens")) + [f"<|synth_pad_{i}|>" for i in range(pad)]
    types = list(field("tokenizer.ggml.token_type")) + [int(TokenType.UNUSED)] * pad
    known = set(tokens[:len(tokens) - pad])
    for token_id, text in (specials or {}).items():
        # Only in the padding, and only tokens the tokenizer lacks: llama.cpp refuses a vocabulary
        # where two ids spell the same token.
        if len(tokens) - pad <= token_id < len(tokens) and text not in known:
            tokens[token_id], types[token_id] = text, int(TokenType.CONTROL)
    writer.add_tokenizer_model(field("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(field("tokenizer.ggml.merges")))
    writer.add_bos_token_id(int(field("tokenizer.ggml.bos_token_id")))
    writer.add_eos_token_id(int(field("tokenizer.ggml.eos_token_id")))
    if "tokenizer.ggml.padding_token_id" in fields:
        writer.add_pad_token_id(int(field("tokenizer.ggml.padding_token_id")))
    if "tokenizer.ggml.add_bos_token" in fields:
        writer.add_add_bos_token(bool(field("tokenizer.ggml.add_bos_token")))
    if "tokenizer.chat_template" in fields:
        writer.add_chat_template(field("tokenizer.chat_template"))


def write_metadata(writer, spec: SynthSpec) -> None:
    from gguf import LlamaFileType, RopeScalingType

    a = spec.architecture
    writer.add_name(f"synthetic {spec.name}")
    writer.add_string("general.description", "random weights with the shapes of " + spec.name
                      + " (aimo-gguf synth): for measuring speed and memory; its answers mean nothing")
    writer.add_bool(SYNTH_KEY, True)
    writer.add_string(SYNTH_LIKE_KEY, spec.name)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(spec.ctx_train)
    writer.add_embedding_length(spec.hidden)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.ffn)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_vocab_size(spec.vocab)
    if a == "llama":
        writer.add_rope_dimension_count(spec.head_dim)
    if a == "gpt-oss":
        writer.add_expert_count(spec.experts)
        writer.add_expert_used_count(spec.experts_used)
        writer.add_expert_feed_forward_length(spec.ffn)
        writer.add_sliding_window(spec.sliding_window)
        scaling = spec.rope_scaling or {}
        if scaling.get("rope_type") == "yarn":
            writer.add_rope_scaling_type(RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(scaling.get("factor", 1.0)))
            writer.add_rope_scaling_orig_ctx_len(int(scaling.get("original_max_position_embeddings", spec.ctx_train)))
