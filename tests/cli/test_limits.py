"""llama.cpp's limits and the model's, checked before any load (issue 20, items 10-12).

A context past the model's trained one or past llama.cpp's 32-bit count of
KV cells, more sequences than llama.cpp decodes together, more threads than
ggml runs: each is one ``Error:`` line, exit 2, on every command that takes
the option, before a model loads (a load outside the model tier fails the
test). A bench whose every row failed exits non-zero.
"""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error

from aimo_gguf.cli import cli
from aimo_gguf.config import RunConfig
from aimo_gguf.engine.limits import (
    MAX_THREADS,
    MAX_TOTAL_CTX,
    check_context,
    max_sequences,
)
from aimo_gguf.errors import InputError

TRAINED = 4096


def header_gguf(path, *, context_length: int = TRAINED):
    """A GGUF of metadata alone (no tensors): what the checks read, and nothing that would load."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(context_length)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


@pytest.fixture
def model(tmp_path):
    return header_gguf(tmp_path / "m.gguf")


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,problem\na,What is 1 + 1?\n")
    return path


def test_the_sequence_limit_is_the_bindings():
    import llama_cpp

    assert max_sequences() == llama_cpp.llama_max_parallel_sequences() == 256  # LLAMA_MAX_SEQ in 0.3.36


# --- sequences ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("over", [1, 2, 256, 10**6 - 256])
def test_more_sequences_than_llama_cpp_decodes_together_is_one_line(runner, model, problems, tmp_path, over):
    n = max_sequences() + over
    run = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "s.csv"), "-b", str(n)])
    assert_one_line_error(run, f"--batch-size {n}", f"at most {max_sequences()} sequences", "LLAMA_MAX_SEQ")
    bench = runner.invoke(cli, ["bench", "-m", str(model), "--batch-sizes", f"1,{n}", "-q"])
    assert_one_line_error(bench, f"--batch-sizes {n}", "LLAMA_MAX_SEQ")


@pytest.mark.parametrize("n", [1, 16, 256])
def test_batch_sizes_up_to_the_limit_are_accepted(n):
    assert RunConfig(batch_size=n).batch_size == n


@pytest.mark.parametrize("budget_gib", [1, 64, 10**6])
def test_batch_size_auto_never_picks_more_than_the_limit(budget_gib):
    from aimo_gguf.fit.memory import ModelShape, largest_batch

    tiny = ModelShape(name="tiny", file_type="F16", n_params=1000, file_bytes=2000, has_chat_template=True,
                      architecture="llama", n_layers=1, n_ctx_train=TRAINED, n_vocab=100, block_bytes=(1000,),
                      output_bytes=100, input_bytes=100, kv_elements=(128,), swa_layers=(False,), sliding_window=0)
    picked = largest_batch(tiny, ctx=256, max_memory=budget_gib * 2**30)
    assert 1 <= picked <= max_sequences()
    if budget_gib >= 64:
        assert picked == max_sequences()  # a budget that holds more stops at the limit, not past it


def test_split_batch_auto_never_picks_more_than_the_limit(monkeypatch, model):
    from aimo_gguf.fit import plan as loading
    from aimo_gguf.fit import shares as split

    monkeypatch.setattr(split, "device_shares", lambda *a, **k: type("Shares", (), {"fits": lambda s, f, r: True})())
    config = RunConfig(batch_size="auto", n_gpu_layers=-1)
    assert loading._split_batch(config, None, (2**40, 2**40), -1, []) == max_sequences()


# --- context ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--ctx", str(TRAINED + 1)], [f"--ctx {TRAINED + 1}", f"trained for ({TRAINED} tokens)"]),
    (["--ctx", "1000000000"], ["--ctx 1000000000", f"trained for ({TRAINED} tokens)"]),
    (["--max-tokens", str(TRAINED)], [f"512 + --max-tokens {TRAINED}", f"trained for ({TRAINED} tokens)"]),
    (["--max-tokens", "1000000000"], ["--max-tokens 1000000000", "trained for"]),
    (["--ctx", str(TRAINED + 1), "-b", "auto", "--max-memory", "1GiB"], [f"--ctx {TRAINED + 1}"]),
])
def test_a_context_longer_than_the_model_was_trained_for_is_one_line(runner, model, problems, tmp_path, flags,
                                                                     fragments):
    run = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "s.csv"), *flags])
    assert_one_line_error(run, *fragments)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(("ctx", "batch"), [(2**24 + 1, 256), (2**31, 2), (2**32 - 512, 3)])
def test_more_kv_cells_than_llama_cpp_counts_is_one_line_not_a_wrapped_total(runner, tmp_path, problems, ctx,
                                                                             batch):
    huge = header_gguf(tmp_path / "huge.gguf", context_length=2**32 - 1)  # a header that claims anything
    run = runner.invoke(cli, ["run", str(problems), "-m", str(huge), "-o", str(tmp_path / "s.csv"), "--ctx",
                              str(ctx), "-b", str(batch)])
    line = assert_one_line_error(run, f"--ctx {ctx}", f"{batch} sequences", f"more than the {MAX_TOTAL_CTX}")
    assert str((-(-ctx // 256) * 256 * batch)) in line  # the real total, not its 32-bit remainder


@pytest.mark.parametrize("ctx", [16, 1000, TRAINED])
def test_contexts_within_the_trained_one_pass(model, ctx):
    check_context(model, ctx=ctx, batch_size=max_sequences())


def test_the_engine_checks_before_it_loads(model):
    from aimo_gguf.engine import Engine

    for kwargs, fragment in [({"ctx": TRAINED + 1}, "trained for"), ({"batch_size": 257}, "LLAMA_MAX_SEQ"),
                             ({"threads": MAX_THREADS + 1}, "GGML_MAX_N_THREADS")]:
        with pytest.raises(InputError, match=fragment):
            Engine(model, **{"ctx": 64, "batch_size": 1, **kwargs})  # a load would fail this tier's guard


# --- threads ------------------------------------------------------------------------------------------------


def _threads_commands(tmp_path, model, problems):
    hf = tmp_path / "hf"
    hf.mkdir()
    return {
        "run": ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "s.csv")],
        "bench": ["bench", "-m", str(model), "--batch-sizes", "1", "-q"],
        "quantize": ["quantize", str(model), str(tmp_path / "q.gguf"), "--type", "Q8_0"],
        "synth": ["synth", "--like", "Qwen2.5-0.5B-Instruct", "-o", str(tmp_path / "synth.gguf"), "-q"],
        "convert": ["convert", str(hf), "--outdir", str(tmp_path / "out"), "-q"],
        "compare": ["compare", str(model), str(model), "-q"],
    }


@pytest.mark.parametrize("command", ["run", "bench", "quantize", "synth", "convert", "compare"])
@pytest.mark.parametrize("threads", [MAX_THREADS + 1, 10000])
def test_more_threads_than_ggml_runs_is_one_line_on_every_command(runner, tmp_path, model, problems, command,
                                                                  threads):
    args = _threads_commands(tmp_path, model, problems)[command]
    result = runner.invoke(cli, [*args, "-t", str(threads)])
    assert_one_line_error(result, f"--threads {threads}", f"at most {MAX_THREADS} threads")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.gguf", "p.csv", "hf"])  # nothing written


def test_threads_up_to_the_limit_are_accepted():
    assert RunConfig(threads=MAX_THREADS).threads == MAX_THREADS


# --- a bench whose every row failed -------------------------------------------------------------------------


def _bench_result(errors):
    from aimo_gguf.bench import BenchResult, BenchRow, BenchSettings

    settings = BenchSettings(model="m.gguf", n_gpu_layers=0, threads=1, batch_sizes=tuple(range(1, len(errors) + 1)),
                             max_tokens=4, problems=2, samples=1, ctx=516, baseline=False)
    rows = [BenchRow(kind="engine", batch_size=i + 1, error=e, generated_tokens=0 if e else 8,
                     generated_tokens_per_s=0.0 if e else 10.0) for i, e in enumerate(errors)]
    return BenchResult(settings=settings, baseline=None, rows=rows)


@pytest.mark.parametrize(("errors", "code"), [
    (["could not load"], 1),
    (["could not load", "out of memory", "decode failed"], 1),
    (["could not load", None], 0),
    ([None, None], 0),
])
def test_a_bench_exits_non_zero_when_every_row_failed(runner, monkeypatch, model, tmp_path, errors, code):
    import aimo_gguf.bench as bench_module

    monkeypatch.setattr(bench_module, "bench", lambda **kwargs: _bench_result(errors))
    out = tmp_path / "b.json"
    result = runner.invoke(cli, ["bench", "-m", str(model), "--batch-sizes", "1", "--json-file", str(out), "-q"])
    assert result.exit_code == code, result.output
    assert out.exists()  # the rows and their errors are still written
    if code:
        assert result.stderr.strip().splitlines() == [f"Error: every engine row failed (batch 1: {errors[0]})"]
        assert "could not load" in result.stdout  # the table shows each row's error
