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
from pathlib import Path

import pytest

from aimo_gguf import convert as conv
from aimo_gguf.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]


SCRIPT = ROOT / "scripts" / "convert.sh"


def _run_script(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMO_GGUF_")}
    env["PYTHON"] = sys.executable
    env.update(env_extra or {})
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_script_without_arguments_prints_its_usage():
    done = _run_script()
    assert done.returncode == 2 and "scripts/convert.sh SOURCE" in done.stderr


def test_missing_folder_is_one_line(tmp_path):
    line = _one_error_line(_run_script(tmp_path / "nope", "--outdir", tmp_path / "m"))
    assert "no such folder" in line




def test_an_unwritable_converter_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("AIMO_GGUF_CACHE", str(blocker))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setattr(conv, "_fetch_converter", lambda v, tmp, folder: conv.extract_converter(tmp, folder))
    with pytest.raises(ModelError, match="cannot set up llama.cpp's converter"):
        conv.find_converter(progress=False)
