"""Tier-2 tests of the ``aimo-gguf`` command line through click's CliRunner.

Error cases never load a model. The happy paths (marked ``model``) run the real
embedded SmolLM2-135M-Instruct Q4_1 on three tiny problems with 8 tokens per
sample; ``-t 1`` keeps them fast on a machine whose few cores are shared.
"""

from __future__ import annotations

import csv
import json

import pytest
from helpers import gpu_offload_supported

from aimo_gguf.cli import cli

FAST = ["--samples", "1", "--max-tokens", "8", "-b", "4", "--temperature", "0", "-t", "1"]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.model
def test_run_quiet_writes_submission_summary_and_traces(runner, tmp_path, problems_csv):
    out, summary, traces = tmp_path / "out.csv", tmp_path / "s.json", tmp_path / "t.jsonl"
    result = runner.invoke(
        cli,
        ["run", str(problems_csv), *FAST, "-q", "-o", str(out), "--summary", str(summary), "--traces", str(traces)],
    )
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert result.stdout == ""  # -q: no table

    rows = read_csv(out)
    assert rows[0] == ["id", "answer"]
    assert [r[0] for r in rows[1:]] == ["b", "a", "c"]  # input order, not sorted, not finishing order
    for _, answer in rows[1:]:
        assert str(int(answer)) == answer

    s = json.loads(summary.read_text())
    assert s["problems"] == s["problems_done"] == 3
    assert s["samples_per_problem"] == 1
    assert s["samples"] + s["samples_skipped"] == 3
    assert s["samples"] == 3  # one sample per problem: nothing to stop early
    assert s["generated_tokens"] > 0
    assert s["generated_tokens"] <= 3 * 8
    assert s["prompt_tokens"] > 0
    assert s["n_gpu_layers"] == 0
    assert s["n_gpu_layers_requested"] == 0
    assert s["peak_rss_mb"] > 0
    assert s["batch_size"] == 4 and s["max_tokens"] == 8 and s["threads"] == 1
    assert s["graded"] == 2  # "c" has no answer
    assert s["interrupted"] is False
    assert sum(s["finish_reasons"].values()) == 3
    assert s["model"].endswith(".gguf")

    lines = [json.loads(line) for line in traces.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    assert sorted(d["id"] for d in lines) == ["a", "b", "c"]
    for d in lines:
        assert {"id", "sample", "answer", "text"} <= set(d)
        assert d["sample"] == 0
        assert d["answer"] is None or isinstance(d["answer"], int)
    # A traced answer is the submission's answer (one sample per problem), or the fallback when None.
    submitted = {r[0]: int(r[1]) for r in rows[1:]}
    for d in lines:
        assert submitted[d["id"]] == (0 if d["answer"] is None else d["answer"])


@pytest.mark.model
def test_run_prints_tables_when_not_quiet(runner, tmp_path, problems_csv):
    out = tmp_path / "out.csv"
    result = runner.invoke(cli, ["run", str(problems_csv), *FAST, "-o", str(out)])
    assert result.exit_code == 0, result.output
    stdout = result.stdout.splitlines()
    assert any(line.startswith("problems") and "3/3" in line for line in stdout), result.stdout
    assert any(line.startswith("samples") for line in stdout)
    assert any(line.startswith("GPU layers") for line in stdout)
    # The per-problem table lists the ids in input order.
    header = next(i for i, line in enumerate(stdout) if line.split()[:3] == ["id", "answer", "votes"])
    assert [line.split()[0] for line in stdout[header + 1 : header + 4]] == ["b", "a", "c"]
    assert f"wrote {out}" in result.stderr
    assert out.exists()


@pytest.mark.model
@pytest.mark.skipif(gpu_offload_supported(), reason="this llama-cpp-python build can offload to a GPU")
def test_run_gpu_layers_on_cpu_build_falls_back(runner, tmp_path, problems_csv):
    summary = tmp_path / "s.json"
    result = runner.invoke(
        cli,
        ["run", str(problems_csv), *FAST, "--n-gpu-layers", "40", "-q", "-o", str(tmp_path / "o.csv"),
         "--summary", str(summary)],
    )
    assert result.exit_code == 0, result.output
    assert "running on CPU" in result.stderr
    s = json.loads(summary.read_text())
    assert s["n_gpu_layers"] == 0
    assert s["n_gpu_layers_requested"] == 40
    assert s["gpu_offload_supported"] is False
    assert any("running on CPU" in note for note in s["notes"])


@pytest.mark.model
def test_run_options_from_environment(runner, tmp_path, problems_csv):
    summary = tmp_path / "s.json"
    args = ["run", str(problems_csv), "--max-tokens", "8", "-b", "4", "--temperature", "0", "-t", "1", "-q",
            "-o", str(tmp_path / "o.csv"), "--summary", str(summary)]
    result = runner.invoke(cli, args, env={"AIMO_GGUF_SAMPLES": "2", "AIMO_GGUF_NO_SUCH_OPTION": "1"})
    assert result.exit_code == 0, result.output
    s = json.loads(summary.read_text())
    assert s["samples_per_problem"] == 2
    assert s["samples"] + s["samples_skipped"] == 3 * 2
