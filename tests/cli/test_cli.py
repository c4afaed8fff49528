"""Tier-2 tests of the ``aimo-gguf`` command line through click's CliRunner.

Error cases never load a model. The happy paths (marked ``model``) run the real
embedded SmolLM2-135M-Instruct Q4_1 on three tiny problems with 8 tokens per
sample; ``-t 1`` keeps them fast on a machine whose few cores are shared.
"""

from __future__ import annotations

import pytest
from helpers import assert_one_line_error

from aimo_gguf import __version__
from aimo_gguf.cli import cli


def test_missing_problems_file(runner, tmp_path):
    path = tmp_path / "nope.csv"
    result = runner.invoke(cli, ["run", str(path)])
    assert_one_line_error(result, "not found", str(path))


def test_unsupported_extension(runner, tmp_path):
    path = tmp_path / "problems.txt"
    path.write_text("id,problem\na,What?\n")
    result = runner.invoke(cli, ["run", str(path)])
    assert_one_line_error(result, "unsupported extension '.txt'", ".csv")


def test_csv_without_problem_column(runner, tmp_path):
    path = tmp_path / "problems.csv"
    path.write_text("id,question\na,What?\n")
    result = runner.invoke(cli, ["run", str(path)])
    assert_one_line_error(result, str(path), "missing column 'problem'", "'question'")


def test_duplicate_ids(runner, tmp_path):
    path = tmp_path / "problems.csv"
    path.write_text("id,problem\na,What?\nb,Why?\na,How?\n")
    result = runner.invoke(cli, ["run", str(path)])
    assert_one_line_error(result, "duplicate id 'a'", "row 1", "row 3")


def test_empty_problem_text(runner, tmp_path):
    path = tmp_path / "problems.csv"
    path.write_text("id,problem\na,What?\nb,\n")
    result = runner.invoke(cli, ["run", str(path)])
    assert_one_line_error(result, "'b'", "empty problem text")


def test_model_missing(runner, tmp_path, problems_csv):
    model = tmp_path / "missing.gguf"
    result = runner.invoke(cli, ["run", str(problems_csv), "--model", str(model)])
    assert_one_line_error(result, "Model file not found", str(model))


def test_model_not_gguf(runner, tmp_path, problems_csv):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    result = runner.invoke(cli, ["run", str(problems_csv), "-m", str(model)])
    assert_one_line_error(result, "Not a GGUF file", str(model))


def test_model_is_a_folder(runner, tmp_path, problems_csv):
    result = runner.invoke(cli, ["run", str(problems_csv), "-m", str(tmp_path)])
    assert_one_line_error(result, "folder", str(tmp_path))


def test_no_output_written_on_error(runner, tmp_path, problems_csv):
    out = tmp_path / "out.csv"
    result = runner.invoke(cli, ["run", str(problems_csv), "-m", str(tmp_path / "x.gguf"), "-o", str(out)])
    assert result.exit_code == 2
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-size", "0"], "--batch-size must be 'auto' or at least 1, got 0"),
        (["-b", "-3"], "--batch-size must be 'auto' or at least 1, got -3"),
        (["--samples", "0"], "--samples must be at least 1, got 0"),
        (["--n-gpu-layers", "-5"], "--n-gpu-layers must be 'auto', -1 (all) or more, got -5"),
        (["-ngl", "-2"], "--n-gpu-layers must be 'auto', -1 (all) or more, got -2"),
        (["--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["--ctx", "8"], "--ctx must be 0 (automatic) or at least 16"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--temperature", "-1"], "--temperature must be 0 or more"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--min-p", "1"], "--min-p must be in [0, 1)"),
        (["--top-k", "-1"], "--top-k must be 0 or more"),
        (["--min-answer", "10", "--max-answer", "5"], "--min-answer is larger than --max-answer"),
        (["--modulo", "0"], "--modulo must be at least 1"),
    ],
)
def test_invalid_option_values(runner, problems_csv, args, fragment):
    result = runner.invoke(cli, ["run", str(problems_csv), *args])
    assert_one_line_error(result, fragment)


def test_invalid_option_value_from_environment(runner, problems_csv):
    result = runner.invoke(cli, ["run", str(problems_csv)], env={"AIMO_GGUF_SAMPLES": "0"})
    assert_one_line_error(result, "--samples must be at least 1, got 0")


def test_flash_attn_bogus_is_a_usage_error(runner, problems_csv):
    result = runner.invoke(cli, ["run", str(problems_csv), "--flash-attn", "bogus"])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Error: Invalid value for '--flash-attn': 'bogus' is not one of 'auto', 'on', 'off'" in result.stderr


def test_non_integer_option_is_a_usage_error(runner, problems_csv):
    result = runner.invoke(cli, ["run", str(problems_csv), "--samples", "many"])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Error: Invalid value for '--samples'" in result.stderr
    assert "'many' is not a valid integer" in result.stderr


def test_unwritable_traces(runner, tmp_path, problems_csv):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    traces = blocker / "t.jsonl"
    result = runner.invoke(cli, ["run", str(problems_csv), "--traces", str(traces)])
    assert_one_line_error(result, "cannot write traces", str(traces))


@pytest.fixture
def fake_run(monkeypatch):
    """Replace ``runner.run`` (which the CLI imports at call time) by a recorder."""
    from aimo_gguf.pipeline import runner
    from aimo_gguf.pipeline.summary import RunSummary

    calls: list[dict] = []
    outcome = {"result": None}

    def run(problems, **kwargs):
        calls.append(dict(kwargs, problems=problems))
        return outcome["result"] or runner.RunResult(answers=[], summary=RunSummary(problems=0))

    monkeypatch.setattr(runner, "run", run)
    run.calls = calls
    run.outcome = outcome
    return run


NON_CONFIG = ("problems", "output", "summary", "traces", "journal", "resume", "progress", "verbose")


def config_of(call: dict):
    from aimo_gguf.config import RunConfig

    return RunConfig(**{k: v for k, v in call.items() if k not in NON_CONFIG})


def test_defaults_reach_run_config(runner, fake_run):
    from dataclasses import asdict

    from aimo_gguf.config import RunConfig

    result = runner.invoke(cli, ["run", "-q"])
    assert result.exit_code == 0, result.output
    (call,) = fake_run.calls
    assert call["problems"] is None  # the bundled sample set
    assert call["output"] == "submission.csv"
    assert call["summary"] is None and call["traces"] is None
    assert call["progress"] is False  # -q (and CliRunner's stderr is no tty)
    assert call["verbose"] is False
    assert asdict(config_of(call)) == asdict(RunConfig())


def test_flags_reach_run_config(runner, fake_run):
    args = ["run", "p.csv", "-m", "m.gguf", "-ngl", "40", "-b", "8", "-n", "3", "-t", "2", "--ctx", "4096",
            "--no-early-stop", "--raw-prompt", "--stop", "a b", "--stop", "</s>", "--ignore-eos",
            "--kv-unified", "--flash-attn", "off", "--modulo", "1000", "--fallback-answer", "7", "--seed", "9",
            "-v", "-o", "o.csv", "--summary", "s.json", "--traces", "t.jsonl", "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    (call,) = fake_run.calls
    cfg = config_of(call)
    assert (cfg.model, cfg.n_gpu_layers, cfg.batch_size, cfg.samples, cfg.threads, cfg.ctx) == (
        "m.gguf", 40, 8, 3, 2, 4096
    )
    assert cfg.early_stop is False and cfg.raw_prompt is True and cfg.ignore_eos is True and cfg.kv_unified is True
    assert cfg.stop == ("a b", "</s>")
    assert (cfg.flash_attn, cfg.modulo, cfg.fallback_answer, cfg.seed) == ("off", 1000, 7, 9)
    assert (call["problems"], call["output"], call["summary"], call["traces"]) == ("p.csv", "o.csv", "s.json", "t.jsonl")
    assert call["verbose"] is True


def test_environment_reaches_run_config(runner, fake_run):
    env = {"AIMO_GGUF_SAMPLES": "2", "AIMO_GGUF_N_GPU_LAYERS": "-1", "AIMO_GGUF_EARLY_STOP": "0",
           "AIMO_GGUF_MODEL": "env.gguf", "AIMO_GGUF_TEMPERATURE": "0"}
    result = runner.invoke(cli, ["run", "-q"], env=env)
    assert result.exit_code == 0, result.output
    cfg = config_of(fake_run.calls[0])
    assert (cfg.samples, cfg.n_gpu_layers, cfg.early_stop, cfg.model, cfg.temperature) == (2, -1, False, "env.gguf", 0)
    # A flag beats the environment.
    result = runner.invoke(cli, ["run", "-q", "-n", "5"], env=env)
    assert config_of(fake_run.calls[1]).samples == 5


def test_interrupted_run_exits_130(runner, fake_run):
    from aimo_gguf.pipeline.runner import RunResult
    from aimo_gguf.pipeline.summary import RunSummary

    fake_run.outcome["result"] = RunResult(answers=[], summary=RunSummary(problems=3, interrupted=True,
                                                                          stopped_by="SIGINT"))
    result = runner.invoke(cli, ["run"])
    assert result.exit_code == 130
    assert "(stopped by SIGINT)" in result.stdout


def test_problem_table_notes(runner, fake_run):
    from aimo_gguf.pipeline.runner import RunResult
    from aimo_gguf.pipeline.summary import RunSummary
    from aimo_gguf.solving.solver import ProblemResult

    def pr(index, id, answer, **kw):
        base = dict(votes=0, valid=0, samples=4, fallback=False, too_long=False, early_stopped=False,
                    majority=False, correct=None)
        return ProblemResult(index=index, id=id, answer=answer, **{**base, **kw})

    results = [
        pr(0, "right", 12, votes=3, valid=3, samples=3, early_stopped=True, majority=True, correct=True),
        pr(1, "wrong-one", 5, votes=1, valid=2, correct=False),
        pr(2, "long", 0, fallback=True, too_long=True, samples=0),
        pr(3, "unknown", 0, fallback=True),
    ]
    fake_run.outcome["result"] = RunResult(answers=[], summary=RunSummary(problems=4, problems_done=4), results=results)
    result = runner.invoke(cli, ["run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "answer", "votes", "note"]
    assert lines[1].split() == ["right", "12", "3/3", "correct,", "early", "stop"]
    assert lines[2].split() == ["wrong-one", "5", "1/4", "wrong"]
    assert lines[3].split() == ["long", "0", "0/0", "fallback,", "too", "long"]
    assert lines[4].split() == ["unknown", "0", "0/4", "fallback"]
    assert any(line.startswith("problems") and "4/4" in line for line in lines)


def test_version(runner):
    for flag in ("--version", "-V"):
        result = runner.invoke(cli, [flag])
        assert result.exit_code == 0
        assert result.output.strip() == f"aimo-gguf, version {__version__}"


def test_run_help_lists_options(runner):
    for flag in ("-h", "--help"):
        result = runner.invoke(cli, ["run", flag])
        assert result.exit_code == 0, result.output
        for option in ("--n-gpu-layers", "-ngl", "--batch-size", "--samples", "--max-tokens", "--flash-attn",
                       "--early-stop / --no-early-stop", "--summary", "--traces", "--output"):
            assert option in result.output, option


def test_group_help(runner):
    result = runner.invoke(cli, ["-h"])
    assert result.exit_code == 0
    assert "run" in result.output and "GGUF" in result.output
