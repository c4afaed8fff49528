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

from .errors import InputError, OutputError
from .gguf.synthetic import SynthSpec, f16_bytes, write_f16
from .outputs import check_writable, replace_file, staging_folder

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
