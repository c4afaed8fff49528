"""aimo-gguf convert and scripts/convert.sh: a real Hugging Face checkpoint to checked GGUF files.

The checkpoint is made from the embedded SmolLM2 GGUF (transformers reads a
GGUF with ``gguf_file=`` and writes a model folder), since the Hub cannot be
reached from CI. The converter is llama.cpp's own, from the sdist of the
installed llama-cpp-python (fetched with pip once into the aimo-gguf cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from aimo_gguf import convert as conv
from aimo_gguf.errors import InputError, ModelError
from aimo_gguf.gguf import converter


@pytest.mark.parametrize("lines, message", [
    (["INFO:x:loading", "ERROR:hf-to-gguf:Model FooForCausalLM is not supported"],
     "Model FooForCausalLM is not supported"),
    (["Traceback (most recent call last):", '  File "x.py", line 1', "KeyError: 'vocab_size'"], "'vocab_size'"),
    (["OSError: [Errno 28] No space left on device"], "[Errno 28] No space left on device"),
    (["something odd", ""], "something odd"),
    ([], "it printed nothing"),
])
def test_converter_error_is_its_last_error_line(lines, message):
    assert converter._converter_error(lines) == message


def test_quant_lists_are_split_upper_cased_and_deduplicated():
    assert conv._type_list("q4_k_m, Q8_0,,q4_k_m") == ["Q4_K_M", "Q8_0"]
    assert conv._type_list("") == []
    assert conv._type_list(("q5_k_m",)) == ["Q5_K_M"]


def test_extract_converter_takes_only_the_converter_of_an_sdist(tmp_path):
    src = tmp_path / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    for rel in ["convert_hf_to_gguf.py", "conversion/__init__.py", "gguf-py/gguf/__init__.py", "LICENSE",
                "src/llama.cpp", "ggml/big.c"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "llama_cpp_python-9.9.9", arcname="llama_cpp_python-9.9.9")
    out = converter.extract_converter(sdist, tmp_path / "cache" / "llama.cpp-9.9.9")
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["LICENSE", "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert [p.name for p in out.parent.iterdir()] == ["llama.cpp-9.9.9"]  # no staging folder left


def _sdist(tmp_path, extra=None):
    src = tmp_path / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    for rel in ["convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "llama_cpp_python-9.9.9", arcname="llama_cpp_python-9.9.9")
        for info, data in extra or ():
            tar.addfile(info, data)
    return sdist


def test_extraction_works_where_extractall_has_no_filter(tmp_path, monkeypatch):
    """Python 3.10.0 to 3.10.11 (which python_requires admits) have no extractall(filter=...)."""
    real = tarfile.TarFile.extractall

    def old_extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        return real(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extractall", old_extractall)
    out = converter.extract_converter(_sdist(tmp_path), tmp_path / "cache" / "llama.cpp-9.9.9")
    assert (out / "convert_hf_to_gguf.py").read_text() == "convert_hf_to_gguf.py"


def test_extraction_writes_no_link_and_nothing_outside_its_folder(tmp_path):
    import io

    link = tarfile.TarInfo("llama_cpp_python-9.9.9/vendor/llama.cpp/gguf-py/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    climb = tarfile.TarInfo("llama_cpp_python-9.9.9/vendor/llama.cpp/gguf-py/../../../../escaped")
    climb.size = 1
    out = converter.extract_converter(_sdist(tmp_path, [(link, None), (climb, io.BytesIO(b"x"))]), tmp_path / "c" / "x")
    assert not (out / "gguf-py" / "evil").exists() and not list(tmp_path.rglob("escaped"))


def test_an_sdist_without_converter_is_refused(tmp_path):
    (tmp_path / "p" / "README").parent.mkdir()
    (tmp_path / "p" / "README").write_text("x")
    sdist = tmp_path / "x.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "p", arcname="p")
    with pytest.raises(ModelError, match="carries no vendor/llama.cpp/convert_hf_to_gguf.py"):
        converter.extract_converter(sdist, tmp_path / "out")


def test_llama_cpp_dir_must_hold_the_converter(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(InputError, match="LLAMA_CPP_DIR must name a llama.cpp checkout"):
        converter.find_converter()
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    assert converter.find_converter() == tmp_path


def test_cache_dir_honours_aimo_gguf_cache_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert converter.cache_dir() == tmp_path / "xdg" / "aimo-gguf"
    monkeypatch.setenv("AIMO_GGUF_CACHE", str(tmp_path / "mine"))
    assert converter.cache_dir() == tmp_path / "mine"


def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".convert-{dead.pid}-abc"
    live = tmp_path / f".convert-{os.getpid()}-def"
    for d in (stale, live):
        d.mkdir()
        (d / "x.gguf").write_bytes(b"half")
    assert conv.remove_stale_staging(tmp_path) == [stale]
    assert live.exists() and not stale.exists()
