"""``aimo-gguf bench`` and ``aimo_gguf.bench``.

Pure logic (parsing, the table, JSON, the plot) on hand-made results; the real
SmolLM2 model (tests marked ``model``) on tiny work: batch sizes 1 and 2,
2 problems x 4 tokens, one thread.
"""

from __future__ import annotations

import inspect
import json
import sys

import pytest
from click.testing import CliRunner

from aimo_gguf import bench as bench_module
from aimo_gguf.bench import (
    BenchResult,
    BenchRow,
    BenchSettings,
    bench,
    parse_batch_sizes,
    render_table,
    synthetic_problems,
    write_json,
)
from aimo_gguf.cli import cli
from aimo_gguf.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


def table_rows(table: str) -> list[list[str]]:
    """The body rows of the markdown table (header and separator dropped)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---"), table
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def made_result() -> BenchResult:
    settings = BenchSettings(model="/models/m.gguf", model_description="llama 135M Q4_1", threads=2,
                             batch_sizes=(1, 4, 16), max_tokens=8, problems=3, samples=2, ctx=520)
    base = BenchRow(kind="baseline", batch_size=1, prompt_tokens=90, generated_tokens=48, completions=6,
                    seconds=0.5, prompt_tokens_per_s=300.0, generated_tokens_per_s=96.0, problems_per_s=6.0,
                    step_ms=9.5, steps=42, peak_rss_mb=250.0, rss_growth_mb=110.0, kv_bytes=17694720,
                    speedup=1.0)
    rows = [
        BenchRow(kind="engine", batch_size=1, generated_tokens=48, completions=6, seconds=0.4,
                 prompt_tokens_per_s=350.0, generated_tokens_per_s=120.0, problems_per_s=7.5, step_ms=8.0,
                 peak_rss_mb=240.0, rss_growth_mb=120.0, kv_bytes=17694720, speedup=1.25),
        BenchRow(kind="engine", batch_size=4, generated_tokens=48, completions=6, seconds=0.25,
                 prompt_tokens_per_s=None, generated_tokens_per_s=192.0, problems_per_s=12.0, step_ms=None,
                 peak_rss_mb=260.0, rss_growth_mb=None, kv_bytes=None, gpu_peak_mb=1234.0, speedup=2.0),
        BenchRow(kind="engine", batch_size=16, error="llama.cpp could not create a context of 16 x 520 tokens"),
    ]
    return BenchResult(settings=settings, baseline=base, rows=rows, machine={"platform": "test"},
                       notes=["GPU offload is not available"])


# --- pure logic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("1,2,4,8,16,32", (1, 2, 4, 8, 16, 32)), (" 16, 1 ,4,4", (1, 4, 16)), ("3", (3,)), ([8, 2], (2, 8)),
     ((1,), (1,)), (5, (5,))],
)
def test_parse_batch_sizes(value, expected):
    assert parse_batch_sizes(value) == expected


@pytest.mark.parametrize("value", ["0,x", "", "1,,2", "-1", "1.5", "x", "0", [0], [True], ["a"]])
def test_parse_batch_sizes_rejects(value):
    with pytest.raises(InputError, match="--batch-sizes must be positive integers"):
        parse_batch_sizes(value)


def test_synthetic_problems():
    problems = synthetic_problems(3)
    assert [p.id for p in problems] == ["p0", "p1", "p2"]
    assert problems[1].problem == "What is 4 times 8?"
    assert problems[1].answer == 32
    many = synthetic_problems(200)  # also the stress run's problems: ids must stay unique
    assert len({p.id for p in many}) == 200
    assert all(p.answer == int(p.problem.split()[2]) * int(p.problem.split()[4].rstrip("?")) for p in many)


def test_render_table():
    table = render_table(made_result())
    title = table.splitlines()[0]
    assert "m.gguf (llama 135M Q4_1)" in title
    assert "3 problems x 2 samples x 8 tokens" in title and "EOS suppressed" in title
    header = [line for line in table.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench_module.TABLE_COLUMNS)
    rows = table_rows(table)
    assert len(rows) == 4  # baseline + one per batch size
    assert all(len(r) == len(bench_module.TABLE_COLUMNS) for r in rows)
    col = {name: i for i, name in enumerate(bench_module.TABLE_COLUMNS)}
    base, b1, b4, b16 = rows
    assert base[col["run"]] == "create_completion loop" and base[col["speed-up"]] == "1.00x"
    assert base[col["KV cache MiB"]] == "16.9"
    assert [r[col["batch"]] for r in rows] == ["1", "1", "4", "16"]
    assert b1[col["gen tok/s"]] == "120.0" and b1[col["speed-up"]] == "1.25x"
    assert b1[col["generated tokens"]] == "48" and b1[col["GPU peak MiB"]] == "-"
    # Missing measurements show as "-"; a failed row says so and its error goes below the table.
    assert b4[col["prompt tok/s"]] == "-" and b4[col["step ms"]] == "-" and b4[col["KV cache MiB"]] == "-"
    assert b4[col["RSS growth MiB"]] == "-" and b4[col["GPU peak MiB"]] == "1234"
    assert b16[col["generated tokens"]] == "failed" and set(b16[3:]) == {"-"}
    assert "note: engine, batch 16: llama.cpp could not create a context" in table
    assert "note: GPU offload is not available" in table


def test_render_table_without_baseline():
    result = made_result()
    result.baseline = None
    for row in result.rows:
        row.speedup = None
    rows = table_rows(render_table(result))
    assert [r[0] for r in rows] == ["engine"] * 3
    assert all(r[-1] == "-" for r in rows)


def test_write_json(tmp_path):
    path = tmp_path / "out" / "bench.json"
    write_json(made_result(), path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {"settings", "machine", "baseline", "rows", "notes"}
    assert data["settings"]["batch_sizes"] == [1, 4, 16]
    assert data["settings"]["expected_generated_tokens"] == 3 * 2 * 8
    assert data["baseline"]["label"] == "create_completion loop"
    assert data["baseline"]["kv_bytes"] == 17694720
    assert [r["batch_size"] for r in data["rows"]] == [1, 4, 16]
    assert data["rows"][2]["error"].startswith("llama.cpp could not create")
    assert data["rows"][1]["step_ms"] is None


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "bench.png"
    bench_module.plot(made_result(), path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_without_matplotlib_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(InputError, match=r"pip install 'aimo-gguf\[plot\]'"):
        bench_module.plot(made_result(), tmp_path / "b.png")


class _FakeNvml:
    """Just enough of pynvml: memory in use grows by 100 MiB at each query."""

    def __init__(self):
        self.used = 1000 * 2**20

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.used += 100 * 2**20
        return type("Mem", (), {"used": self.used, "total": 80 * 2**30})()


def test_gpu_probe_with_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.setattr(bench_module, "_nvml", {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert bench_module._gpu_info(True) == {"gpu": "Fake GPU", "gpu_memory_total_mib": 80 * 1024}
    probe = bench_module._GpuProbe.open(True)
    probe.sample(force=True)
    assert probe.peak_mb() > 1000
    assert bench_module._GpuProbe.open(False) is None  # a CPU build: no NVML at all


def test_gpu_probe_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(bench_module, "_nvml", {})
    assert bench_module._GpuProbe.open(True) is None
    assert bench_module._gpu_info(True) == {"gpu": None, "gpu_memory_total_mib": None}


def test_rss_probe_is_fresh_per_row():
    first = bench_module._RssProbe()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert first.peak() >= first.before + 50
    del block
    second = bench_module._RssProbe()
    if second.exact:  # Linux: the kernel's high-water mark was reset, the old peak is gone
        assert second.peak() < first.peak() - 30


def test_library_keywords_match_cli_flags():
    params = set(inspect.signature(bench).parameters)
    command = cli.commands["bench"]
    # --stress and --time-limit drive aimo_gguf.stress after the table, not bench()
    flags = {p.name for p in command.params} - {"json_path", "plot_path", "quiet", "no_baseline", "stress", "time_limit"}
    assert flags | {"baseline", "progress"} == params
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in inspect.signature(bench).parameters.values())


# --- CLI errors (no model is loaded) ------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-sizes", "0,x"], "--batch-sizes must be positive integers separated by commas"),
        (["--batch-sizes", ""], "--batch-sizes must be positive integers"),
        (["--problems", "0"], "--problems must be at least 1, got 0"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["-t", "0"], "--threads must be at least 1"),
        (["-ngl", "-2"], "--n-gpu-layers must be -1 (all) or more"),
    ],
)
def test_bad_values_one_line_exit_2(runner, args, fragment):
    result = runner.invoke(cli, ["bench", *args])
    assert_one_line_error(result, fragment)


def test_missing_model_one_line(runner, tmp_path):
    result = runner.invoke(cli, ["bench", "-m", str(tmp_path / "nope.gguf")])
    assert_one_line_error(result, "Model file not found")


def test_plot_without_matplotlib_fails_before_measuring(runner, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(cli, ["bench", "--plot", str(tmp_path / "b.png"), "-m", str(tmp_path / "nope.gguf")])
    assert_one_line_error(result, "--plot needs matplotlib", "pip install 'aimo-gguf[plot]'")


def test_unwritable_json_fails_before_measuring(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(cli, ["bench", "--json", str(blocker / "b.json")])
    assert_one_line_error(result, "cannot write the JSON")


def test_help_lists_options(runner):
    result = runner.invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for flag in ("--model", "-ngl", "--threads", "--batch-sizes", "--max-tokens", "--problems", "--samples",
                 "--no-baseline", "--json", "--plot"):
        assert flag in result.stdout


# --- the real model -----------------------------------------------------------------------

TINY = ["--batch-sizes", "1,2", "--max-tokens", "4", "--problems", "2", "-t", "1"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run, with --json and (when matplotlib is installed) --plot."""
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", *TINY, "--json", str(out / "bench.json")]
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
    col = {name: i for i, name in enumerate(bench_module.TABLE_COLUMNS)}
    assert [(r[col["run"]], r[col["batch"]]) for r in rows] == [
        ("create_completion loop", "1"), ("engine", "1"), ("engine", "2")]
    assert all(r[col["generated tokens"]] == str(2 * 1 * 4) for r in rows)
    assert rows[0][col["speed-up"]] == "1.00x"
    assert all(r[col["speed-up"]].endswith("x") for r in rows)
    assert all(float(r[col["peak RSS MiB"]]) > 0 for r in rows)
    assert "note:" not in result.stdout  # no row failed, no loader note on a CPU run at -ngl 0
    # Progress goes to stderr, one line per phase; the table only to stdout.
    assert "aimo-gguf bench: batch 2:" in result.stderr
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
    # The engine decodes every prompt; the batch-2 KV cache is twice batch 1's.
    assert data["rows"][0]["prompt_tokens"] == sum(s["prompt_tokens_per_problem"])
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
    assert len(table_rows(render_table(result))) == 1
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
    assert "KV q8_0" in render_table(result)


@pytest.mark.model
def test_bench_auto_batch_follows_the_budget_and_shows_the_estimate():
    small = bench(batch_sizes="auto", max_memory="250MiB", max_tokens=4, problems=2, threads=1, baseline=False,
                  progress=False)
    large = bench(batch_sizes="auto", max_memory="600MiB", max_tokens=4, problems=2, threads=1, baseline=False,
                  progress=False)
    assert 1 <= small.rows[0].batch_size < large.rows[0].batch_size
    for result in (small, large):
        row = result.rows[0]
        assert row.error is None
        # the estimate stands beside the measured growth, within the 15% the README promises
        assert abs(row.estimate_mb / row.rss_growth_mb - 1) < 0.15, (row.estimate_mb, row.rss_growth_mb)
    assert "estimate MiB" in render_table(small)
