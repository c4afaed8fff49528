"""The synthetic GGUF file that ``aimo-gguf synth`` writes: a model's shapes (``SynthSpec``), every
tensor llama.cpp expects for them, random values, the tokenizer and the metadata.

Matrices are F16 values drawn from N(0, INIT_STD), tiled from one random pool
(so writing is as fast as the disk); norms are ones, biases zeros; gpt-oss
experts are MXFP4 blocks. The metadata marks the file synthetic (SYNTH_KEY).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..outputs import staged_file

SYNTH_KEY = "aimo_gguf.synthetic"  # metadata: True in every file synth writes
SYNTH_LIKE_KEY = "aimo_gguf.synthetic_like"  # metadata: the model whose shapes it has
SYNTH_LOGIT_STD_KEY = "aimo_gguf.synthetic_logit_std"  # metadata: the logits' spread asked for, if any
INIT_STD = 0.02  # the usual initializer scale
POOL = 1 << 22  # random values drawn once, tiled over every tensor
MXFP4_SCALE = 120  # E8M0 exponent byte of every MXFP4 block: 2^(120-127), values up to 6/128


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


F16, F32, MXFP4 = "f16", "f32", "mxfp4"


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


def _nbytes(shape: tuple[int, ...], kind: str) -> int:
    n = math.prod(shape)
    return n * 2 if kind == F16 else n * 4 if kind == F32 else n // 32 * 17


class _Values:
    """Random tensor contents, tiled from one pool: N(0, INIT_STD) F16, or MXFP4 blocks."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.f16 = (rng.standard_normal(POOL, dtype=np.float32) * INIT_STD).astype(np.float16)
        self.bytes = rng.integers(0, 256, POOL, dtype=np.uint8)
        self.rng = rng

    def _tile(self, pool: np.ndarray, n: int) -> np.ndarray:
        out = np.empty(n, dtype=pool.dtype)
        pos = 0
        while pos < n:
            start = int(self.rng.integers(0, len(pool) // 2))
            take = min(n - pos, len(pool) - start)
            out[pos:pos + take] = pool[start:start + take]
            pos += take
        return out

    def make(self, name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
        if kind == F32:
            fill = 1.0 if "norm" in name else 0.0
            return np.full(shape, fill, dtype=np.float32)
        if kind == F16:
            return self._tile(self.f16, math.prod(shape)).reshape(shape)
        rows = math.prod(shape[:-1])
        blocks = self._tile(self.bytes, rows * shape[-1] // 32 * 17).reshape(-1, 17)
        blocks[:, 0] = MXFP4_SCALE  # the block's scale; the 16 bytes after it are 32 random FP4 values
        return blocks.reshape(*shape[:-1], shape[-1] // 32 * 17)


# --- the file -----------------------------------------------------------------------------------------------


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


def write_tokenizer(source: str | Path | None, output: str | Path) -> Path:
    """A GGUF holding only ``source``'s tokenizer (no tensors; a few MiB): what ``synth --tokenizer``
    needs where the embedded model is not installed (the GPU check carries one)."""
    import gguf

    fields = tokenizer_fields(source)
    with staged_file(output, "the tokenizer") as staging:
        writer = gguf.GGUFWriter(str(staging), "llama")
        try:
            writer.add_name("tokenizer (aimo-gguf synth)")
            add_tokenizer(writer, fields, pad=0)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
        finally:
            writer.close()
    return Path(output)


# gpt-oss's special tokens at their o200k_harmony ids: a synthetic gpt-oss tokenizes harmony prompts to
# the real lengths, and llama.cpp finds <|return|> and <|call|> (end of generation) as in the real model.
HARMONY_TOKENS = {200002: "<|return|>", 200003: "<|constrain|>", 200005: "<|channel|>", 200006: "<|start|>",
                  200007: "<|end|>", 200008: "<|message|>", 200012: "<|call|>"}


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


def head_scale(spec: SynthSpec, logit_std: float | None) -> float:
    """What the output head's random values are multiplied by so the logits spread ``logit_std`` (1: as drawn).

    The head sees the output norm's result, whose entries have a mean square of 1 (unit norm weights),
    so a logit is a sum of ``hidden`` products of N(0, INIT_STD) weights: N(0, INIT_STD^2 hidden).
    """
    return 1.0 if logit_std is None else logit_std / (INIT_STD * math.sqrt(spec.hidden))


def write_f16(spec: SynthSpec, path: str | Path, *, seed: int = 0, progress=None, tokenizer=None,
              logit_std: float | None = None) -> Path:
    """Write the F16 (MXFP4 experts) GGUF of ``spec`` to ``path`` (not atomically: synth renames it);
    ``tokenizer``: the GGUF whose tokenizer it gets (default: the embedded model's); ``logit_std``: the
    spread of its logits (None: what N(0, INIT_STD) weights give, near-uniform distributions)."""
    import gguf

    path = Path(path)
    head = "token_embd.weight" if spec.tied_embeddings else "output.weight"
    scale = head_scale(spec, logit_std)
    fields = tokenizer_fields(tokenizer)
    n_tokens = len(fields["tokenizer.ggml.tokens"])
    if spec.vocab < n_tokens:
        raise InputError(f"{spec.name}: a vocabulary of {spec.vocab} is smaller than the tokenizer's {n_tokens}")
    writer = gguf.GGUFWriter(str(path), spec.architecture)
    try:
        write_metadata(writer, spec)
        if logit_std is not None:
            writer.add_float32(SYNTH_LOGIT_STD_KEY, float(logit_std))
        add_tokenizer(writer, fields, pad=spec.vocab - n_tokens,
                       specials=HARMONY_TOKENS if spec.architecture == "gpt-oss" else None)
        tensors = list(tensors_of(spec))
        for name, shape, kind in tensors:
            nbytes = _nbytes(shape, kind)
            if kind == MXFP4:
                byte_shape = (*shape[:-1], shape[-1] // 32 * 17)
                writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=gguf.GGMLQuantizationType.MXFP4)
            else:
                writer.add_tensor_info(name, shape, np.dtype(np.float16 if kind == F16 else np.float32), nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        values = _Values(seed)
        total = sum(_nbytes(s, k) for _, s, k in tensors)
        done, last = 0, time.monotonic()
        for name, shape, kind in tensors:
            data = values.make(name, shape, kind)
            writer.write_tensor_data(data * np.float16(scale) if name == head and scale != 1.0 else data)
            done += _nbytes(shape, kind)
            if progress is not None and time.monotonic() - last >= 5:
                last = time.monotonic()
                progress(f"writing {path.name}: {done / 2**30:.1f} of {total / 2**30:.1f} GiB")
    finally:
        writer.close()  # its file handle, whatever happened (synth removes a partial file)
    return path


# The architecture's hyperparameters every synthetic file carries: GGUFWriter's add_ method, SynthSpec's field.
_HPARAM_KEYS = (
    ("context_length", "ctx_train"), ("embedding_length", "hidden"), ("block_count", "layers"),
    ("feed_forward_length", "ffn"), ("head_count", "heads"), ("head_count_kv", "kv_heads"),
    ("rope_freq_base", "rope_theta"), ("layer_norm_rms_eps", "rms_eps"), ("key_length", "head_dim"),
    ("value_length", "head_dim"), ("vocab_size", "vocab"),
)


def write_metadata(writer, spec: SynthSpec) -> None:
    from gguf import LlamaFileType, RopeScalingType

    a = spec.architecture
    writer.add_name(f"synthetic {spec.name}")
    writer.add_string("general.description", "random weights with the shapes of " + spec.name
                      + " (aimo-gguf synth): for measuring speed and memory; its answers mean nothing")
    writer.add_bool(SYNTH_KEY, True)
    writer.add_string(SYNTH_LIKE_KEY, spec.name)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    for key, value in _HPARAM_KEYS:  # GGUFWriter.add_<key>(spec.<value>)
        getattr(writer, f"add_{key}")(getattr(spec, value))
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


def f16_bytes(spec: SynthSpec) -> int:
    """Bytes of the F16 file's tensors."""
    return sum(_nbytes(s, k) for _, s, k in tensors_of(spec))
