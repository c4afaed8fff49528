"""aimo-gguf convert and scripts/convert.sh: a real Hugging Face checkpoint to checked GGUF files.

The checkpoint is made from the embedded SmolLM2 GGUF (transformers reads a
GGUF with ``gguf_file=`` and writes a model folder), since the Hub cannot be
reached from CI. The converter is llama.cpp's own, from the sdist of the
installed llama-cpp-python (fetched with pip once into the aimo-gguf cache).
"""

from __future__ import annotations

import pytest
from helpers import one_error_line, run_convert_script

from aimo_gguf.errors import ModelError
from aimo_gguf.gguf import converter


def test_script_without_arguments_prints_its_usage():
    done = run_convert_script()
    assert done.returncode == 2 and "scripts/convert.sh SOURCE" in done.stderr


def test_missing_folder_is_one_line(tmp_path):
    line = one_error_line(run_convert_script(tmp_path / "nope", "--outdir", tmp_path / "m"))
    assert "no such folder" in line


def test_an_unwritable_converter_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("AIMO_GGUF_CACHE", str(blocker))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setattr(converter, "_fetch_converter", lambda v, tmp, folder: converter.extract_converter(tmp, folder))
    with pytest.raises(ModelError, match="cannot set up llama.cpp's converter"):
        converter.find_converter(progress=False)
