"""``aimo-gguf bench`` and ``aimo_gguf.bench``.

Pure logic (parsing, the table, JSON, the plot) on hand-made results; the real
SmolLM2 model (tests marked ``model``) on tiny work: batch sizes 1 and 2,
2 problems x 4 tokens, one thread.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, clean_env, table_rows

from aimo_gguf.bench import bench
from aimo_gguf.bench.results import TABLE_COLUMNS
from aimo_gguf.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


TINY = ["--batch-sizes", "1,2", "--max-tokens", "4", "--problems", "2", "-t", "1"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run, with --json-file and (when matplotlib is installed) --plot."""
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", *TINY, "--json-file", str(out / "bench.json")]
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(out / "bench.png")]
    except ImportError:
        pass
    result = CliRunner().invoke(cli, args)
    return result, out


@pytest.mark.model
def test_cli_table(cli_run):
    result, _ = cli_run
    assert result.exit_code == 0, (result.output, result.exception)
    rows = table_rows(result.stdout)
    assert len(rows) == 3  # the baseline, batch 1, batch 2
    col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    assert [(r[col["run"]], r[col["batch"]]) for r in rows] == [
        ("create_completion loop", "1"), ("engine", "1"), ("engine", "2")]
    assert all(r[col["generated tokens"]] == str(2 * 1 * 4) for r in rows)
    assert rows[0][col["speed-up"]] == "1.00x"
    assert all(r[col["speed-up"]].endswith("x") for r in rows)
    assert all(float(r[col["peak RSS MiB"]]) > 0 for r in rows)
    assert "note:" not in result.stdout  # no row failed, no loader note on a CPU run at -ngl 0
    # Progress goes to stderr, one line per phase; the table only to stdout.
    assert "aimo-gguf bench: batch 2, auto sampler:" in result.stderr  # the phase names its sampling path
    assert "aimo-gguf bench: create_completion loop:" in result.stderr
    assert "aimo-gguf bench:" not in result.stdout


@pytest.mark.model
def test_cli_json(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    s = data["settings"]
    assert (s["batch_sizes"], s["max_tokens"], s["problems"], s["samples"], s["threads"]) == ([1, 2], 4, 2, 1, 1)
    assert s["ignore_eos"] is True and s["expected_generated_tokens"] == 8
    assert s["model"].endswith(".gguf") and s["model_description"]
    assert len(s["prompt_tokens_per_problem"]) == 2 and min(s["prompt_tokens_per_problem"]) > 5
    assert data["machine"]["cpu_count_logical"] >= 1 and data["machine"]["llama_cpp_python"]
    rows = [data["baseline"], *data["rows"]]
    assert [r["batch_size"] for r in data["rows"]] == [1, 2]
    for r in rows:
        assert r["error"] is None
        assert r["generated_tokens"] == 2 * 1 * 4
        assert r["completions"] == 2
        assert r["seconds"] > 0 and r["generated_tokens_per_s"] > 0 and r["problems_per_s"] > 0
        assert r["prompt_tokens"] > 0 and r["prompt_tokens_per_s"] > 0
        assert r["step_ms"] > 0 and r["peak_rss_mb"] > 0 and r["rss_growth_mb"] is not None
        assert r["speedup"] > 0
    assert data["baseline"]["speedup"] == 1.0
    # Every prompt token is decoded or reused (batch 1: the second problem keeps the chat template's
    # start in its slot); the batch-2 KV cache is twice batch 1's.
    for r in data["rows"]:
        assert r["prompt_tokens"] + r["reused_prompt_tokens"] == sum(s["prompt_tokens_per_problem"])
    assert data["rows"][0]["reused_prompt_tokens"] > 0
    if data["rows"][0]["kv_bytes"] is not None:
        assert data["rows"][1]["kv_bytes"] == 2 * data["rows"][0]["kv_bytes"]
    if not data["machine"]["gpu_offload_supported"]:
        assert all(r["gpu_peak_mb"] is None for r in rows)


@pytest.mark.model
def test_cli_plot(cli_run):
    pytest.importorskip("matplotlib")
    result, out = cli_run
    assert result.exit_code == 0, result.output
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in result.stderr and "bench.png" in result.stderr


@pytest.mark.model
def test_library_samples_without_baseline(capsys):
    result = bench(batch_sizes=(2,), max_tokens=4, problems=2, samples=2, threads=1, baseline=False,
                   progress=False)
    assert result.baseline is None
    assert [r.batch_size for r in result.rows] == [2]
    row = result.rows[0]
    assert row.error is None and row.generated_tokens == 2 * 2 * 4 and row.completions == 4
    assert row.speedup is None
    assert len(table_rows(result.table())) == 1
    assert capsys.readouterr().err == ""  # progress=False: silent


@pytest.mark.model
def test_ctx_too_small_for_the_work_is_one_line(runner):
    result = runner.invoke(cli, ["bench", "--batch-sizes", "2", "--max-tokens", "4", "--problems", "1", "-t", "1",
                                 "--ctx", "16", "-q"])
    assert_one_line_error(result, "--ctx 16 is too small", "use --ctx")


@pytest.mark.model
def test_bench_measures_a_quantized_kv_cache(tmp_path):
    result = bench(batch_sizes=[2], max_tokens=4, problems=2, threads=1, kv_type="q8_0", baseline=False,
                   progress=False)
    row = result.rows[0]
    assert row.error is None and row.generated_tokens == 8
    f16 = bench(batch_sizes=[2], max_tokens=4, problems=2, threads=1, baseline=False, progress=False).rows[0]
    assert row.kv_bytes == pytest.approx(f16.kv_bytes * 34 / 64, rel=1e-6)
    assert "KV q8_0" in result.table()


@pytest.mark.model
def test_bench_auto_batch_follows_the_budget_and_shows_the_estimate(tmp_path):
    # A fresh process per budget: memory earlier tests freed in this one would hide part of the growth.
    rows = []
    for budget in ("250MiB", "600MiB"):
        out = tmp_path / f"{budget}.json"
        done = subprocess.run([sys.executable, "-m", "aimo_gguf", "bench", "--batch-sizes", "auto", "--max-memory",
                               budget, "--max-tokens", "4", "--problems", "32", "-t", "1", "--no-baseline", "-q",
                               "--json-file", str(out)], capture_output=True, text=True, env=clean_env())
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(out.read_text())["rows"]
        rows.append(row)
    assert 1 <= rows[0]["batch_size"] < rows[1]["batch_size"]
    for row in rows:
        assert row["error"] is None
        # the estimate stands beside the measured growth, within the 10% the README promises
        assert abs(row["estimate_mb"] / row["rss_growth_mb"] - 1) < 0.10, (row["estimate_mb"], row["rss_growth_mb"])


@pytest.mark.model
def test_confidence_rows_run_beside_the_plain_ones_and_give_their_ratio(tmp_path):
    from aimo_gguf.bench import bench

    result = bench(threads=1, batch_sizes="2", max_tokens=4, problems=2, baseline=False, confidence=True,
                   progress=False)
    plain, with_it = result.rows
    assert (plain.confidence, with_it.confidence) == (False, True)
    assert plain.generated_tokens == with_it.generated_tokens == 8
    assert with_it.confidence_ratio == pytest.approx(with_it.generated_tokens_per_s / plain.generated_tokens_per_s)
    assert "engine + confidence (" in result.table()


@pytest.mark.model
def test_sampling_paths_alternate_and_each_row_reports_its_host_work():
    result = bench(threads=1, batch_sizes="2", max_tokens=4, problems=2, baseline=False, progress=False,
                   samplers="batched,chain", temperature=1.0, top_k=0, top_p=1.0, min_p=0.02, vote="entropy")
    assert [(r.sampler, r.confidence) for r in result.rows] == [("batched", True), ("chain", True)]
    for row in result.rows:
        assert row.generated_tokens == 8 and not row.error
        assert row.host_ms > 0 and row.draw_ms > 0 and row.confidence_ms > 0 and row.host_cpu_ms > 0
        assert row.host_ms == pytest.approx(row.draw_ms + row.confidence_ms + row.rest_ms)
    assert "engine, chain + confidence" in result.table()

