"""aimo-gguf convert and scripts/convert.sh: a real Hugging Face checkpoint to checked GGUF files.

The checkpoint is made from the embedded SmolLM2 GGUF (transformers reads a
GGUF with ``gguf_file=`` and writes a model folder), since the Hub cannot be
reached from CI. The converter is llama.cpp's own, from the sdist of the
installed llama-cpp-python (fetched with pip once into the aimo-gguf cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    CONVERT_SCRIPT,
    clean_env,
    make_hub_cache,
    one_error_line,
    run_convert_script,
)

from aimo_gguf import convert as conv
from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.errors import ModelError
from aimo_gguf.fit.memory import read_shape
from aimo_gguf.gguf.files import default_model_path

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory) -> Path:
    """A Hugging Face model folder (safetensors, F16) made from the embedded SmolLM2 GGUF."""
    torch = pytest.importorskip("torch", reason="needs the convert extra")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = default_model_path()
    folder = tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float16)
    model.hf_quantizer = None  # the weights are dequantized: save them as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def converted(hf_checkpoint, tmp_path_factory):
    """scripts/convert.sh on the checkpoint: F16, Q8_0 and Q4_K_M."""
    out = tmp_path_factory.mktemp("converted") / "models"
    env = clean_env(PYTHON=sys.executable)
    done = subprocess.run([str(CONVERT_SCRIPT), str(hf_checkpoint), "--quant", "Q8_0,Q4_K_M", "--outtype", "f16",
                           "--outdir", str(out), "-t", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.mark.model
@pytest.mark.slow
def test_convert_sh_writes_three_models_and_a_manifest(converted):
    out, done = converted
    names = ["SmolLM2-135M-Instruct-F16.gguf", "SmolLM2-135M-Instruct-Q8_0.gguf", "SmolLM2-135M-Instruct-Q4_K_M.gguf"]
    manifest = out / "SmolLM2-135M-Instruct.manifest.json"
    assert done.stdout.split() == [str(out / n) for n in names] + [str(manifest)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + [manifest.name])  # no staging left
    data = json.loads(manifest.read_text())
    assert data["types"] == ["F16", "Q8_0", "Q4_K_M"]
    assert data["architecture"] == "LlamaForCausalLM" and data["source_kind"] == "local"
    assert data["converter"]["script"] == "convert_hf_to_gguf.py"
    from importlib.metadata import version

    assert data["converter"]["llama_cpp_python"] == version("llama-cpp-python")
    for entry, name in zip(data["files"], names):
        path = out / name
        assert entry["file"] == name and entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert "Paris" in entry["smoke_test"]["text"]
        assert read_shape(str(path)).file_type == entry["type"]
    sizes = [e["bytes"] for e in data["files"]]
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.model
@pytest.mark.slow
def test_converted_models_load_and_answer(converted):
    out, _ = converted
    for path in sorted(out.glob("*.gguf")):
        with Engine(path, ctx=128, batch_size=1, threads=2) as engine:
            prompt = engine.tokenize("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                                     "<|im_start|>assistant\n")
            [done] = engine.generate([Request(0, prompt, 12, 0, SamplingParams(temperature=0.0))])
        assert "Paris" in done.text, (path.name, done.text)


@pytest.mark.model
@pytest.mark.slow
def test_q8_0_agrees_with_f16_on_95_percent_of_next_tokens(converted, runner):
    out, _ = converted
    f16, q8, q4 = (str(out / f"SmolLM2-135M-Instruct-{t}.gguf") for t in ("F16", "Q8_0", "Q4_K_M"))
    args = ["--json", "-q", "-t", "2", "--max-text-tokens", "1100"]
    result = runner.invoke(cli, ["compare", f16, q8, *args])
    assert result.exit_code == 0, result.output
    q8_text = json.loads(result.stdout)["text"]
    assert q8_text["tokens"] > 1000
    assert q8_text["top1_agreement"] >= 0.95
    result = runner.invoke(cli, ["compare", f16, q4, *args])
    q4_text = json.loads(result.stdout)["text"]
    assert q4_text["mean_kl"] > q8_text["mean_kl"] > 0  # the coarser type drifts further
    assert q4_text["top1_agreement"] < q8_text["top1_agreement"]


@pytest.mark.slow
def test_bad_type_is_refused_before_any_work(hf_checkpoint, tmp_path):
    line = one_error_line(run_convert_script(hf_checkpoint, "--quant", "Q4_K_M,Q9_X", "--outdir", tmp_path / "m"))
    assert "unknown file type 'Q9_X'" in line
    assert not (tmp_path / "m").exists()


def _copy_checkpoint(src: Path, dst: Path, *, skip=(), config=None) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            os.symlink(f, dst / f.name)
    if config is not None:
        (dst / "config.json").unlink()
        (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.slow
def test_unsupported_architecture_is_one_line(hf_checkpoint, tmp_path):
    config = json.loads((hf_checkpoint / "config.json").read_text())
    config["architectures"] = ["FooBarForCausalLM"]
    model = _copy_checkpoint(hf_checkpoint, tmp_path / "foo", config=config)
    line = one_error_line(run_convert_script(model, "--outdir", tmp_path / "m"))
    assert "architecture FooBarForCausalLM is not supported" in line
    assert not list((tmp_path / "m").glob("*")) if (tmp_path / "m").exists() else True


@pytest.mark.slow
def test_missing_tokenizer_and_config_are_one_line(hf_checkpoint, tmp_path):
    model = _copy_checkpoint(hf_checkpoint, tmp_path / "notok", skip={"tokenizer.json"})
    assert "has no tokenizer" in one_error_line(run_convert_script(model, "--outdir", tmp_path / "m"))
    model = _copy_checkpoint(hf_checkpoint, tmp_path / "noconf", skip={"config.json"})
    assert "has no config.json" in one_error_line(run_convert_script(model, "--outdir", tmp_path / "m"))


@pytest.mark.slow
def test_existing_outputs_need_force(hf_checkpoint, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "SmolLM2-135M-Instruct-F16.gguf").write_bytes(b"keep me")
    line = one_error_line(run_convert_script(hf_checkpoint, "--outdir", tmp_path / "m"))
    assert "already exists: pass --force" in line
    assert (tmp_path / "m" / "SmolLM2-135M-Instruct-F16.gguf").read_bytes() == b"keep me"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_conversion_leaves_no_model(hf_checkpoint, tmp_path, sig):
    env = clean_env(PYTHON=sys.executable)
    for attempt in range(3):  # a busy machine can deschedule this test until the tiny conversion is done
        out = tmp_path / f"m{attempt}"
        # SIGINT's own action: a test run started in the background of a script inherits it ignored
        proc = subprocess.Popen([str(CONVERT_SCRIPT), str(hf_checkpoint), "--outdir", str(out), "--quant", "Q8_0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the F16 file is being written
            staged = list(out.glob(".convert-*/*.gguf")) if out.exists() else []
            if staged and staged[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the conversion never started writing")
        os.killpg(proc.pid, sig)
        proc.communicate(timeout=60)
        if proc.returncode != 0:
            break  # the signal landed inside the conversion: what this test is about
    else:
        pytest.fail("the conversion finished before the signal three times: nothing was interrupted")
    assert not list(out.glob("*.gguf")) and not list(out.glob("*.json"))
    leftovers = list(out.glob(".convert-*"))
    if sig == signal.SIGINT:
        assert leftovers == []  # cleaned up on the way out
    else:
        assert len(leftovers) == 1  # a killed process cannot clean up: the next run does
        conv.remove_stale_staging(out)
        assert not list(out.glob(".convert-*"))


def _tmpfs(path: Path, size: str):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    return path


@pytest.mark.slow
def test_full_disk_is_refused_up_front(hf_checkpoint, tmp_path):
    disk = _tmpfs(tmp_path / "disk", "8m")
    try:
        line = one_error_line(run_convert_script(hf_checkpoint, "--outdir", disk))
        assert "not enough disk space" in line
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.slow
def test_disk_filling_up_during_the_conversion_is_one_error(hf_checkpoint, tmp_path, monkeypatch):
    disk = _tmpfs(tmp_path / "disk", "100m")  # the F16 file needs 260 MB
    monkeypatch.setattr(conv, "check_disk_space", lambda *a: None)  # let it start and run out
    try:
        with pytest.raises(ModelError, match="is full"):
            conv.convert(hf_checkpoint, quant="", outdir=disk, smoke_test=False, progress=False)
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.fixture
def hub_cache_with_checkpoint(hf_checkpoint, tmp_path, monkeypatch):
    files = {f.name: f.read_bytes() for f in hf_checkpoint.iterdir()}
    return make_hub_cache(tmp_path / "hub", "org/Tiny-Math", files, COMMIT, monkeypatch)


@pytest.mark.slow
def test_a_hub_repo_id_converts_from_the_cache_and_records_its_commit(hub_cache_with_checkpoint, tmp_path):
    result = conv.convert("org/Tiny-Math", quant="", outdir=tmp_path / "m", smoke_test=False, progress=False)
    assert result.name == "Tiny-Math" and result.revision == COMMIT
    data = json.loads(result.manifest.read_text())
    assert data["source"] == "org/Tiny-Math" and data["source_kind"] == "hub" and data["revision"] == COMMIT
    assert [f.file for f in result.files] == ["Tiny-Math-F16.gguf"]


def test_an_unknown_hub_repo_offline_is_one_line(hub_cache_with_checkpoint, tmp_path, runner):
    result = runner.invoke(cli, ["convert", "org/Not-There", "--outdir", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the Hub")
