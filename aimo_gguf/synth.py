"""``aimo-gguf synth``: a GGUF with random weights and the exact shapes of a real model.

Speed and memory depend on a model's shapes and types, not on its weight
values, so a random-weight file of the right shape measures what the real
one costs (``aimo-gguf bench``, ``info``, the memory estimate) without a
download. ``like`` is a registry model (``aimo-gguf models``) or a Hugging
Face ``config.json``; the architectures are ``qwen2`` (Qwen2.5-Math,
R1-Distill-Qwen, OpenMath-Nemotron, QwQ), ``llama`` and ``gpt-oss`` (mixture
of experts with MXFP4 experts, sliding-window layers, attention sinks).

How it is written:

- every tensor llama.cpp's loader expects for the architecture, at its real
  shape; matrices are F16 values drawn from N(0, 0.02) (tiled from one random
  pool, so writing is as fast as the disk); norms are ones, biases zeros;
  gpt-oss experts are written directly in MXFP4 (random 4-bit values under one
  power-of-two scale), as the real checkpoints ship them;
- the vocabulary is the embedded SmolLM2 tokenizer (a real BPE tokenizer and
  chat template), or the BPE tokenizer of another GGUF (``tokenizer``), padded
  with unused tokens to the real vocabulary size;
- the metadata says what it is (``general.name`` "synthetic ...",
  ``aimo_gguf.synthetic``), and ``run`` warns when it is used for answers;
- the F16 file is then quantized through the binding (``aimo-gguf quantize``)
  to ``type`` (default Q4_K_M; MXFP4_MOE for gpt-oss, which keeps the experts
  MXFP4 and makes the rest Q8_0), and every output is written under a
  temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError
from .gguf.synthetic import (
    F16,
    F32,
    MXFP4,
    SYNTH_LOGIT_STD_KEY,
    SynthSpec,
    add_tokenizer,
    tensors_of,
    tokenizer_fields,
    write_metadata,
)
from .outputs import check_writable, replace_file, staged_file, staging_folder

INIT_STD = 0.02  # the usual initializer scale
POOL = 1 << 22  # random values drawn once, tiled over every tensor
MXFP4_SCALE = 120  # E8M0 exponent byte of every MXFP4 block: 2^(120-127), values up to 6/128
ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
                 "GptOssForCausalLM": "gpt-oss"}
DEFAULT_TYPES = {"qwen2": "Q4_K_M", "llama": "Q4_K_M", "gpt-oss": "MXFP4_MOE"}
# Shapes worth measuring that the registry does not recommend (config.json numbers).
EXTRA_SHAPES = {
    "Qwen2.5-0.5B-Instruct": {
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
        "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06},
    "Llama-3.2-1B-Instruct": {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192,
        "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 131072,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-05},
    # Host work: one tiny layer and a real vocabulary, so a step is mostly the output head, the logits and
    # what the engine does with them (sampling, confidence, bookkeeping) at the sizes users sample from.
    "host-qwen-152k": {
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 151936,
        "tie_word_embeddings": False, "max_position_embeddings": 32768, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-06},
    "host-gpt-oss-201k": {
        "architectures": ["GptOssForCausalLM"], "hidden_size": 64, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 64, "num_experts_per_tok": 2,
        "sliding_window": 128, "rms_norm_eps": 1e-05, "rope_scaling": {
            "rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096},
        "num_hidden_layers": 1, "num_local_experts": 4, "vocab_size": 201088, "tie_word_embeddings": False,
        "max_position_embeddings": 131072, "rope_theta": 150000.0},
}
# --logit-std that gives random weights distributions shaped like a trained model's on math text (see README,
# Speed): most of the mass on a few tokens, a long thin tail.
PEAKED_LOGIT_STD = 8.0


# llama.cpp's limits a config must keep (llama-hparams.h of the vendored source; the binding exposes neither).
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
MXFP4_BLOCK = 32  # values per MXFP4 block: gpt-oss's expert rows must be whole blocks


def _whole(config: dict, key: str, name: str, default: int | None = None) -> int:
    """``config[key]`` as a whole number (an integral float too), or a one-line error naming it."""
    value = config.get(key, default) if default is not None else config.get(key)
    if value is None:
        raise InputError(f"{name}: config.json lacks a usable '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InputError(f"{name}: config.json's {key} must be a whole number, got {value!r}")
    return int(value)


def _positive_number(config: dict, key: str, name: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}: config.json's {key} must be a positive number, got {value!r}")
    return float(value)


def spec_from_config(config: dict, name: str) -> SynthSpec:
    """A SynthSpec from a Hugging Face config.json, checked against what llama.cpp can load: a file
    synth writes never aborts llama.cpp later."""
    if not isinstance(config, dict):
        raise InputError(f"{name}: config.json is not a JSON object")
    archs = config.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in ARCHITECTURES), None) \
        if isinstance(archs, list) else None
    if arch is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise InputError(f"{name}: architecture {archs or 'unknown'} is not one synth writes ({known})")
    sizes = {key: _whole(config, key, name) for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                        "intermediate_size", "vocab_size")}
    sizes["num_key_value_heads"] = _whole(config, "num_key_value_heads", name, sizes["num_attention_heads"])
    for key in ("num_local_experts", "num_experts_per_tok", "sliding_window", "max_position_embeddings"):
        sizes[key] = _whole(config, key, name, 0) if config.get(key) is not None else 0
    if config.get("head_dim") is not None:
        sizes["head_dim"] = _whole(config, "head_dim", name)
    zero = [key for key, value in sizes.items() if value < 0 or (value == 0 and key not in (
        "num_local_experts", "num_experts_per_tok", "sliding_window", "max_position_embeddings"))]
    if zero:
        raise InputError(f"{name}: config.json has a size of zero or less ({', '.join(zero)})")
    hidden, heads, kv_heads = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_key_value_heads"]
    if "head_dim" not in sizes and hidden % heads and arch != "qwen2":  # qwen2's own rule below says more
        raise InputError(f"{name}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} "
                         f"(and no head_dim is given)")
    scaling = config.get("rope_scaling") if arch == "gpt-oss" else None
    if scaling is not None and not isinstance(scaling, dict):
        raise InputError(f"{name}: config.json's rope_scaling must be an object, got {scaling!r}")
    spec = SynthSpec(
        name=name, architecture=arch, hidden=hidden, layers=sizes["num_hidden_layers"], heads=heads,
        kv_heads=kv_heads, head_dim=sizes.get("head_dim") or hidden // heads, ffn=sizes["intermediate_size"],
        vocab=sizes["vocab_size"], tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        ctx_train=sizes["max_position_embeddings"] or 4096,
        rope_theta=_positive_number(config, "rope_theta", name, 10000.0),
        rms_eps=_positive_number(config, "rms_norm_eps", name, 1e-6),
        experts=sizes["num_local_experts"], experts_used=sizes["num_experts_per_tok"],
        sliding_window=sizes["sliding_window"] if arch == "gpt-oss" else 0, rope_scaling=scaling,
    )
    check_spec(spec)
    return spec


def check_spec(spec: SynthSpec) -> None:
    """One line for a shape llama.cpp would refuse or abort on (``GGML_ASSERT``) when the file is loaded."""
    name = spec.name
    problems = [
        (spec.architecture != "qwen2" or spec.heads * spec.head_dim == spec.hidden,
         "qwen2 needs heads x head_dim = hidden size"),
        (spec.heads % spec.kv_heads == 0,
         f"num_attention_heads {spec.heads} is not a multiple of num_key_value_heads {spec.kv_heads}: each KV "
         f"head serves a whole number of query heads"),
        (spec.head_dim % 2 == 0, f"head_dim {spec.head_dim} is odd: rotary embeddings turn pairs of values"),
        (spec.layers <= MAX_LAYERS, f"{spec.layers} layers: llama.cpp loads at most {MAX_LAYERS} (LLAMA_MAX_LAYERS)"),
    ]
    if spec.architecture == "gpt-oss":
        problems += [
            (spec.experts and spec.experts_used, "a gpt-oss config needs num_local_experts and num_experts_per_tok"),
            (spec.experts <= MAX_EXPERTS,
             f"{spec.experts} experts: llama.cpp loads at most {MAX_EXPERTS} (LLAMA_MAX_EXPERTS)"),
            (spec.experts_used <= spec.experts,
             f"num_experts_per_tok {spec.experts_used} is more than num_local_experts {spec.experts}"),
            (spec.hidden % MXFP4_BLOCK == 0 and spec.ffn % MXFP4_BLOCK == 0,
             f"hidden_size {spec.hidden} and intermediate_size {spec.ffn} must be multiples of {MXFP4_BLOCK} "
             f"(the experts are MXFP4 blocks of {MXFP4_BLOCK})"),
        ]
    for ok, message in problems:
        if not ok:
            raise InputError(f"{name}: {message}")


def spec_like(like: str | Path) -> SynthSpec:
    """The shapes of ``like``: a registry model's name, or a config.json (or the folder holding one)."""
    path = Path(like)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {path}: {e}") from None
        name = (config.get("_name_or_path") if isinstance(config, dict) else None) or path.parent.name or path.stem
        return spec_from_config(config, str(name))
    shapes = _shapes()
    name = next((n for n in shapes if n.lower() == str(like).lower()), None)
    if name is None:
        raise InputError(f"{like!r} is neither a config.json nor a known model; known: {', '.join(sorted(shapes))}")
    return spec_from_config(shapes[name], name)


def _shapes() -> dict[str, dict]:
    from .models import load_registry

    return {**EXTRA_SHAPES, **{e.name: e.config for e in load_registry() if e.config}}


def known_shapes() -> list[str]:
    """The names ``like`` takes besides a config.json."""
    return sorted(_shapes())


# --- the tensors ------------------------------------------------------------------------------------------

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


def f16_bytes(spec: SynthSpec) -> int:
    """Bytes of the F16 file's tensors."""
    return sum(_nbytes(s, k) for _, s, k in tensors_of(spec))


def synth(
    like: str | Path,
    output: str | Path,
    *,
    type: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    tokenizer: str | Path | None = None,
    logit_std: float | None = None,
) -> Path:
    """Write a random-weight GGUF with the shapes of ``like`` to ``output``, quantized to ``type``;
    its vocabulary is ``tokenizer``'s (a GGUF; default: the embedded model's) padded to the real size;
    ``logit_std`` spreads its logits that much (PEAKED_LOGIT_STD: peaked like a trained model's)."""
    from .engine.limits import check_threads
    from .quantize import check_type, quantize

    check_threads(threads)
    spec = spec_like(like)
    if logit_std is not None and not 0 < logit_std <= 100:
        raise InputError(f"--logit-std must be in (0, 100], got {logit_std}")
    name = check_type(type or DEFAULT_TYPES[spec.architecture])
    output = Path(output)
    check_writable(output, "the model")  # a folder, FIFO or device is refused before "already exists"
    if output.exists() and not force:
        raise InputError(f"{output} already exists: delete it, choose another name, or pass --force")
    say = _say if progress else (lambda text: None)
    need = f16_bytes(spec) * (1 if name == "F16" else 2)
    free = shutil.disk_usage(output.parent).free
    if need > free:
        raise InputError(f"{spec.name} needs about {need / 2**30:.1f} GiB free in {output.parent} "
                         f"({free / 2**30:.1f} GiB free)")
    say(f"{spec.name}: {spec.architecture}, {spec.n_params / 1e9:.2f} B parameters, vocabulary {spec.vocab}; "
        f"writing F16 then {name}")
    t0 = time.monotonic()
    with staging_folder(output.parent, "the model") as staging:
        f16 = staging / "f16.gguf"
        try:
            write_f16(spec, f16, seed=seed, progress=say, tokenizer=tokenizer, logit_std=logit_std)
            say(f"F16 written in {time.monotonic() - t0:.0f} s")
            if name == "F16":
                replace_file(f16, output, "the model")
            else:
                quantize(f16, output, type=name, threads=threads, force=force, allow_requantize=True,
                         progress=progress)
        except OSError as e:
            raise OutputError(f"cannot write {output}: {e.strerror or e}") from None
    say(f"{output} ({output.stat().st_size / 2**30:.2f} GiB) in {time.monotonic() - t0:.0f} s")
    return output


def describe(spec: SynthSpec, type: str | None = None) -> dict:
    """The shapes, the parameters and the sizes synth would write (``--dry-run``)."""
    from .convert import BITS_PER_WEIGHT

    name = (type or DEFAULT_TYPES[spec.architecture]).upper()
    f16 = f16_bytes(spec)
    bits = BITS_PER_WEIGHT.get(name)
    return {**asdict(spec), "n_params": spec.n_params, "type": name, "f16_bytes": f16,
            "output_bytes_about": int(spec.n_params * bits / 8) if bits else None}


def _say(text: str) -> None:
    print(f"aimo-gguf synth: {text}", file=sys.stderr, flush=True)
