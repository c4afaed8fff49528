"""One model over several GPUs: llama.cpp's split options, and each device's share of the memory.

llama.cpp spreads a model over the GPUs it sees in one of three ways
(``--split-mode``): ``none`` keeps everything on ``--main-gpu``; ``layer`` (its
default) gives each GPU whole layers, weights and KV cache together, in
proportion to ``--tensor-split`` (by default to each GPU's free memory);
``row`` splits each weight matrix's rows across the GPUs and keeps the KV
cache and the small tensors on ``--main-gpu``. ``device_shares`` follows the
same rule over the memory estimate of ``aimo_gguf.fit.memory``, so ``info``,
``models`` and ``-ngl auto`` can say what each GPU holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.api import DEFAULT_SPLIT_MODE, SPLIT_MODES
from ..errors import InputError

# The machines the registry's fits table shows, besides single GPUs: (label, --gpu spec).
DEVICE_SETS = (("2 x T4 (15 GB each)", "2x15GB"), ("4 x L4 (22 GB each)", "4x22GB"))
_DEVICES = re.compile(r"^\s*(\d+)\s*[xX*]\s*(.+)$")


def parse_tensor_split(text: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``"3,1"`` -> ``(3.0, 1.0)``; None or ``""`` -> None (llama.cpp's default split)."""
    if text is None or text == "":
        return None
    parts = list(text) if not isinstance(text, str) else [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"--tensor-split must be comma-separated numbers like 3,1, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or not any(values):
        raise InputError(f"--tensor-split needs shares of 0 or more, not all 0, like 3,1; got {text!r}")
    return values


def parse_devices(text: str) -> tuple[int, int]:
    """``"16GB"`` -> (1, bytes); ``"2x15GB"`` -> (2, bytes of one)."""
    from .memory import parse_size

    m = _DEVICES.match(text)
    if m is None:
        return 1, parse_size(text)
    count = int(m.group(1))
    if count < 1:
        raise InputError(f"a GPU count must be at least 1, got {text!r}")
    return count, parse_size(m.group(2))


def device_label(text: str) -> str:
    """The column title of a ``--gpu`` entry: ``"16GB GPU"``, or ``"2 x T4 (15 GB each)"`` for a known set."""
    for label, spec in DEVICE_SETS:
        if text.replace(" ", "").lower() == spec.lower():
            return label
    m = _DEVICES.match(text)
    return f"{m.group(1)} x {m.group(2).strip()} GPUs" if m else f"{text} GPU"


def gpu_sizes(text: str | None = None, *, free: bool = False) -> list[int]:
    """Memory of each GPU: from ``text`` (``15GB,15GB`` or ``2x15GB``), else what NVML sees (total, or
    ``free``); [] without either."""
    if text:
        sizes = []
        for part in text.split(","):
            if part.strip():
                count, size = parse_devices(part.strip())
                sizes += [size] * count
        return sizes
    from .gpus import gpu_memories

    return [m[2] if free else m[0] for m in gpu_memories()]


@dataclass(frozen=True)
class DeviceShares:
    """Bytes each GPU holds for one configuration (weights, KV cache, compute buffer)."""

    per_device: tuple[int, ...]
    layers: tuple[int, ...]  # blocks (and the output head, counted as one) on each GPU

    def fits(self, sizes: Sequence[int], reserve: int = 0) -> bool:
        return all(used + reserve <= size for used, size in zip(self.per_device, sizes, strict=True))


def layer_devices(n_layers: int, n_gpu_layers: int, fractions: Sequence[float]) -> list[int | None]:
    """The GPU of each of the ``n_layers`` blocks and the output head (index ``n_layers``), None for the
    CPU: llama.cpp's rule (llama-model.cpp) -- the last ``n_gpu_layers`` go to the GPUs, layer ``il``
    to the first device whose cumulative share exceeds ``(il - first) / offloaded``."""
    offloaded = n_layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layers + 1)
    first = max(n_layers - offloaded, 0)
    total = sum(fractions)
    bounds, running = [], 0.0
    for f in fractions:
        running += f
        bounds.append(running / total)
    out: list[int | None] = []
    for il in range(n_layers + 1):
        if il < first or il - first >= offloaded:
            out.append(None)
            continue
        x = (il - first) / offloaded
        out.append(next((d for d, b in enumerate(bounds) if b > x), len(bounds) - 1))
    return out


def device_shares(shape, *, ctx: int, batch_size: int, n_gpu_layers: int, kv_type: str = "f16",
                  sizes: Sequence[int], split_mode: str = DEFAULT_SPLIT_MODE,
                  tensor_split: Sequence[float] | None = None, main_gpu: int = 0) -> DeviceShares:
    """What each of the GPUs of ``sizes`` (their memory, for the default split) holds.

    Each block's bytes are the difference the estimate makes when it is offloaded; the
    compute buffer is counted on every GPU that holds a layer (each runs its own part of
    the graph). ``row`` is an approximation: weights by the split, the KV cache on ``main_gpu``.
    """
    from .memory import estimate

    n = len(sizes)
    if n == 0:
        raise InputError("no GPU to split the model over")
    if split_mode not in SPLIT_MODES:
        raise InputError(f"--split-mode must be one of {', '.join(SPLIT_MODES)}, got {split_mode!r}")
    if not 0 <= main_gpu < n:
        raise InputError(f"--main-gpu {main_gpu} is not one of the {n} GPUs (0 to {n - 1})")
    fractions = list(tensor_split or sizes)
    if len(fractions) > n:
        raise InputError(f"--tensor-split has {len(fractions)} shares for {n} GPUs")
    fractions += [0.0] * (n - len(fractions))
    if not any(fractions):
        raise InputError("--tensor-split gives no GPU any share")
    n_layers = shape.n_layers

    def est(k: int):
        return estimate(shape, ctx=ctx, batch_size=batch_size, n_gpu_layers=k, kv_type=kv_type)

    top = est(n_layers + 1)
    placed = [0] * n
    layers = [0] * n
    if n_gpu_layers == 0:
        return DeviceShares(tuple(placed), tuple(layers))
    if split_mode == "none" or n == 1:
        e = est(n_gpu_layers)
        placed[main_gpu] = e.gpu
        layers[main_gpu] = e.n_gpu_layers
        return DeviceShares(tuple(placed), tuple(layers))
    gpu = [est(k) for k in range(n_layers + 2)]  # gpu[k]: the estimate with the last k layers offloaded
    devices = layer_devices(n_layers, n_gpu_layers, fractions)
    total = sum(fractions)
    for il, device in enumerate(devices):
        if device is None:
            continue
        k = n_layers + 1 if il == n_layers else n_layers - il  # layers offloaded once this one is
        weights = gpu[k].weights_gpu - gpu[k - 1].weights_gpu
        kv = gpu[k].kv_gpu - gpu[k - 1].kv_gpu
        if split_mode == "row":
            for d in range(n):
                placed[d] += int(weights * fractions[d] / total)
            placed[main_gpu] += kv
            layers[main_gpu] += 1
        else:
            placed[device] += weights + kv
            layers[device] += 1
    for d in range(n):
        if layers[d] or (split_mode == "row" and fractions[d]):
            placed[d] += top.compute_gpu
    return DeviceShares(tuple(placed), tuple(layers))


def most_gpu_layers_split(shape, *, ctx: int, batch_size: int, sizes: Sequence[int], kv_type: str = "f16",
                          split_mode: str = DEFAULT_SPLIT_MODE, tensor_split: Sequence[float] | None = None,
                          main_gpu: int = 0, reserve: int = 0) -> tuple[int, DeviceShares]:
    """The most layers (-1: all) whose every GPU's share fits its size less ``reserve``, and the shares."""
    for k in range(shape.n_layers + 1, 0, -1):
        shares = device_shares(shape, ctx=ctx, batch_size=batch_size, n_gpu_layers=k, kv_type=kv_type, sizes=sizes,
                               split_mode=split_mode, tensor_split=tensor_split, main_gpu=main_gpu)
        if shares.fits(sizes, reserve):
            return (-1 if k > shape.n_layers else k), shares
    return 0, DeviceShares((0,) * len(sizes), (0,) * len(sizes))
