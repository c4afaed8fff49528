"""``aimo-gguf quantize``: a GGUF file to another llama.cpp file type, through the binding.

No compiled ``llama-quantize`` is needed: llama-cpp-python exposes
``llama_model_quantize``. The output is written under a temporary name and
renamed, so an interrupted or failed run leaves no half-written model; an
output that is not a regular file (a folder, a FIFO, a device) is refused.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .errors import InputError, ModelError
from .gguf.files import check_gguf
from .gguf.imatrix import ImportanceMatrix, load_imatrix
from .outputs import check_writable, staged_file

# Types llama.cpp refuses to produce without an importance matrix (llama-quant.cpp).
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})


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
    imatrix: str | Path | ImportanceMatrix | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Quantize ``src`` into ``dst`` as ``type`` (a llama.cpp file type name, e.g. Q4_K_M).

    ``imatrix`` is an importance matrix file from ``llama-imatrix`` (or one
    already loaded); the very-low-bit types (``NEEDS_IMATRIX``) require one.
    """
    from .engine import default_threads, quantize_file
    from .engine.limits import check_threads

    check_threads(threads)
    name = check_type(type)
    matrix = _matrix(imatrix, name)
    src, dst = Path(src), Path(dst)
    check_gguf(src)
    check_writable(dst, "the model")  # a folder, FIFO or device is refused before "already exists"
    if dst.exists() and not force:
        raise InputError(f"{dst} already exists: delete it, choose another name, or pass --force")
    if dst.resolve() == src.resolve():
        raise InputError("the output would overwrite the input: choose another name")
    if progress:
        print(f"aimo-gguf: quantizing {src.name} to {name} (minutes for a 7B model)...", file=sys.stderr)
    try:
        with staged_file(dst, "the model") as part:
            quantize_file(src, part, ftype=file_types()[name], threads=threads or default_threads(),
                          allow_requantize=allow_requantize, imatrix=matrix.entries if matrix else None)
            if not part.stat().st_size:
                raise ModelError(f"llama.cpp wrote no output for {src}")
    except ModelError as e:
        raise ModelError(f"{e}{_hint(str(e), dst.parent, allow_requantize, src)}") from None
    return dst


def _hint(message: str, folder: Path, allow_requantize: bool, src: Path | None = None) -> str:
    if not allow_requantize and ("requantiz" in message or (src is not None and _is_quantized(src))):
        return " (a quantized input needs --allow-requantize)"
    if "space" in message.lower() or shutil.disk_usage(folder).free < 64 * 2**20:
        return f" (is {folder} full? {shutil.disk_usage(folder).free / 2**20:.0f} MiB free)"
    return ""


def _is_quantized(path: Path) -> bool:
    from .fit.memory import read_shape

    try:
        return read_shape(str(path)).file_type not in ("F32", "F16", "BF16")
    except Exception:  # a header we cannot read: no hint rather than a second error
        return False


def check_type(type: str) -> str:
    """The canonical name of a llama.cpp file type ('q4_k_m' -> 'Q4_K_M'), or a one-line error."""
    types = file_types()
    name = type.strip().upper()
    if name not in types:
        raise InputError(f"unknown file type {type!r}: one of {', '.join(sorted(types))}")
    return name


def _matrix(imatrix, name: str) -> ImportanceMatrix | None:
    if imatrix is None:
        if name in NEEDS_IMATRIX:
            raise InputError(f"{name} needs an importance matrix: pass --imatrix FILE (from llama-imatrix)")
        return None
    return imatrix if isinstance(imatrix, ImportanceMatrix) else load_imatrix(imatrix)
