"""What ``run`` checks before the model loads, and how it stops: regression tests of issue 10's faults.

Outputs that would destroy an input or each other, unwritable locations,
non-finite numbers and click's own usage errors all end in one ``Error:``
line and exit 2, before any model loads (a model load outside the model tier
fails the test). ``-m`` points at a file with a GGUF magic and nothing else:
anything that got as far as loading it would fail with another message.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import PROBLEMS, assert_one_line_error

from aimo_gguf.cli import cli

# --- 2. no output may name an input or another output -----------------------------------------------


@pytest.mark.parametrize(("flags", "fragment"), [
    (["-o", "{problems}"], "--output"),
    (["--journal", "{problems}"], "--journal"),
    (["--summary", "{problems}"], "--summary"),
    (["--traces", "{problems}"], "--traces"),
    (["-o", "{model}"], "the model"),
    (["-o", "{tmp}/x.csv", "--summary", "{tmp}/x.csv"], "--output and --summary name the same file"),
    (["-o", "{tmp}/x.csv", "--traces", "{tmp}/./x.csv"], "--output and --traces name the same file"),
    (["-o", "{tmp}/s.csv", "--journal", "{tmp}/s.csv"], "--output and --journal name the same file"),
    (["-o", "{tmp}/hard.csv"], "the problems file"),  # a hard link to the problems
])
def test_an_output_naming_another_file_of_the_run_is_refused(runner, files, tmp_path, flags, fragment):
    problems, model = files
    os.link(problems, tmp_path / "hard.csv")
    args = [a.format(problems=problems, model=model, tmp=tmp_path) for a in flags]
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), *args])
    assert_one_line_error(result, fragment)
    assert problems.read_text() == PROBLEMS and model.read_bytes().startswith(b"GGUF")


# --- 3. every output location is tried before the model loads -----------------------------------------


@pytest.mark.parametrize("flag", ["-o", "--summary", "--traces", "--journal"])
def test_an_unwritable_output_fails_before_the_model_loads(runner, files, flag):
    problems, model = files
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), flag, "/proc/aimo-gguf-test/out"])
    assert_one_line_error(result, "cannot write", "/proc/aimo-gguf-test/out")


@pytest.mark.parametrize("flag", ["-o", "--summary"])
def test_a_device_is_not_a_submission(runner, files, flag):
    problems, model = files
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), flag, "/dev/null"])
    assert_one_line_error(result, "not a regular file")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_an_output_that_is_a_folder_is_refused(runner, files, tmp_path):
    problems, model = files
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(tmp_path)])
    assert_one_line_error(result)


# --- 9. non-finite numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--time-limit", "inf"), ("--time-limit", "nan"),
                                             ("--temperature", "inf"), ("--tool-timeout", "inf")])
def test_non_finite_numbers_are_refused(runner, files, flag, value):
    problems, model = files
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), flag, value])
    assert_one_line_error(result, f"{flag} must be a finite number")


def test_the_summary_json_never_holds_infinity(tmp_path):
    from aimo_gguf.pipeline.problems import write_json_atomic

    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "s.json", {"time_limit": float("inf")})
    assert not (tmp_path / "s.json").exists()


# --- 12. click's own usage errors are one line too ----------------------------------------------------


@pytest.mark.parametrize(("args", "fragment"), [
    (["run", "{tmp}"], "is a directory"),
    (["run", "--batch-size", "abc"], "'abc' is neither a number nor 'auto'"),
    (["run", "--samples", "many"], "'many' is not a valid integer"),
    (["run", "--flash-attn", "bogus"], "'bogus' is not one of 'auto', 'on', 'off'"),
    (["run", "--no-such-flag"], "No such option '--no-such-flag'"),
    (["quantize", "only-one-argument"], "Missing argument 'OUT'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_usage_errors_are_one_error_line(runner, tmp_path, args, fragment):
    result = runner.invoke(cli, [a.format(tmp=tmp_path) for a in args])
    line = assert_one_line_error(result, fragment)
    assert "-h'" in line  # where to look next


# --- 1. SIGTERM stops a run like Ctrl-C: what finished is written --------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])  # HUP: issue 20
def test_a_stop_signal_writes_the_finished_answers_and_fallbacks(tmp_path, signum):
    """In-process, on the fake engine: the signal arrives after two problems; if run() ever stops
    handling it, the test's own handler sees it instead (and the test fails rather than dies)."""
    from fakes import FakeEngine, boxed, problems_of

    from aimo_gguf.pipeline import runner

    caught = []

    def ours(n, f):
        caught.append(n)

    previous = signal.signal(signum, ours)
    seen = []

    def on_result(result):
        seen.append(result.index)
        if len(seen) == 2:
            os.kill(os.getpid(), signum)

    try:
        engine = FakeEngine(lambda p, s: boxed(p + 10), batch_size=1)
        out = tmp_path / "sub.csv"
        result = runner.run(problems_of(6), output=out, summary=tmp_path / "s.json", progress=False, samples=1,
                            batch_size=1, fallback_answer=99, engine=engine, on_result=on_result)
        assert signal.getsignal(signum) is ours  # run() gave the handler back
    finally:
        signal.signal(signum, previous)
    assert caught == []  # run() handled it
    assert result.exit_code == {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGHUP: 129}[signum]
    name = signal.Signals(signum).name
    assert result.summary.interrupted and result.summary.stopped_by == name
    rows = out.read_text().splitlines()
    assert rows[0] == "id,answer" and len(rows) == 7
    assert rows[1:3] == ["p0,10", "p1,11"] and rows[-1] == "p5,99"
    assert json.loads((tmp_path / "s.json").read_text())["stopped_by"] == name
