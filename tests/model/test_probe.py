"""The CPU probe: a child decodes a tiny model of every type with AMX kernels, its verdict cached per
build and CPU; a child that dies of SIGILL (a real illegal instruction, through the test-only fault
hook) turns the extra buffer types off, said once in the notes and the summary; --no-repack skips it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import clean_env

from aimo_gguf.engine import Engine, Request, SamplingParams, probe
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.gguf.header import read_header


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "cpu-probe"


def test_the_probe_model_has_a_layer_of_every_type_with_amx_kernels(tmp_path):
    header = read_header(probe.write_probe_model(tmp_path / "p.gguf"))
    types = {t.name.split(".")[1]: t.type_name for t in header.tensors if t.name.endswith("attn_q.weight")}
    assert sorted(types.values()) == sorted(probe.AMX_TYPES)
    assert all(t.shape[0] % 256 == 0 for t in header.tensors if len(t.shape) == 2)  # the K-quants' alignment


def test_the_probe_passes_here_and_its_verdict_is_kept_per_build_and_cpu(cache):
    first = probe.extra_buffers_verdict()
    assert (first.traps, first.cached) == (False, False)
    assert [p.name for p in cache.iterdir()] == [f"{probe.build_key()}.json"]
    again = probe.extra_buffers_verdict()
    assert (again.traps, again.cached, again.detail) == (False, True, first.detail)


@pytest.mark.parametrize("garbage", ["", "{", "[]", '{"traps": true}', '{"detail": "x"}', "null"])
def test_an_unreadable_cache_entry_is_probed_again(cache, garbage):
    cache.mkdir(parents=True)
    (cache / f"{probe.build_key()}.json").write_text(garbage)
    verdict = probe.extra_buffers_verdict()
    assert (verdict.traps, verdict.cached) == (False, False)
    assert json.loads((cache / f"{probe.build_key()}.json").read_text())["traps"] is False


def test_a_child_killed_by_an_illegal_instruction_turns_the_extra_buffers_off(cache, monkeypatch):
    monkeypatch.setenv(probe.FAULT_ENV, "sigill")
    verdict = probe.extra_buffers_verdict()
    assert verdict.traps and not verdict.cached and "SIGILL" in verdict.detail
    with Engine(default_model_path(), ctx=256, batch_size=2, threads=2) as engine:
        assert engine.info.repack is False
        assert [n for n in engine.info.notes if "--no-repack" in n] == [verdict.note]
        prompt = engine.tokenize("What is 7 + 5?")
        done = list(engine.generate([Request(key=i, prompt=prompt, max_tokens=8, seed=i,
                                             sampling=SamplingParams(temperature=0.0)) for i in range(2)]))
        assert len(done) == 2 and all(len(c.tokens) == 8 or c.finish_reason == "eos" for c in done)


def _run(tmp_path, *flags, **env):
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    done = subprocess.run([sys.executable, "-m", "aimo_gguf", "run", "-n", "1", "--max-tokens", "8", "-o", str(out),
                           "--summary", str(summary), *flags], capture_output=True, text=True,
                          env=clean_env(**env), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(summary.read_text())


def test_a_run_whose_probe_dies_of_sigill_says_so_once_and_answers_everything(tmp_path):
    done, summary = _run(tmp_path, AIMO_GGUF_CACHE=str(tmp_path / "c"), AIMO_GGUF_PROBE_FAULT="sigill")
    assert summary["repack"] is False and summary["problems_done"] == summary["problems"] > 0
    assert sum("died of SIGILL" in n for n in summary["notes"]) == 1
    assert done.stderr.count("died of SIGILL") == 1


def test_no_repack_loads_without_the_extra_buffers_and_runs_no_probe(tmp_path):
    done, summary = _run(tmp_path, "--no-repack", AIMO_GGUF_CACHE=str(tmp_path / "c"))
    assert summary["repack"] is False and summary["notes"] == []
    assert not (tmp_path / "c").exists()  # no probe ran
    _, summary = _run(tmp_path, AIMO_GGUF_CACHE=str(tmp_path / "c"))
    assert summary["repack"] is True and list((tmp_path / "c" / "cpu-probe").iterdir())
