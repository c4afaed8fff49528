"""How much memory a GGUF model needs, from its own metadata, before loading it.

The estimate follows llama.cpp's allocations:

- weights: the tensors' bytes as stored. Block ``i`` goes to the GPU when it is
  one of the last ``n_gpu_layers`` blocks; the output head goes with
  ``n_gpu_layers > n_layers``; token embeddings stay on the CPU.
- KV cache: for each layer, ``(n_head_kv * key_length + n_head_kv * value_length)``
  elements per cell, at the KV type's size. With one stream per sequence each
  sequence has ``pad256(ctx)`` cells; sliding-window layers (Gemma 3, 2, ...)
  hold only ``pad256(min(ctx, window + n_ubatch))``. A layer's KV lives with
  its weights.
- output buffer: one row of float logits per sequence, on the CPU.
- a fixed runtime overhead (allocator, graph metadata, Python objects),
  fitted on this machine.

llama.cpp also reserves a compute buffer (tens to a few hundred MiB) that RSS
on a CPU barely sees; it is not included, so leave headroom on a GPU.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import InputError, ModelError

KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per element (blocks of 32)
CELL_PAD = 256  # llama.cpp pads each sequence's KV cells to a multiple of this
N_UBATCH = 512  # the engine's micro-batch (sliding-window caches keep this much beyond the window)
RUNTIME_OVERHEAD = 16 * 2**20  # measured: RSS growth beyond weights + KV + logits, 1-23 MiB
# Layers that use a sliding window, by architecture: every layer whose index
# mod N is below N - 1 (llama.cpp's set_swa_pattern), unless the GGUF says.
SWA_PATTERNS = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gemma3n": 5, "olmo2": 4, "exaone4": 4}
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

    @property
    def weight_bytes(self) -> int:
        return sum(self.block_bytes) + self.output_bytes + self.input_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a configuration needs, split between CPU and GPU."""

    weights_cpu: int
    weights_gpu: int
    kv_cpu: int
    kv_gpu: int
    kv_per_sequence: int  # KV bytes of one sequence, all layers
    output: int  # logits buffer (CPU)
    overhead: int  # fixed runtime overhead (CPU)
    n_gpu_layers: int  # layers offloaded, after clamping -1 to all

    @property
    def cpu(self) -> int:
        return self.weights_cpu + self.kv_cpu + self.output + self.overhead

    @property
    def gpu(self) -> int:
        return self.weights_gpu + self.kv_gpu

    @property
    def total(self) -> int:
        return self.cpu + self.gpu


@lru_cache(maxsize=8)
def read_shape(path: str | Path) -> ModelShape:
    """Read the layer layout and tensor sizes of a GGUF file (header only, memory-mapped)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError, struct errors, OSError...
        raise ModelError(f"cannot read GGUF metadata of {path}: {e}") from None
    fields = reader.fields

    def get(key, default=None):
        f = fields.get(key)
        return default if f is None else f.contents()

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
    output = other = 0
    for tensor in reader.tensors:
        m = _BLOCK.match(tensor.name)
        if m and int(m.group(1)) < n_layers:
            blocks[int(m.group(1))] += int(tensor.n_bytes)
        elif tensor.name.startswith(("output.", "output_norm.")):
            output += int(tensor.n_bytes)
        else:
            other += int(tensor.n_bytes)
    tokens = fields.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens.data) if tokens is not None else int(get(f"{arch}.vocab_size", 0))
    return ModelShape(
        name=str(get("general.name", Path(path).name)),
        file_type=_file_type_name(get("general.file_type")),
        n_params=sum(int(math.prod(t.shape)) for t in reader.tensors),
        file_bytes=Path(path).stat().st_size,
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
    )


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
) -> MemoryEstimate:
    """Memory of ``batch_size`` sequences of ``ctx`` tokens each, with per-sequence KV."""
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
    for i in range(n_layers):
        cells = cells_swa if shape.swa_layers[i] else cells_full
        kv = shape.kv_elements[i] * cells * element
        if i >= first_gpu_block:
            w_gpu += shape.block_bytes[i]
            kv_gpu += kv
        else:
            w_cpu += shape.block_bytes[i]
            kv_cpu += kv
    if offloaded > n_layers:
        w_gpu += shape.output_bytes
    else:
        w_cpu += shape.output_bytes
    return MemoryEstimate(
        weights_cpu=w_cpu,
        weights_gpu=w_gpu,
        kv_cpu=int(kv_cpu * batch_size),
        kv_gpu=int(kv_gpu * batch_size),
        kv_per_sequence=int(kv_cpu + kv_gpu),
        output=shape.n_vocab * 4 * batch_size,
        overhead=RUNTIME_OVERHEAD,
        n_gpu_layers=offloaded,
    )


def largest_batch(
    shape: ModelShape,
    *,
    ctx: int,
    max_memory: int,
    n_gpu_layers: int = 0,
    kv_type: str = "f16",
    limit: int = 512,
) -> int:
    """The largest batch whose estimate fits ``max_memory`` (on the GPU when layers are offloaded)."""

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
