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
from helpers import table_rows

from aimo_gguf import bench as bench_module
from aimo_gguf.bench import (
    BenchResult,
    BenchRow,
    BenchSettings,
    bench,
    parse_batch_sizes,
    probes,
    synthetic_problems,
)
from aimo_gguf.bench.results import TABLE_COLUMNS
from aimo_gguf.cli import cli
from aimo_gguf.errors import InputError
from aimo_gguf.fit import gpus as devices

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
                 peak_rss_mb=260.0, rss_growth_mb=None, kv_bytes=None, gpu_peak_mb=1734.0, gpu_growth_mb=1234.0,
                 estimate_gpu_mb=1200.4, speedup=2.0),
        BenchRow(kind="engine", batch_size=16, error="llama.cpp could not create a context of 16 x 520 tokens"),
    ]
    return BenchResult(settings=settings, baseline=base, rows=rows, machine={"platform": "test"},
                       notes=["GPU offload is not available"])


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


def test_table():
    table = made_result().table()
    title = table.splitlines()[0]
    assert "m.gguf (llama 135M Q4_1)" in title
    assert "3 problems x 2 samples x 8 tokens" in title and "EOS suppressed" in title
    header = [line for line in table.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == list(TABLE_COLUMNS)
    rows = table_rows(table)
    assert len(rows) == 4  # baseline + one per batch size
    assert all(len(r) == len(TABLE_COLUMNS) for r in rows)
    col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    base, b1, b4, b16 = rows
    assert base[col["run"]] == "create_completion loop" and base[col["speed-up"]] == "1.00x"
    assert base[col["KV cache MiB"]] == "16.9"
    assert [r[col["batch"]] for r in rows] == ["1", "1", "4", "16"]
    assert b1[col["gen tok/s"]] == "120.0" and b1[col["speed-up"]] == "1.25x"
    assert b1[col["generated tokens"]] == "48" and b1[col["GPU growth / estimate MiB"]] == "-"
    # Missing measurements show as "-"; a failed row says so and its error goes below the table.
    assert b4[col["prompt tok/s"]] == "-" and b4[col["step ms"]] == "-" and b4[col["KV cache MiB"]] == "-"
    assert b4[col["RSS growth MiB"]] == "-" and b4[col["GPU growth / estimate MiB"]] == "1234 / 1200"
    assert b16[col["generated tokens"]] == "failed" and set(b16[3:]) == {"-"}
    assert "note: engine, batch 16: llama.cpp could not create a context" in table
    assert "note: GPU offload is not available" in table


@pytest.mark.parametrize("several", [False, True])
def test_host_work_columns_and_the_sampler_of_each_row(several):
    result = made_result()
    result.settings.samplers = ("batched", "chain") if several else ("auto",)
    result.settings.temperature, result.settings.min_p, result.settings.vote = 1.0, 0.02, "entropy"
    row = result.rows[0]
    row.sampler, row.host_ms, row.draw_ms, row.confidence_ms, row.rest_ms, row.host_cpu_ms = (
        "batched", 0.1234, 0.08, 0.03, 0.0134, 0.11)
    table = result.table()
    assert "min-p 0.02, vote entropy" in table.splitlines()[0]
    col = {name: i for i, name in enumerate(TABLE_COLUMNS)}
    b1 = table_rows(table)[1]
    assert [b1[col[c]] for c in ("host ms/seq-step", "draw ms", "confidence ms", "rest ms", "host CPU ms")] == [
        "0.123", "0.080", "0.030", "0.013", "0.110"]
    assert b1[col["run"]] == ("engine, batched" if several else "engine")  # the path named when several ran
    assert table_rows(table)[2][col["host ms/seq-step"]] == "-"


@pytest.mark.parametrize(("value", "expected"), [("batched,chain", ("batched", "chain")), (" chain ", ("chain",)),
                                                 (["backend", "backend", "auto"], ("backend", "auto"))])
def test_parse_samplers(value, expected):
    assert bench_module.parse_samplers(value) == expected


@pytest.mark.parametrize("value", ["", "batched,gpu", "chain,,"])
def test_parse_samplers_rejects(value):
    with pytest.raises(InputError, match="--samplers must be sampling paths"):
        bench_module.parse_samplers(value)


def test_table_without_baseline():
    result = made_result()
    result.baseline = None
    for row in result.rows:
        row.speedup = None
    rows = table_rows(result.table())
    assert [r[0] for r in rows] == ["engine"] * 3
    assert all(r[-1] == "-" for r in rows)


def test_write_json(tmp_path):
    path = tmp_path / "out" / "bench.json"
    made_result().write_json(path)
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
        return type("Mem", (), {"used": self.used, "total": 80 * 2**30, "free": 80 * 2**30 - self.used})()


def test_gpu_probe_with_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.setattr(devices, "_nvml", {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert probes.gpu_info(True) == {"gpu": "Fake GPU", "gpu_memory_total_mib": 80 * 1024}
    probe = probes.GpuProbe.open(True)  # each read of the fake uses 100 MiB more
    before = probe.before_bytes / 2**20
    probe.sample(force=True)
    peak = probe.peak_mb()
    assert peak > 1000 and peak == before + 200
    assert probe.growth_mb() == 300  # one more read: the peak minus what was in use when it opened
    assert probes.GpuProbe.open(False) is None  # a CPU build: no NVML at all


def test_gpu_probe_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(devices, "_nvml", {})
    assert probes.GpuProbe.open(True) is None
    assert probes.gpu_info(True) == {"gpu": None, "gpu_memory_total_mib": None}


def test_rss_probe_is_fresh_per_row():
    first = probes.RssProbe()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert first.peak() >= first.before + 50
    del block
    second = probes.RssProbe()
    if second.exact:  # Linux: the kernel's high-water mark was reset, the old peak is gone
        assert second.peak() < first.peak() - 30


def test_library_keywords_match_cli_flags():
    params = set(inspect.signature(bench).parameters)
    command = cli.commands["bench"]
    # --stress and --time-limit drive aimo_gguf.bench.stress after the table, not bench(); --json prints
    flags = {p.name for p in command.params} - {"as_json", "json_file", "plot", "quiet", "stress", "time_limit"}
    assert flags | {"progress"} == params
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in inspect.signature(bench).parameters.values())
