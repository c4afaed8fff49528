"""``aimo-gguf quantize``: a GGUF file to another llama.cpp file type, through the binding.

No compiled ``llama-quantize`` is needed: llama-cpp-python exposes
``llama_model_quantize``. The output is written under a temporary name and
renamed, so an interrupted or failed run leaves no half-written model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InputError, ModelError
from .models import check_gguf


def file_types() -> dict[str, int]:
    """llama.cpp's file types by name: 'Q4_K_M' -> 15, 'F16' -> 1, ..."""
    from gguf import LlamaFileType

    names = {}
    for member in LlamaFileType:
        if member.name == "GUESSED":
            continue
        names[member.name.removeprefix("MOSTLY_").removeprefix("ALL_")] = member.value
    return names


def quantize(
    src: str | Path,
    dst: str | Path,
    *,
    type: str,
    threads: int | None = None,
    allow_requantize: bool = False,
    force: bool = False,
) -> Path:
    """Quantize ``src`` into ``dst`` as ``type`` (a llama.cpp file type name, e.g. Q4_K_M)."""
    from .engine import default_threads, quantize_file

    types = file_types()
    name = type.upper()
    if name not in types:
        raise InputError(f"unknown file type {type!r}: one of {', '.join(sorted(types))}")
    src, dst = Path(src), Path(dst)
    check_gguf(src)
    if dst.exists() and not force:
        raise InputError(f"{dst} already exists: delete it, choose another name, or pass --force")
    if dst.resolve() == src.resolve():
        raise InputError("the output would overwrite the input: choose another name")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {dst.parent}: {e.strerror or e}") from None
    part = dst.with_name(f".{dst.name}.part")
    print(f"aimo-gguf: quantizing {src.name} to {name} (minutes for a 7B model)...", file=sys.stderr)
    try:
        quantize_file(src, part, ftype=types[name], threads=threads or default_threads(),
                      allow_requantize=allow_requantize)
        if not part.exists():
            raise ModelError(f"llama.cpp wrote no output for {src}")
        os.replace(part, dst)
    except ModelError as e:
        hint = "" if allow_requantize else " (a quantized input needs --allow-requantize)"
        raise ModelError(f"{e}{hint}") from None
    finally:
        part.unlink(missing_ok=True)
    return dst
