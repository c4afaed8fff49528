"""The README's promises for ``run``, each a property over many inputs: regression tests of issue 20.

- Bad input is one ``Error:`` line and exit 2, before any model loads (a load
  outside the model tier fails the test), and a bad ``AIMO_GGUF_*`` value names
  its variable.
- Nothing that is not a journal is ever changed; no output replaces another
  file; a path ending in '/' names a folder.
- A signal (INT, TERM, HUP) never loses what finished.
- A failure on one problem never loses the others.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeEngine, boxed, problems_of
from helpers import assert_one_line_error

from aimo_gguf.cli import cli
from aimo_gguf.errors import InputError
from aimo_gguf.pipeline import runner

# --- ids: the submission repeats them verbatim ---------------------------------------------------------------


@pytest.mark.parametrize(("cell", "fragment"), [
    ('"\\ud800"', "a character UTF-8 cannot encode"),  # a lone surrogate: no UTF-8 file can hold it
    ('"a\\udfffb"', "a character UTF-8 cannot encode"),
    ('"\\ud83d"', "a character UTF-8 cannot encode"),
    ("true", "of type bool"),  # was written as 1
    ("false", "of type bool"),  # was written as 0
])
def test_an_id_the_submission_cannot_repeat_is_one_line_naming_its_line(runner, files, tmp_path, cell, fragment):
    _, model = files
    problems = tmp_path / "p.jsonl"
    problems.write_text(f'{{"id": "ok", "problem": "What is 1 + 1?"}}\n{{"id": {cell}, "problem": "2 + 2?"}}\n')
    out = tmp_path / "sub.csv"
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(out)])
    assert_one_line_error(result, str(problems), "line 2", fragment)
    assert not out.exists()


@pytest.mark.parametrize("problem_id", ["\ud800", "a\udfffb", "\udcff.csv"])
def test_a_problem_the_submission_cannot_name_is_refused_for_every_caller(problem_id):
    """The library and the AIMO3 adapter make Problems too: the check is the Problem's own."""
    from aimo_gguf.pipeline.problems import Problem

    with pytest.raises(InputError, match="a character UTF-8 cannot encode"):
        Problem(id=problem_id, problem="What is 1 + 1?")


# --- a chat template's errors, of any kind ---------------------------------------------------------------------

BROKEN_TEMPLATES = [
    "{{ messages + 1 }}",  # TypeError
    "{{ range(100000000) }}",  # OverflowError: the sandbox's range limit
    "{{ 1 / 0 }}",  # ZeroDivisionError
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",  # RecursionError
    "{{ '%d' % 'x' }}",  # TypeError from a format
    "{{ messages | sum }}",  # TypeError inside a filter
    "{{ raise_exception('no system role') }}",  # the template's own error (Jinja's)
    "{{ x.y.z }}",  # undefined (Jinja's)
    "{% for m in messages %}",  # does not parse (Jinja's)
    "{{ ''.__class__.__mro__ }}",  # refused by the sandbox (Jinja's)
]


@pytest.mark.parametrize("template", BROKEN_TEMPLATES)
def test_a_template_that_fails_is_one_line_before_any_problem(tmp_path, template):
    """Before, a template raising anything but Jinja's own errors was a traceback with no submission."""
    engine = FakeEngine(lambda p, s: boxed(7), chat_template=template)
    out = tmp_path / "sub.csv"
    with pytest.raises(InputError, match="The model's chat template") as caught:
        runner.run(problems_of(3), output=out, progress=False, samples=1, engine=engine)
    assert "\n" not in str(caught.value) and "--raw-prompt" in str(caught.value)
    assert engine.pulled == [] and not out.exists()  # refused at the load, not at the first problem


@pytest.mark.parametrize("failure", ["{{ messages + 1 }}", "{{ 1 / 0 }}", "{{ raise_exception('no') }}"])
def test_a_template_that_fails_on_one_problem_gives_it_the_fallback_and_the_others_go_on(tmp_path, capsys, failure):
    template = ("{% if 'boom' in messages[-1].content %}" + failure + "{% endif %}"
                "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>")
    problems = problems_of(3)
    problems[1] = replace(problems[1], problem="boom")
    out = tmp_path / "sub.csv"
    result = runner.run(problems, output=out, progress=False, samples=1, fallback_answer=5,
                        engine=FakeEngine(lambda p, s: boxed(40 + p), chat_template=template))
    assert result.answers == [("p0", 40), ("p1", 5), ("p2", 42)]
    assert out.read_text().splitlines()[1:] == ["p0,40", "p1,5", "p2,42"]
    assert result.summary.fallbacks == 1 and result.exit_code == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "'p1'" in line]
    assert len(warning) == 1 and "chat template" in warning[0] and "fallback" in warning[0]


# --- a closed terminal -----------------------------------------------------------------------------------------

HUNG_UP_RUN = """
import sys
sys.path.insert(0, {tests!r})
from fakes import FakeEngine, boxed, problems_of
from aimo_gguf.pipeline import runner
result = runner.run(problems_of(400), output={out!r}, summary={summary!r}, samples=1, fallback_answer=99,
                    engine=FakeEngine(lambda p, s: boxed(p), step_seconds=0.02))
print("the results table")  # as the CLI prints it, to a terminal that is gone
sys.exit(result.exit_code)
"""


def test_a_closed_terminal_writes_what_finished(tmp_path):
    """A dropped ssh session or a closed terminal: the kernel hangs the terminal up and sends SIGHUP, and every
    later write to it fails (EIO). Before, SIGHUP killed the run (exit 129, no submission); a progress bar or a
    note written to the dead terminal must not cost the results either."""
    import os
    import pty
    import select
    import sys
    import time

    from aimo_gguf.pipeline.journal import default_journal

    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    script = HUNG_UP_RUN.format(tests=str(Path(__file__).parents[1]), out=str(out), summary=str(summary))
    pid, terminal = pty.fork()  # the child leads a session whose controlling terminal is the pty
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", script])
    journal = default_journal(out)
    deadline = time.monotonic() + 60
    try:
        while not (journal.exists() and len(journal.read_text().splitlines()) > 5):  # the header and 5 problems
            assert time.monotonic() < deadline, "the run never journaled a problem"
            if select.select([terminal], [], [], 0.02)[0]:
                os.read(terminal, 65536)  # what the run writes to its terminal: its progress bar
    finally:
        os.close(terminal)  # the hangup
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129
    rows = out.read_text().splitlines()
    assert rows[0] == "id,answer" and len(rows) == 401
    done = json.loads(summary.read_text())
    assert done["interrupted"] and done["stopped_by"] == "SIGHUP" and done["problems_done"] < 400
    answers = [row.split(",")[1] for row in rows[1:]]
    assert answers[:5] == ["0", "1", "2", "3", "4"] and answers[-1] == "99"  # what finished, then fallbacks


@pytest.mark.parametrize("stderr", ["closed", "reader gone"])
def test_a_stderr_nobody_reads_costs_no_file(tmp_path, stderr):
    """``2>&-``, or ``|& tee log`` where tee dies: progress has nowhere to go, and every write to stderr fails
    (EBADF, EPIPE). Before, the run exited 1 and wrote neither the submission nor the summary; with stderr
    closed at start-up, the next file opened took descriptor 2 and got the progress. The run's files must not
    depend on anyone reading its progress."""
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parents[1])
    env = dict(os.environ, AIMO_GGUF_CHILD_LOADER="fakes:load_prompt_engine",
               PYTHONPATH=os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    problems = tmp_path / "p.csv"
    problems.write_text("id,problem\n" + "".join(f"p{i},What is {i} + 1?\n" for i in range(6)))
    out, summary = tmp_path / "sub.csv", tmp_path / "s.json"
    cmd = [sys.executable, "-m", "aimo_gguf", "run", str(problems), "-o", str(out), "--summary", str(summary),
           "-n", "2", "-b", "4"]
    if stderr == "closed":
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2), timeout=120)
    else:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first write
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=write, timeout=120)
        os.close(write)
    assert done.returncode == 0
    assert out.read_text().splitlines() == ["id,answer", *(f"p{i},{i + 1}" for i in range(6))]
    assert json.loads(summary.read_text())["problems_done"] == 6
    journal = (tmp_path / "sub.journal.jsonl").read_text()
    assert "aimo-gguf" not in journal.split("\n", 1)[1]  # no progress landed in a file the run opened


# --- nothing that is not a journal is ever changed -------------------------------------------------------------


@pytest.mark.parametrize("resume", [[], ["--resume"]])
@pytest.mark.parametrize("named", ["--journal", "beside the output"])
def test_a_journal_path_holding_another_file_is_one_line_before_the_load(runner, files, tmp_path, resume, named):
    """Before: `run p.csv -o r.csv --journal notes.txt` exited 0 and the notes were gone."""
    problems, model = files
    notes = tmp_path / ("notes.txt" if named == "--journal" else "r.journal.jsonl")
    notes.write_text("notes I keep\n")
    flags = ["--journal", str(notes)] if named == "--journal" else []
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "r.csv"), *flags,
                                 *resume])
    assert_one_line_error(result, str(notes), "is not an aimo-gguf journal")
    assert notes.read_text() == "notes I keep\n" and not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("answer", ['"abc"', "3.7", "1000000000000", "-4", "null"])
def test_resume_with_an_entry_aimo_gguf_does_not_write_is_one_line_naming_it(runner, files, tmp_path, answer):
    """Before: a TypeError when the submission was written (nothing written), or the answer submitted."""
    from aimo_gguf.config import RunConfig
    from aimo_gguf.pipeline.journal import fingerprint

    problems, model = files
    journal = tmp_path / "j.jsonl"
    entry = ('{"id": "a", "answer": %s, "votes": 1, "valid": 1, "samples": 1, "fallback": false, '
             '"too_long": false, "early_stopped": false, "majority": true, "correct": null}' % answer)
    journal.write_text(json.dumps({"journal": 1, "settings": fingerprint(RunConfig(), model)}) + "\n" + entry + "\n")
    out = tmp_path / "sub.csv"
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(out), "--journal", str(journal),
                                 "--resume"])
    assert_one_line_error(result, f"{journal}, line 2: its answer", "fix or delete that line")
    assert not out.exists()


# --- the fallback answer is an answer ------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [
    ["--fallback-answer", "-7"],
    ["--fallback-answer", "100000"],
    ["--fallback-answer", "5", "--min-answer", "10"],
    ["--fallback-answer", "50", "--max-answer", "20"],
    ["--min-answer", "1"],  # the default fallback, 0, is then out of range too
])
def test_a_fallback_outside_the_answer_range_is_one_line(runner, files, tmp_path, flags):
    """Before, --fallback-answer -7 or 100000 was written into the submission."""
    problems, model = files
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "-o", str(tmp_path / "r.csv"), *flags])
    assert_one_line_error(result, "--fallback-answer", "is outside --min-answer..--max-answer")


def test_a_fallback_inside_a_range_of_its_own_is_written(tmp_path):
    result = runner.run(problems_of(2), output=tmp_path / "r.csv", progress=False, samples=1, fallback_answer=-7,
                        min_answer=-10, engine=FakeEngine(lambda p, s: boxed(None)))
    assert result.answers == [("p0", -7), ("p1", -7)]


def test_the_adapter_refuses_a_fallback_it_cannot_return_and_logs_what_it_returns(capsys):
    from aimo_gguf.kaggle import KaggleSolver

    with pytest.raises(InputError, match="fallback_answer 100000 is outside the competition's answers"):
        KaggleSolver(engine=FakeEngine(lambda p, s: boxed(1)), fallback_answer=100000, max_answer=10**6)
    solver = KaggleSolver(engine=FakeEngine(lambda p, s: boxed(123456)), max_answer=10**6, samples=1,
                          total_seconds=60, safety_seconds=1)
    frame = solver.predict("x1", "What is 1 + 1?")
    assert frame["answer"].to_list() == [99999]
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aimo-gguf: x1:")]
    assert line.startswith("aimo-gguf: x1: answer 99999") and "clamped from 123456" in line  # before: "answer 123456"


# --- a path ending in '/' names a folder ------------------------------------------------------------------------

NOT_FILE_NAMES = ["", "newdir/", "newdir/.", "newdir/..", ".", "a/b/"]
OUTPUT_FLAGS = [  # every option or argument of every command that names a file to write
    ["run", "{problems}", "-m", "{model}", "-o"],
    ["run", "{problems}", "-m", "{model}", "--summary"],
    ["run", "{problems}", "-m", "{model}", "--traces"],
    ["run", "{problems}", "-m", "{model}", "--journal"],
    ["bench", "-m", "{model}", "--json-file"],
    ["bench", "-m", "{model}", "--plot"],
    ["report", "{problems}", "--plot"],
    ["quantize", "{model}", "--type", "Q8_0"],
    ["split", "{model}"],
    ["synth", "--like", "Qwen2.5-0.5B-Instruct", "-o"],
]


@pytest.mark.parametrize("path", NOT_FILE_NAMES)
@pytest.mark.parametrize("command", OUTPUT_FLAGS, ids=lambda c: " ".join(a for a in c if "{" not in a))
def test_an_output_path_that_names_no_file_is_one_line_and_writes_nothing(runner, files, tmp_path, monkeypatch,
                                                                         command, path):
    """Before, `-o ''` was a ValueError traceback, and `-o newdir/` or `report --plot outdir/` wrote a file
    named newdir / outdir."""
    problems, model = files
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(problems=problems, model=model) for a in command]
    result = runner.invoke(cli, [*args, path])
    line = assert_one_line_error(result)
    assert "the path is empty" in line if path == "" else "names a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("path", NOT_FILE_NAMES)
def test_the_library_refuses_such_a_path_too(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="the path is empty" if path == "" else "names a folder"):
        runner.run(problems_of(1), output=path, progress=False, samples=1, engine=FakeEngine(lambda p, s: boxed(1)))
    assert list(tmp_path.iterdir()) == []


# --- clear messages ---------------------------------------------------------------------------------------------


def _commands():
    import click

    return [(name, command) for name, command in cli.commands.items() if isinstance(command, click.Command)]


@pytest.mark.parametrize(("name", "command"), _commands(), ids=[n for n, _ in _commands()])
def test_help_shows_one_default_per_option(name, command):
    """Before, run --help said '[default: an eighth of --max-tokens ...]  [default: 0]' for --think-reserve,
    --group-window, --tail-window and --time-margin."""
    import click

    ctx = click.Context(command, info_name=name)
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            assert record[1].count("[default") <= 1, (name, record)


def _bad_values():
    """(variable, value) for every run option: a value of the wrong type, and one its checks refuse."""
    import typing

    from aimo_gguf.config import ENV_PREFIX, RunConfig, option_fields

    hints = typing.get_type_hints(RunConfig)
    out_of_range = dict(
        samples="0", max_tokens="0", ctx="8", n_gpu_layers="-2", threads="0", temperature="-1", top_p="0",
        min_p="1", top_k="-1", modulo="0", early_stop_votes="-1", early_stop_lead="-1", stop_unanswered="-1",
        vote_floor="0", keep_top="0", stop_below="101", stop_warmup="0", problem_time_cap="0",
        confidence_top_k="0", group_window="-1", tail_window="-1", time_limit="inf", time_margin="-1",
        think_reserve="-1", max_tool_calls="-1", tool_timeout="0", tool_output_chars="5", tir_weight="0.5",
        main_gpu="-1", replicas="0", gpus_per_replica="-1", fallback_answer="-7", min_answer="100000",
        max_answer="-1", batch_size="0", model="nosuch.gguf", max_memory="lots", tensor_split="a,b",
    )
    cases = []
    for f in option_fields():
        kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
        if "choices" in f.metadata:
            cases.append((f.name, "bogus"))
        elif bool in kinds:
            cases.append((f.name, "maybe"))
        elif int in kinds or float in kinds:
            cases.append((f.name, "x"))
        if f.name in out_of_range:
            cases.append((f.name, out_of_range[f.name]))
    assert {name for name, _ in cases} >= set(out_of_range)
    return [(ENV_PREFIX + name.upper(), value) for name, value in cases]


@pytest.mark.parametrize(("variable", "value"), _bad_values())
def test_a_bad_value_from_the_environment_names_its_variable(runner, files, tmp_path, monkeypatch, variable,
                                                            value):
    """Before, AIMO_GGUF_SAMPLES=x was reported as '--samples', a flag the user never typed."""
    problems, model = files
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    args = ["run", str(problems), "-o", "sub.csv"] + ([] if variable.endswith("_MODEL") else ["-m", str(model)])
    result = runner.invoke(cli, args)
    assert_one_line_error(result, f"{variable}={value}")


def test_a_flag_given_on_the_command_line_is_not_blamed_on_the_environment(runner, files, monkeypatch):
    problems, model = files
    monkeypatch.setenv("AIMO_GGUF_SAMPLES", "4")
    result = runner.invoke(cli, ["run", str(problems), "-m", str(model), "--top-p", "2"])
    assert "AIMO_GGUF" not in assert_one_line_error(result, "--top-p")


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--problems", "nosuch.csv"], "problems file not found: nosuch.csv"),
    (["--problems", "{problems}", "--samples", "0"], "--samples must be at least 1"),
    (["--problems", "{problems}", "--max-tokens", "0"], "--max-tokens must be at least 1"),
])
def test_compare_checks_its_inputs_before_the_first_model_loads(runner, files, flags, fragment):
    """Before, compare --problems nosuch.csv failed only after the whole text comparison (30 s)."""
    from aimo_gguf.gguf.files import default_model_path

    problems, _ = files
    model = str(default_model_path())
    result = runner.invoke(cli, ["compare", model, model, *[f.format(problems=problems) for f in flags]])
    assert_one_line_error(result, fragment)
