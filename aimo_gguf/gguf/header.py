"""A fast reader of a GGUF file's header: its metadata and its tensor list, no tensor data.

The ``gguf`` package's ``GGUFReader`` builds a numpy view of every value, which
takes 5 to 6 seconds on a 152k-token vocabulary (Qwen2.5, R1-Distill, gpt-oss):
too slow for ``info``, ``--batch-size auto`` or a bench row. This reader walks
the same format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
over a memory map and only counts long string arrays unless asked for them
(``strings=``), in a few hundred milliseconds. Type sizes come from the
``gguf`` package.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelError

MAGIC = b"GGUF"
# GGUF value types -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
LONG_STRING_ARRAY = 64  # string arrays longer than this are counted, not decoded, unless asked for


@dataclass(frozen=True)
class StringArray:
    """A long array of strings, counted but not decoded."""

    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ne0, ne1, ... (GGUF order: the fastest-moving dimension first)
    type_name: str  # GGMLQuantizationType name: Q4_K, F16, MXFP4...
    n_bytes: int


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict
    tensors: tuple[TensorInfo, ...]
    data_end: int = 0  # the byte where the file's tensor data ends: its size when it is whole


def read_header(path: str | Path, *, strings: tuple[str, ...] = ()) -> Header:
    """The metadata and tensor list of the GGUF file at ``path``; the string arrays named in
    ``strings`` are decoded whatever their length. For the first part of a split model, the
    metadata of the first part and the tensors of every part (``aimo_gguf.gguf.parts``)."""
    from .parts import model_files

    files = model_files(path)
    header = _read(str(files[0]), tuple(strings))
    if len(files) == 1:
        return header
    tensors = list(header.tensors)
    for part in files[1:]:
        tensors += _read(str(part), ()).tensors
    expected = header.fields.get("split.tensors.count")
    if expected is not None and expected != len(tensors):
        raise ModelError(f"{path}: its parts hold {len(tensors)} tensors, and the first part says {expected}")
    return Header(version=header.version, fields=header.fields, tensors=tuple(tensors))


def check_complete(path: str | Path) -> None:
    """Raise ModelError, saying so, when the one GGUF file ``path`` is cut short: in its header, or
    before the end of its tensor data (a download or a copy that stopped)."""
    _read(str(path), ())


@lru_cache(maxsize=16)
def _read(path: str, strings: tuple[str, ...]) -> Header:
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            with memoryview(buf) as view:
                header = _parse(view, set(strings))
                size = len(view)
    except struct.error:  # a read past the end: the only way unpack_from fails on a GGUF's formats
        raise ModelError(f"{path} is truncated: it ends at byte {Path(path).stat().st_size:,}, inside its GGUF "
                         f"header (a download or a copy cut short?)") from None
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read the GGUF header of {path}: {e}") from None
    if header.data_end > size:
        raise ModelError(f"{path} is truncated: its tensor data ends at byte {header.data_end:,}, the file at "
                         f"byte {size:,} (a download or a copy cut short?)")
    return header


def _parse(buf: memoryview, wanted: set[str]) -> Header:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if bytes(buf[:4]) != MAGIC:
        raise ValueError("not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if max(n_tensors, n_kv) >= 1 << 32:  # no model has that many: garbage, where a cut file says "truncated"
        raise ValueError(f"it claims {n_kv} metadata entries and {n_tensors} tensors: the file is corrupt")
    pos = 24
    unpack = struct.unpack_from

    def string(at: int) -> tuple[str, int]:
        (n,) = unpack("<Q", buf, at)
        if at + 8 + n > len(buf):
            raise struct.error("a string past the end of the file")
        return bytes(buf[at + 8:at + 8 + n]).decode("utf-8"), at + 8 + n

    def value(kind: int, at: int, key: str):
        if kind in _SCALARS:
            fmt = "<" + _SCALARS[kind]
            return unpack(fmt, buf, at)[0], at + struct.calcsize(fmt)
        if kind == _STRING:
            return string(at)
        if kind == _ARRAY:
            item, n = unpack("<IQ", buf, at)
            at += 12
            if item in _SCALARS:
                fmt = _SCALARS[item]
                size = struct.calcsize(fmt)
                return list(unpack(f"<{n}{fmt}", buf, at)), at + n * size
            if item == _STRING and n > LONG_STRING_ARRAY and key not in wanted:
                for _ in range(n):
                    (length,) = unpack("<Q", buf, at)
                    at += 8 + length
                return StringArray(n), at
            out = []
            for _ in range(n):
                v, at = value(item, at, key)
                out.append(v)
            return out, at
        raise ValueError(f"unknown GGUF value type {kind}")

    fields = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (kind,) = unpack("<I", buf, pos)
        fields[key], pos = value(kind, pos + 4, key)
    tensors = []
    data_size = 0
    for _ in range(n_tensors):
        name, pos = string(pos)
        (n_dims,) = unpack("<I", buf, pos)
        shape = unpack(f"<{n_dims}Q", buf, pos + 4)
        pos += 4 + 8 * n_dims
        type_id, offset = unpack("<IQ", buf, pos)
        pos += 12
        qtype = GGMLQuantizationType(type_id)
        block, type_size = GGML_QUANT_SIZES[qtype]
        elements = 1
        for d in shape:
            elements *= d
        tensors.append(TensorInfo(name, tuple(shape), qtype.name, elements // block * type_size))
        data_size = max(data_size, offset + tensors[-1].n_bytes)
    align = fields.get("general.alignment", 32)
    data_end = -(-pos // align) * align + data_size if tensors else pos  # tensor data starts aligned
    return Header(version=version, fields=fields, tensors=tuple(tensors), data_end=data_end)
