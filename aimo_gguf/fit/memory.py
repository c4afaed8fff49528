"""How much memory a GGUF model needs, before loading it.

Everything llama.cpp allocates for a run, measured on synthetic models of real
shapes (Qwen2.5 0.5B, 1.5B and 7B, 152k vocabulary; see the README's Memory
section), each part counted where llama.cpp puts it:

- weights: the tensors' bytes as stored (memory-mapped on the CPU). Block ``i``
  goes to the GPU when it is one of the last ``n_gpu_layers`` blocks; the
  output head goes with ``n_gpu_layers > n_layers``; token embeddings stay on
  the CPU.
- repacked weights (CPU): the CPU backend copies the tensors it has faster
  kernels for (Q4_0, Q4_K, IQ4_NL, MXFP4 with AVX2 on x86; more types on ARM)
  into a second, interleaved buffer. The mapped originals stay resident too:
  a Q4_K_M 7B model takes 4.4 GiB mapped plus 2.9 GiB repacked.
- KV cache: for each layer, ``(n_head_kv * key_length + n_head_kv * value_length)``
  elements per cell at the KV type's size; ``pad256(ctx)`` cells per sequence,
  sliding-window layers ``pad256(min(ctx, window + n_ubatch))``. It lives with
  its layer's weights.
- the output buffer: one row of float logits per sequence (CPU).
- the compute buffer: what one micro-batch of 512 tokens needs, on each
  device. ``measure()`` takes llama.cpp's own figure (a ``no_alloc`` load and
  context, nothing allocated); ``estimate()`` alone uses a formula fitted to it.
- sampler chains (CPU): each sequence's chain keeps a candidates array of the
  whole vocabulary (12 bytes a token).
- the vocabulary and loader tables (CPU): measured by ``measure()``, else
  about 174 bytes a token and 128 a merge.
- a fixed runtime overhead (allocator, thread pools, Python objects).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..engine.api import N_UBATCH
from ..errors import InputError, ModelError

KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per element (blocks of 32)
CELL_PAD = 256  # llama.cpp pads each sequence's KV cells to a multiple of this
RUNTIME_OVERHEAD = 16 * 2**20  # measured: RSS growth beyond everything counted below, 13-20 MiB
SAMPLER_BYTES_PER_TOKEN = 12  # llama_token_data (id, logit, p) of the chain's candidates array
VOCAB_BYTES_PER_TOKEN = 174  # llama.cpp's vocabulary tables, measured with vocabulary-only loads
VOCAB_BYTES_PER_MERGE = 128
# Tensor types the CPU backend repacks (ggml-cpu/repack.cpp), by the feature that enables it, when the
# tensor's second dimension is a multiple of the interleave (8 on x86, 4 or 8 on ARM).
REPACK_TYPES = {"AVX2": {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}, "AVX512": {"Q2_K"},
                "DOTPROD": {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"}}
NOT_REPACKED = ("token_embd.weight",)  # looked up by rows (get_rows), not multiplied: kept as mapped
# Layers that use a sliding window, by architecture: every layer whose index
# mod N is below N - 1 (llama.cpp's set_swa_pattern), unless the GGUF says.
SWA_PATTERNS = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5, "olmo2": 4, "exaone4": 4, "gpt-oss": 2}
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 2**10, "M": 1e6, "MB": 1e6, "MIB": 2**20,
          "G": 1e9, "GB": 1e9, "GIB": 2**30, "T": 1e12, "TB": 1e12, "TIB": 2**40}


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate (and ``aimo-gguf info``) needs from a GGUF file."""

    name: str  # general.name, or the file name
    file_type: str  # llama.cpp's file type, e.g. "Q4_K_M"
    n_params: int  # elements of every tensor
    file_bytes: int  # size on disk
    has_chat_template: bool
    architecture: str
    n_layers: int
    n_ctx_train: int
    n_vocab: int
    block_bytes: tuple[int, ...]  # weight bytes of each block
    output_bytes: int  # output head and final norm: offloaded only with n_gpu_layers > n_layers
    input_bytes: int  # token embeddings and anything else outside the blocks: CPU
    kv_elements: tuple[int, ...]  # K + V elements per cell, per layer
    swa_layers: tuple[bool, ...]  # which layers use the sliding window
    sliding_window: int  # 0 = none
    block_repack: tuple[int, ...] = ()  # bytes of each block the CPU backend repacks (on this CPU)
    output_repack: int = 0  # the same for the output head
    n_embd: int = 0
    n_ff: int = 0  # FFN width (per expert for a mixture of experts)
    n_experts_used: int = 0  # experts active per token (0: a dense model)
    n_merges: int = 0  # BPE merges of the tokenizer
    synthetic_like: str | None = None  # written by aimo-gguf synth with the shapes of this model

    @property
    def weight_bytes(self) -> int:
        return sum(self.block_bytes) + self.output_bytes + self.input_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a configuration needs, split between CPU and GPU (see the module docstring)."""

    weights_cpu: int  # weights on the CPU, memory-mapped
    weights_gpu: int
    kv_cpu: int
    kv_gpu: int
    kv_per_sequence: int  # KV bytes of one sequence, all layers
    output: int  # logits buffer (CPU)
    overhead: int  # fixed runtime overhead (CPU)
    n_gpu_layers: int  # layers offloaded, after clamping -1 to all
    repack_cpu: int = 0  # the CPU backend's repacked copies of the weights it keeps
    compute_cpu: int = 0  # compute buffer (and pinned host staging) in RAM
    compute_gpu: int = 0  # compute buffer on the GPU
    samplers: int = 0  # the sequences' sampler chains (CPU)
    vocab: int = 0  # the vocabulary and loader tables (CPU)
    source: str = "arithmetic"  # "llama.cpp": compute and vocabulary from a simulated load

    @property
    def cpu(self) -> int:
        return (self.weights_cpu + self.repack_cpu + self.kv_cpu + self.output + self.compute_cpu + self.samplers
                + self.vocab + self.overhead)

    @property
    def gpu(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu

    @property
    def total(self) -> int:
        return self.cpu + self.gpu


@lru_cache(maxsize=8)
def read_shape(path: str | Path) -> ModelShape:
    """Read the layer layout and tensor sizes of a GGUF file (header only, memory-mapped)."""
    from ..gguf.header import read_header

    return shape_of(read_header(path), path)


def shape_of(header, path: str | Path) -> ModelShape:
    """The shape of the model at ``path`` from its header (``aimo_gguf.gguf.header.read_header``), for a
    caller that has read it already (the load plan)."""
    from ..gguf.parts import model_bytes

    fields = header.fields

    def get(key, default=None):
        return fields.get(key, default)

    arch = get("general.architecture")
    if not arch:
        raise ModelError(f"{path} has no general.architecture: not a model GGUF")
    n_layers = int(get(f"{arch}.block_count", 0))
    if n_layers <= 0:
        raise ModelError(f"{path} has no {arch}.block_count")
    n_embd = int(get(f"{arch}.embedding_length"))
    n_head = _per_layer(get(f"{arch}.attention.head_count"), n_layers)
    n_head_kv = _per_layer(get(f"{arch}.attention.head_count_kv", None) or n_head, n_layers)
    head_dim = n_embd // max(n_head)
    k_len = int(get(f"{arch}.attention.key_length", head_dim))
    v_len = int(get(f"{arch}.attention.value_length", head_dim))
    kv_elements = tuple(h * (k_len + v_len) for h in n_head_kv)

    window = int(get(f"{arch}.attention.sliding_window", 0) or 0)
    pattern = get(f"{arch}.attention.sliding_window_pattern")
    if window <= 0:
        swa = (False,) * n_layers
    elif isinstance(pattern, list):
        swa = tuple(bool(x) for x in pattern[:n_layers])
    else:
        n = int(pattern) if pattern is not None else SWA_PATTERNS.get(arch, 0)
        # Unknown pattern: count every layer as full attention (an overestimate).
        swa = tuple(n > 0 and i % n < n - 1 for i in range(n_layers))

    blocks = [0] * n_layers
    repack = [0] * n_layers
    output = other = output_repack = 0
    repackable = _repackable_types()
    for tensor in header.tensors:
        n_bytes = tensor.n_bytes
        packs = (tensor.type_name in repackable and tensor.name not in NOT_REPACKED
                 and len(tensor.shape) > 1 and tensor.shape[1] % 8 == 0)
        m = _BLOCK.match(tensor.name)
        if m and int(m.group(1)) < n_layers:
            blocks[int(m.group(1))] += n_bytes
            repack[int(m.group(1))] += n_bytes if packs else 0
        elif tensor.name.startswith(("output.", "output_norm.")):
            output += n_bytes
            output_repack += n_bytes if packs else 0
        else:
            other += n_bytes
    tokens = fields.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if tokens is not None else int(get(f"{arch}.vocab_size", 0))
    return ModelShape(
        name=str(get("general.name", Path(path).name)),
        file_type=_file_type_name(get("general.file_type")),
        n_params=sum(math.prod(t.shape) for t in header.tensors),
        file_bytes=model_bytes(path),
        has_chat_template="tokenizer.chat_template" in fields,
        architecture=arch,
        n_layers=n_layers,
        n_ctx_train=int(get(f"{arch}.context_length", 0)),
        n_vocab=n_vocab,
        block_bytes=tuple(blocks),
        output_bytes=output,
        input_bytes=other,
        kv_elements=kv_elements,
        swa_layers=swa,
        sliding_window=window,
        block_repack=tuple(repack),
        output_repack=output_repack,
        n_embd=n_embd,
        n_ff=int(get(f"{arch}.expert_feed_forward_length", 0) or 0) or _first(get(f"{arch}.feed_forward_length", 0)),
        n_experts_used=int(get(f"{arch}.expert_used_count", 0) or 0),
        n_merges=len(fields.get("tokenizer.ggml.merges", ())),
        synthetic_like=str(get("aimo_gguf.synthetic_like")) if get("aimo_gguf.synthetic") else None,
    )


def _first(value) -> int:
    return int(value[0] if isinstance(value, list) else value or 0)


@lru_cache(maxsize=1)
def _repackable_types() -> frozenset[str]:
    """The tensor types this machine's CPU backend repacks (empty where llama.cpp does not repack)."""
    try:
        from ..engine.llama import cpu_features

        features = cpu_features()
    except Exception:  # no llama.cpp to ask: assume no repacking
        return frozenset()
    if "REPACK" not in features:
        return frozenset()
    types: set[str] = set()
    for feature, names in REPACK_TYPES.items():
        if feature in features:
            types |= names
    return frozenset(types)


def _file_type_name(value) -> str:
    if value is None:
        return "unknown"
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(value)).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file type {value}"


def _per_layer(value, n_layers: int) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value[:n_layers]]
    return [int(value)] * n_layers


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def estimate(
    shape: ModelShape,
    *,
    ctx: int,
    batch_size: int,
    n_gpu_layers: int = 0,
    kv_type: str = "f16",
    measured: dict | None = None,
) -> MemoryEstimate:
    """Memory of ``batch_size`` sequences of ``ctx`` tokens each, with per-sequence KV.

    ``measured``: llama.cpp's own compute and output buffers and the loader's
    heap for this configuration (``aimo_gguf.engine.simulate``);
    without it they come from formulas fitted to such measurements.
    """
    if kv_type not in KV_TYPE_BYTES:
        raise InputError(f"KV cache type must be one of {', '.join(KV_TYPE_BYTES)}, got {kv_type!r}")
    n_layers = shape.n_layers
    offloaded = n_layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layers + 1)
    first_gpu_block = n_layers - min(offloaded, n_layers)
    cells_full = _pad(ctx)
    cells_swa = _pad(min(ctx, shape.sliding_window + N_UBATCH)) if shape.sliding_window else cells_full
    element = KV_TYPE_BYTES[kv_type]
    kv_cpu = kv_gpu = 0.0
    w_cpu, w_gpu = shape.input_bytes, 0
    repack = 0
    block_repack = shape.block_repack or (0,) * n_layers
    for i in range(n_layers):
        cells = cells_swa if shape.swa_layers[i] else cells_full
        kv = shape.kv_elements[i] * cells * element
        if i >= first_gpu_block:
            w_gpu += shape.block_bytes[i]
            kv_gpu += kv
        else:
            w_cpu += shape.block_bytes[i]
            kv_cpu += kv
            repack += block_repack[i]
    if offloaded > n_layers:
        w_gpu += shape.output_bytes
    else:
        w_cpu += shape.output_bytes
        repack += shape.output_repack
    source = "llama.cpp" if measured else "arithmetic"
    compute = _compute_bytes(shape, batch_size)
    cpu_share = first_gpu_block / n_layers if n_layers else 1.0
    compute_gpu = compute if offloaded else 0
    compute_cpu = int(compute * cpu_share) if offloaded else compute
    output = shape.n_vocab * 4 * batch_size
    vocab = _vocab_bytes(shape)
    if measured:
        sim_cpu, sim_gpu = _split_by_device(measured.get("compute", {}))
        if sim_gpu or not offloaded:
            compute_cpu, compute_gpu = sim_cpu, sim_gpu
        else:  # simulated without a GPU (a CPU build): the split of the compute buffers is the formula's
            source = "llama.cpp, compute by formula"
        output = sum(measured.get("output", {}).values()) or output
        vocab = sum(measured.get("host_heap", {}).values()) or vocab
    return MemoryEstimate(
        weights_cpu=w_cpu,
        weights_gpu=w_gpu,
        kv_cpu=int(kv_cpu * batch_size),
        kv_gpu=int(kv_gpu * batch_size),
        kv_per_sequence=int(kv_cpu + kv_gpu),
        output=int(output),
        overhead=RUNTIME_OVERHEAD,
        n_gpu_layers=offloaded,
        repack_cpu=repack,
        compute_cpu=int(compute_cpu),
        compute_gpu=int(compute_gpu),
        samplers=shape.n_vocab * SAMPLER_BYTES_PER_TOKEN * batch_size,
        vocab=int(vocab),
        source=source,
    )


def measure(path: str | Path, *, ctx: int, batch_size: int, n_gpu_layers: int = 0, kv_type: str = "f16",
            flash_attn: str = "auto", kv_unified: bool = False, threads: int = 1,
            max_outputs: int | None = None) -> MemoryEstimate:
    """``estimate`` with llama.cpp's own figures for what the header cannot tell: a ``no_alloc``
    load and context of this very configuration (about half a second; nothing is allocated).
    ``max_outputs``: logits rows a decode may return (the engine's: one per sequence; a plain
    ``llama_cpp.Llama`` context reserves 512). Falls back to the formulas where this llama.cpp
    cannot simulate."""
    from ..engine.simulate import simulate_buffers

    shape = read_shape(str(path))
    try:
        measured = simulate_buffers(
            path, n_gpu_layers=n_gpu_layers, n_seq_max=batch_size, n_ctx=ctx * batch_size,
            n_batch=min(2048, ctx * batch_size), n_ubatch=min(N_UBATCH, ctx * batch_size),
            n_outputs_max=max_outputs or batch_size, threads=threads, flash_attn=flash_attn, kv_type=kv_type, kv_unified=kv_unified)
    except Exception:  # a simulation that fails is no reason to fail an estimate
        measured = None
    return estimate(shape, ctx=ctx, batch_size=batch_size, n_gpu_layers=n_gpu_layers, kv_type=kv_type,
                    measured=measured)


# Buffer types of host memory in llama.cpp's logs; every other one is a device's.
_HOST_BUFFERS = ("CPU", "CUDA_Host", "ROCm_Host", "Vulkan_Host", "SYCL_Host", "CANN_Host")


def _split_by_device(buffers: dict[str, int]) -> tuple[int, int]:
    cpu = sum(v for k, v in buffers.items() if k.startswith(_HOST_BUFFERS) and not k[len("CPU"):].isdigit())
    return cpu, sum(buffers.values()) - cpu


def _compute_bytes(shape: ModelShape, batch_size: int) -> int:
    """The compute buffer of one 512-token micro-batch: fitted to llama.cpp's own figures for
    Qwen2.5 0.5B, 1.5B and 7B (within 1%); at least the logits of every sequence."""
    ff = (shape.n_ff * max(1, shape.n_experts_used)) or 4 * shape.n_embd
    activations = 4 * N_UBATCH * 0.92 * (3 * ff + 6 * shape.n_embd)
    return int(max(activations, 1.1 * 4 * shape.n_vocab * batch_size))


def _vocab_bytes(shape: ModelShape) -> int:
    return VOCAB_BYTES_PER_TOKEN * shape.n_vocab + VOCAB_BYTES_PER_MERGE * shape.n_merges


def largest_batch(
    shape: ModelShape,
    *,
    ctx: int,
    max_memory: int,
    n_gpu_layers: int = 0,
    kv_type: str = "f16",
    limit: int | None = None,
) -> int:
    """The largest batch whose estimate fits ``max_memory`` (on the GPU when layers are offloaded), at most
    ``limit`` (default: the most sequences llama.cpp decodes together)."""
    if limit is None:
        from ..engine.limits import max_sequences

        limit = max_sequences()

    def need(batch: int) -> int:
        est = estimate(shape, ctx=ctx, batch_size=batch, n_gpu_layers=n_gpu_layers, kv_type=kv_type)
        return est.gpu if n_gpu_layers != 0 else est.cpu

    if need(1) > max_memory:
        raise InputError(
            f"even one sequence of {ctx} tokens needs {format_bytes(need(1))}, more than --max-memory "
            f"{format_bytes(max_memory)}: lower --ctx or --max-tokens, or use a smaller model or --kv-type"
        )
    lo, hi = 1, limit
    while lo < hi:  # need() grows with the batch
        mid = (lo + hi + 1) // 2
        if need(mid) <= max_memory:
            lo = mid
        else:
            hi = mid - 1
    return lo


def most_gpu_layers(shape: ModelShape, *, ctx: int, batch_size: int, max_memory: int, kv_type: str = "f16") -> int:
    """The most layers to offload (-1: all, the output head included; 0: none) whose GPU part of the
    estimate fits ``max_memory``."""
    for n in range(shape.n_layers + 1, 0, -1):
        est = estimate(shape, ctx=ctx, batch_size=batch_size, n_gpu_layers=n, kv_type=kv_type)
        if est.gpu <= max_memory:
            return -1 if n > shape.n_layers else n
    return 0


def parse_size(text: str) -> int:
    """'16GiB', '800MB', '1.5G', '123456' -> bytes."""
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").upper() if m else None
    if not m or unit not in _UNITS:
        raise InputError(f"not a memory size: {text!r} (examples: 16GiB, 800MiB, 2G)")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
