"""The GPU check's CPU side for real: ``pack`` on the llama-cpp-python sdist of the installed version
stays under what can travel, its trimmed source still configures with CMake (the CUDA build's
options, less CUDA), its dry run accepts it, and the GPU tests skip cleanly on this CPU build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import gpu_offload_supported

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-check") / "bundle"
    done = subprocess.run([str(SCRIPT), "pack", "--bundle", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"{out}: ")
    return out


@pytest.mark.slow
def test_the_bundle_travels_and_holds_what_the_machine_lacks(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    size = sum(f["bytes"] for f in manifest["files"].values())
    assert size + 2**20 < 64 * 2**20 - tree_size()
    assert sorted(p.name.split("-")[0] for p in (bundle / "wheels").glob("*.whl")) == ["diskcache", "gguf"]
    assert (bundle / "tokenizer.gguf").stat().st_size < 4 * 2**20
    assert manifest["files_dropped"] > manifest["files_kept"] > 500  # most of the sdist stays here


def script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_script", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_size() -> int:
    return script_module().tree_bytes(REPO)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_the_trimmed_source_configures_with_the_checks_options(bundle, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    with tarfile.open(bundle / manifest["source"]) as tar:
        tar.extractall(tmp_path, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path)
    source = tmp_path / manifest["top"]
    done = subprocess.run(["cmake", "-S", str(source), "-B", str(tmp_path / "build"), "-DLLAVA_BUILD=OFF",
                           "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_TOOLS_INSTALL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    targets = subprocess.run(["cmake", "--build", str(tmp_path / "build"), "--target", "help"],
                             capture_output=True, text=True).stdout
    assert "llama-batched-bench" in targets and "llama-bench" in targets and "llama-server" not in targets


@pytest.mark.slow
def test_the_dry_run_accepts_the_bundle(bundle, tmp_path, monkeypatch, capsys):
    gpu_check = script_module()
    # The packages the GPU machine has and this one may not (NVML, scikit-build-core) are its business.
    monkeypatch.setattr(gpu_check, "EXPECTED_THERE", ("numpy", "click", "pytest"))
    rc = gpu_check.main(["run", "--dry-run", "--cpu", "--bundle", str(bundle), "--work", str(tmp_path / "work"),
                         "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    assert [line.split(":")[0] for line in out.splitlines()] == ["build", "models", "tests", "bench", "host",
                                                                   "models"]  # host: issue 22's host work


@pytest.mark.skipif(gpu_offload_supported(), reason="a CUDA build runs the GPU tests instead")
def test_the_gpu_tests_skip_cleanly_on_a_cpu_build():
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "model" / "test_gpu.py")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "error" not in summary
    assert "needs a CUDA build of llama-cpp-python" in done.stdout
