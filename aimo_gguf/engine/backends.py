"""Where llama-cpp-python's libraries are, and the CPU backends of a portable build.

A portable build (``GGML_BACKEND_DL=ON``, ``GGML_CPU_ALL_VARIANTS=ON``: what
``scripts/kaggle_wheelhouse.sh`` builds) links no backend into libggml: it ships
one CPU backend module per instruction-set level (``libggml-cpu-haswell.so``,
``-skylakex``, ``-sapphirerapids``...) and llama.cpp loads the best one this
CPU runs. It looks for them only next to the executable (python) and in the
working directory, so this module loads them from the binding's own folder
before anything asks llama.cpp for a backend.
"""

from __future__ import annotations

import ctypes
from importlib.util import find_spec
from pathlib import Path

# llama_cpp is imported only where its C library is called: the version and the library folder are
# read without loading it (the CLI and the converter ask for them).


def binding_version() -> str:
    """The installed llama-cpp-python's version (its distribution's: the sdist ``convert`` fetches)."""
    from importlib.metadata import version

    return version("llama-cpp-python")


def library_dir() -> Path:
    """Where llama-cpp-python keeps its libraries (libllama, libggml, the backend modules)."""
    return Path(find_spec("llama_cpp").origin).resolve().parent / "lib"


def cpu_variants() -> list[str]:
    """The CPU backend modules of a portable build (``haswell``, ``skylakex``...); empty for a native one."""
    return sorted(p.name.split("libggml-cpu-", 1)[1].split(".", 1)[0] for p in library_dir().glob("libggml-cpu-*"))


def load_backend_modules() -> None:
    """Load a portable build's backends from the binding's folder (a native build: nothing to do)."""
    if not cpu_variants():
        return
    # Through libllama's own handle: dlsym searches its dependencies, so this is the libggml libllama
    # uses. (The wheel holds libggml.so and libggml.so.0 as two files: opening one by path could load a
    # second copy, with a backend registry of its own.)
    import llama_cpp

    load = llama_cpp.llama_cpp._lib.ggml_backend_load_all_from_path
    load.argtypes, load.restype = [ctypes.c_char_p], None
    load(str(library_dir()).encode())
