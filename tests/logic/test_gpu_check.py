"""scripts/gpu_check.py without a GPU, a build or a download: what the trimmed source keeps, the
trimming of a small fake sdist, reading llama-batched-bench and pytest's results, the figures it
reports, and its one-line errors and dry run."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


L = ("vendor", "llama.cpp")


@pytest.mark.parametrize(("path", "kept"), [
    ("CMakeLists.txt", True), ("pyproject.toml", True), ("llama_cpp/llama.py", True), ("llama_cpp/lib/x.so", False),
    ("docs/index.md", False), ("tests/test_llama.py", False), ("examples/low_level_api/a.py", False),
    ("vendor/llama.cpp/src/llama.cpp", True), ("vendor/llama.cpp/common/arg.cpp", True),
    ("vendor/llama.cpp/ggml/src/ggml.c", True), ("vendor/llama.cpp/ggml/src/ggml-quants.c", True),
    ("vendor/llama.cpp/ggml/src/ggml-cuda/fattn.cu", True), ("vendor/llama.cpp/ggml/src/ggml-cpu/ops.cpp", True),
    ("vendor/llama.cpp/ggml/src/ggml-cuda", True), ("vendor/llama.cpp/ggml/src/ggml-vulkan", False),
    ("vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp", False),
    ("vendor/llama.cpp/ggml/src/ggml-sycl/a.cpp", False), ("vendor/llama.cpp/ggml/include/ggml.h", True),
    ("vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf", False), ("vendor/llama.cpp/docs/build.md", False),
    ("vendor/llama.cpp/tools/CMakeLists.txt", True), ("vendor/llama.cpp/tools/batched-bench/main.cpp", True),
    ("vendor/llama.cpp/tools/llama-bench/llama-bench.cpp", True), ("vendor/llama.cpp/tools/server/server.cpp", False),
    ("vendor/llama.cpp/tools/mtmd/clip.cpp", False), ("vendor/llama.cpp/vendor/nlohmann/json.hpp", True),
    ("vendor/llama.cpp/gguf-py/gguf/__init__.py", False), ("vendor/llama.cpp/convert_hf_to_gguf.py", False),
    ("vendor/other/x.c", False),
])
def test_what_the_trimmed_source_keeps(gc, path, kept):
    assert gc.keep_member(tuple(path.split("/"))) is kept


def fake_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("llama_cpp_python-9.9.9/llama_cpp/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def test_trimming_keeps_the_build_and_replaces_the_tools_list(gc, tmp_path):
    sdist = fake_sdist(tmp_path / "s.tar.gz", {
        "CMakeLists.txt": "project(llama_cpp)", "llama_cpp/__init__.py": "__version__ = '9.9.9'",
        "vendor/llama.cpp/tools/CMakeLists.txt": "add_subdirectory(server)",
        "vendor/llama.cpp/tools/batched-bench/main.cpp": "int main(){}",
        "vendor/llama.cpp/tools/server/server.cpp": "x" * 5000, "vendor/llama.cpp/models/v.gguf": "y" * 5000,
        "docs/a.md": "z",
    })
    out = tmp_path / "bundle" / "src.tar.xz"
    info = gc.trim_sdist(sdist, out)
    assert info == {"files_kept": 3, "files_dropped": 3, "top": "llama_cpp_python-9.9.9"}
    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
        tools = tar.extractfile("llama_cpp_python-9.9.9/vendor/llama.cpp/tools/CMakeLists.txt").read().decode()
    assert names == sorted(f"llama_cpp_python-9.9.9/{n}" for n in (
        "CMakeLists.txt", "llama_cpp/__init__.py", "vendor/llama.cpp/tools/CMakeLists.txt",
        "vendor/llama.cpp/tools/batched-bench/main.cpp"))  # no link, no server, no models
    assert tools == gc.TOOLS_CMAKE and "batched-bench" in tools and "server" not in tools
    assert not list(out.parent.glob(".*part"))


def test_a_tarball_that_is_not_the_binding_is_refused(gc, tmp_path):
    sdist = fake_sdist(tmp_path / "s.tar.gz", {"CMakeLists.txt": "x"})
    with pytest.raises(gc.CheckError, match="not a llama-cpp-python sdist"):
        gc.trim_sdist(sdist, tmp_path / "o.tar.xz")
    assert not (tmp_path / "o.tar.xz").exists()


MD = """
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|    48 |    128 |    1 |    176 |    0.016 |  2996.70 |    2.002 |    63.93 |    2.018 |    87.21 |
|    48 |    128 |   32 |   5632 |    0.224 |  6851.90 |   21.482 |   190.68 |   21.706 |   259.47 |
"""


def test_batched_bench_output_is_read_as_json_lines_or_the_table(gc):
    assert gc.parse_batched_bench(MD) == {1: 63.93, 32: 190.68}
    jsonl = ('{"n_kv_max": 9000, "pp": 48, "tg": 128, "pl": 8, "speed_tg": 801.5}\nllama_context: log line\n'
             '{"pp": 48, "tg": 128, "pl": 64, "speed_tg": 3120.0}\n{"broken"\n')
    assert gc.parse_batched_bench(jsonl) == {8: 801.5, 64: 3120.0}
    assert gc.parse_batched_bench("nothing here") == {}


def test_the_figures_put_the_engine_beside_llama_cpp_and_the_estimate_beside_nvml(gc):
    rows = [{"batch_size": 1, "generated_tokens_per_s": 150.0, "step_ms": 6.25, "gpu_growth_mb": 5000.0,
             "estimate_gpu_mb": 5250.0},
            {"batch_size": 32, "generated_tokens_per_s": 2400.0, "step_ms": 12.5, "gpu_growth_mb": None,
             "estimate_gpu_mb": None, "error": None}]
    out = gc.summarize_bench(rows, {"generated_tokens_per_s": 120.0}, {1: 170.0, 32: 2500.0})
    b1, b32 = out["batches"]
    assert b1["decode_tokens_per_s"] == 160.0 and b1["ratio"] == round(160 / 170, 3)
    assert b1["estimate_error"] == 0.05 and b32["estimate_error"] is None
    assert b32["decode_tokens_per_s"] == 2560.0 and b32["ratio"] == 1.024
    assert out["best_speedup"] == 20.0
    assert gc.summarize_bench(rows, None, {})["best_speedup"] is None


@pytest.mark.parametrize(("batch", "step_ms", "tg", "gap"), [(1, 5.2, 200.0, 0.2), (8, 10.0, 1000.0, 0.25),
                                                        (32, 24.0, 1600.0, 0.125)])
def test_the_host_figures_put_each_paths_step_beside_llama_cpps(gc, batch, step_ms, tg, gap):
    row = {"batch_size": batch, "sampler": "batched", "step_ms": step_ms, "host_ms": 0.12, "draw_ms": 0.08,
           "confidence_ms": 0.02, "rest_ms": 0.02, "generated_tokens_per_s": 1.0}
    (out,) = gc.summarize_host([row], {batch: tg})
    assert out["llama_batched_bench_step_ms"] == pytest.approx(1000 * batch / tg)
    assert out["step_over_reference_ms_per_seq"] == pytest.approx(gap)  # (step - reference step) / batch
    assert (out["sampler"], out["host_ms"], out["draw_ms"]) == ("batched", 0.12, 0.08)
    (missing,) = gc.summarize_host([row], {})
    assert missing["llama_batched_bench_step_ms"] is None and missing["step_over_reference_ms_per_seq"] is None


def test_pytest_results_are_counted_from_junit(gc, tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
                   '<testcase name="test_a"/><testcase name="test_b"><failure message="x"/></testcase>'
                   '<testcase name="test_c"><skipped/></testcase></testsuite></testsuites>')
    assert gc.junit_counts(xml) == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1}
    assert gc.junit_failures(xml) == ["test_b"]
    assert gc.junit_counts(tmp_path / "none.xml")["tests"] == 0


@pytest.mark.parametrize(("rc", "counts", "cpu", "failed"), [
    (0, {"tests": 6, "failures": 0, "errors": 0, "skipped": 0}, False, None),
    (1, {"tests": 6, "failures": 1, "errors": 0, "skipped": 0}, False, ["test_b"]),
    (134, {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}, False, ["pytest exited 134 (no junit report: it crashed?)"]),
    (5, {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}, False, ["pytest exited 5 (no junit report: it crashed?)"]),
    (0, {"tests": 6, "failures": 0, "errors": 0, "skipped": 6}, False, ["6 of 6 GPU tests skipped on the GPU (see tests.log)"]),
    (0, {"tests": 6, "failures": 0, "errors": 0, "skipped": 6}, True, None),
])
def test_the_tests_phase_passes_only_when_every_gpu_test_ran_and_passed(gc, rc, counts, cpu, failed):
    result = gc.judge_tests(rc, counts, ["test_b"] if counts["failures"] else [], cpu=cpu)
    assert result.get("failed") == failed and result["exit"] == rc


def run_main(gc, argv, capsys):
    rc = gc.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_run_without_a_bundle_is_one_line(gc, tmp_path, capsys):
    rc, _, err = run_main(gc, ["run", "--dry-run", "--bundle", str(tmp_path / "nope"), "--work", str(tmp_path / "w"),
                                 "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err.strip().count("\n") == 0 and "no bundle" in err and "pack" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--phases", "build,deploy"], "unknown phase 'deploy'"), (["--models", "qwen7b,llama70b"], "unknown model"),
])
def test_bad_choices_are_one_line(gc, tmp_path, capsys, argv, message):
    rc, _, err = run_main(gc, ["run", "--dry-run", "--bundle", str(tmp_path), *argv], capsys)
    assert rc == 2 and message in err and err.strip().count("\n") == 0


def fake_bundle(root: Path) -> Path:
    bundle = root / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "src.tar.xz").write_bytes(b"x" * 10)
    (bundle / "tokenizer.gguf").write_bytes(b"t" * 4)
    files = {"src.tar.xz": {"bytes": 10}, "tokenizer.gguf": {"bytes": 4}}
    (bundle / "manifest.json").write_text(json.dumps({"llama_cpp_python": "9.9.9", "source": "src.tar.xz",
                                                      "top": "llama_cpp_python-9.9.9", "files": files}))
    return bundle


def test_the_dry_run_checks_the_bundle_prints_the_plan_and_writes_the_report(gc, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gc, "EXPECTED_THERE", ("json",))
    monkeypatch.setattr(gc.shutil, "which", lambda name: f"/usr/bin/{name}")
    bundle, work, out = fake_bundle(tmp_path), tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "build.json").write_text("{}")  # recorded by an earlier call
    rc, stdout, err = run_main(gc, ["run", "--dry-run", "--cpu", "--bundle", str(bundle), "--work", str(work),
                                    "--out", str(out)], capsys)
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("build: done") and lines[1].startswith("models: to run")
    assert "models: qwen05;" in lines[-1]  # the CPU rehearsal writes only the small model
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["cpu_rehearsal"] and report["machine"]["llama_cpp_python"] == "9.9.9"
    assert not (work / "venv").exists()  # nothing was built
    (bundle / "tokenizer.gguf").write_bytes(b"t")
    rc, _, err = run_main(gc, ["run", "--dry-run", "--cpu", "--bundle", str(bundle), "--work", str(work),
                               "--out", str(out)], capsys)
    assert rc == 2 and "bundle is incomplete" in err


def test_a_machine_without_nvcc_is_told_so_before_any_build(gc, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gc, "EXPECTED_THERE", ("json",))
    monkeypatch.setattr(gc.shutil, "which", lambda name: None if name == "nvidia-smi" else f"/bin/{name}")
    monkeypatch.setattr(gc, "find_nvcc", lambda: None)
    rc, _, err = run_main(gc, ["run", "--dry-run", "--bundle", str(fake_bundle(tmp_path)), "--work",
                               str(tmp_path / "w"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "lacks nvcc" in err


def test_the_wheelhouse_and_the_gpu_check_build_the_same_portable_llama_cpp(gc):
    script = (SCRIPT.parent / "kaggle_wheelhouse.sh").read_text()
    line = next(line for line in script.splitlines() if line.startswith("PORTABLE="))
    assert tuple(line.split("=", 1)[1].strip('"').split()) == gc.PORTABLE_CMAKE_ARGS
    assert {"-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"} <= set(gc.PORTABLE_CMAKE_ARGS)
