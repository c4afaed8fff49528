"""Importance matrices for quantization: read the files ``llama-imatrix`` writes.

llama.cpp's quantizer takes the matrix as parsed arrays (one per weight
tensor), so this module reads both formats that ``llama-imatrix`` writes and
normalises them the way ``llama-quantize`` does:

- GGUF (current): tensors ``<weight>.in_sum2`` (sums of squared activations)
  and ``<weight>.counts`` (tokens seen, one count per expert); the value is
  ``in_sum2 / count`` row by row, 1 where a count is 0.
- legacy ``.dat``: entries of (name, ncall, values), optionally followed by the
  chunk count and the dataset name; the value is ``values / ncall``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class ImportanceMatrix:
    """Per-tensor importance weights, ready for ``llama_model_quantize``."""

    path: Path
    entries: dict[str, np.ndarray] = field(repr=False)
    datasets: list[str]
    chunks: int
    format: str  # "gguf" or "legacy"

    def __len__(self) -> int:
        return len(self.entries)


def load_imatrix(path: str | Path) -> ImportanceMatrix:
    """Read an importance matrix written by ``llama-imatrix`` (GGUF or legacy .dat)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such importance matrix file")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        matrix = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    except (ValueError, struct.error, OSError) as e:
        raise InputError(f"{path}: not a readable importance matrix ({e})") from None
    if not matrix.entries:
        raise InputError(f"{path}: the importance matrix holds no entries")
    return matrix


def _load_gguf(path: Path) -> ImportanceMatrix:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name.endswith(".in_sum2"):
            sums[name.removesuffix(".in_sum2")] = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        elif name.endswith(".counts"):
            counts[name.removesuffix(".counts")] = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    if set(sums) != set(counts):
        odd = sorted(set(sums) ^ set(counts))[0]
        raise ValueError(f"sums and counts do not match for {odd}")
    entries = {}
    for name, s in sums.items():
        c = counts[name]
        if len(c) == 0 or len(s) % len(c):
            raise ValueError(f"{len(s)} sums cannot split over {len(c)} counts for {name}")
        rows = s.reshape(len(c), -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(c[:, None] > 0, rows / np.round(c)[:, None], 1.0)
        entries[name] = np.ascontiguousarray(values.reshape(-1), dtype=np.float32)
    datasets = _field(reader, "imatrix.datasets") or []
    chunks = _field(reader, "imatrix.chunk_count") or 0
    return ImportanceMatrix(path, entries, list(datasets), int(chunks), "gguf")


def _field(reader, key):
    f = reader.get_field(key)
    if f is None:
        return None
    value = f.contents()
    return value


def _load_legacy(path: Path) -> ImportanceMatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ValueError("no entries")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 1 or pos + length > len(data):
            raise ValueError("bad entry name")
        name = data[pos:pos + length].decode()
        pos += length
        ncall, nval = take("<ii")
        if nval < 1 or pos + 4 * nval > len(data):
            raise ValueError(f"bad value count for {name}")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos)
        pos += 4 * nval
        entries[name] = (values / ncall if ncall > 0 else values).astype(np.float32)
    chunks, datasets = 0, []
    if pos + 4 <= len(data):
        (chunks,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and pos + length <= len(data):
                datasets.append(data[pos:pos + length].decode(errors="replace"))
    return ImportanceMatrix(path, entries, datasets, int(chunks), "legacy")
