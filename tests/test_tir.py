"""Tool-integrated reasoning: code blocks detected, run in the sandbox, their output decoded
back into the same sequence while the others go on."""

from __future__ import annotations

import json
from concurrent.futures import Future

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.models import default_model_path
from aimo_gguf.sandbox import SandboxLimits, SandboxPool, ToolResult
from aimo_gguf.tir import PythonTool, ToolStats, code_to_run, tir_answer
from aimo_gguf.voting import Tally

LIMITS = dict(min_answer=0, max_answer=99999, modulo=None)

# --- tier 1: pure logic --------------------------------------------------------------------


@pytest.mark.parametrize("text, code", [
    ("Let me compute.\n```python\nprint(6*7)\n```", "print(6*7)"),
    ("```python3\nx = 1\nprint(x)\n```\n", "x = 1\nprint(x)"),
    ("```python\nprint(1)\n```\nand then ```", None),  # the block closed earlier
    ("```python\nprint(1)\n", None),  # still open
    ("no code here ```", None),
    ("```pythonic stuff```", None),
    ("```python\n```", ""),
])
def test_code_to_run_finds_the_block_the_text_just_closed(text, code):
    assert code_to_run(text) == code


def _ok(output: str) -> ToolResult:
    return ToolResult(True, output, "ok", 0.01)


def _err(output: str) -> ToolResult:
    return ToolResult(False, output, "error", 0.01)


def test_tir_answer_prefers_a_box_after_the_last_output():
    text = "```python\nprint(41)\n```\n```output\n41\n```\nSo the answer is \\boxed{42}."
    assert tir_answer(text, [_ok("41")], **LIMITS) == 42


def test_tir_answer_ignores_a_box_before_the_last_output():
    text = "Guess \\boxed{7}.\n```python\nprint(3**4)\n```\n```output\n81\n```\nDone."
    assert tir_answer(text, [_ok("81")], **LIMITS) == 81  # the last successful output's integer


def test_tir_answer_skips_failed_outputs_and_range_checks():
    text = "```python\n1/0\n```\n```output\nZeroDivisionError: division by zero\n```\n"
    # the last *successful* output counts, even if a later call failed
    assert tir_answer(text, [_ok("12"), _err("ZeroDivisionError: division by zero")], **LIMITS) == 12
    assert tir_answer(text, [_err("ZeroDivisionError: division by zero")], **LIMITS) is None
    assert tir_answer("```output\n-5\n```\n", [_ok("-5")], **LIMITS) is None  # out of range
    assert tir_answer("```output\n1,234\n```\n", [_ok("1,234")], **LIMITS) == 1234


def test_tir_answer_without_tool_use_is_the_usual_extraction():
    assert tir_answer("The final answer is 17.", [], **LIMITS) == 17


class FakePool:
    def __init__(self, result: ToolResult) -> None:
        self.result = result
        self.submitted: list[tuple] = []
        self.futures: list[Future] = []

    def submit(self, key, code):
        self.submitted.append((key, code))
        f = Future()
        self.futures.append(f)
        return f


def test_python_tool_runs_each_closed_block_once_and_formats_its_output():
    pool, stats = FakePool(_ok("42")), ToolStats()
    tool = PythonTool(pool, "k", max_calls=2, stats=stats, prefix="<prompt>")
    text = bytearray(b"Compute:\n```python\nprint(6*7)\n")
    assert not tool.wants_call(text, b"\n")  # no backtick: not even looked at
    text += b"```"
    assert tool.wants_call(text, b"```")
    tool.start(text.decode())
    assert pool.submitted == [("k", "print(6*7)")]
    assert tool.poll() is None  # still running
    pool.futures[0].set_result(_ok("42"))
    assert tool.poll() == "\n```output\n42\n```\n"
    assert not tool.wants_call(text + b"\n```output\n42\n```\n", b"```\n")  # the output block is not code
    assert stats.calls == 1 and stats.ok == 1 and stats.samples_with_tools == 1 and tool.all_ok


def test_python_tool_sees_a_block_the_prompt_opened_and_stops_at_max_calls():
    pool, stats = FakePool(_ok("")), ToolStats()
    tool = PythonTool(pool, 0, max_calls=1, stats=stats, prefix="...\n```python\nx = 2\n")
    assert tool.wants_call(bytearray(b"```"), b"```")
    tool.start("```")
    assert pool.submitted == [(0, "x = 2")]
    pool.futures[0].set_result(ToolResult(True, "", "ok", 0.0))
    assert tool.poll() == "\n```output\n(no output)\n```\n"
    assert not tool.wants_call(bytearray(b"```\n```python\nprint(1)\n```"), b"```")  # max_calls reached


def test_weighted_votes_pick_the_backed_answer_and_stop_with_the_weight_in_mind():
    t = Tally(4, max_weight=2.0)
    t.add(0, 5, 1.0)
    t.add(1, 5, 1.0)
    t.add(2, 9, 2.0)  # code-backed
    assert t.winner() == 5  # 2.0 against 2.0: the tie goes to the answer of the lowest sample index
    t.add(3, 9, 2.0)
    assert t.winner() == 9 and t.counts == {5: 2, 9: 2}  # two backed votes outweigh two plain ones
    t2 = Tally(4, max_weight=2.0)
    t2.add(0, 9, 2.0)
    t2.add(1, 5, 1.0)
    assert t2.winner() == 9
    assert not t2.decided()  # 2 > 1 + 2 * 2 is false
    assert Tally(3, max_weight=1.0).max_weight == 1.0


def test_bad_tir_options_are_one_line(runner):
    for args, message in [(["--tir-weight", "0.5"], "--tir-weight must be 1 or more"),
                          (["--tool-timeout", "0"], "--tool-timeout must be positive"),
                          (["--max-tool-calls", "-1"], "--max-tool-calls must be 0 or more")]:
        result = runner.invoke(cli, ["run", *args])
        assert result.exit_code == 2 and message in result.stderr


# --- tier 3: the real model -------------------------------------------------------------------

USER = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine():
    with Engine(default_model_path(), ctx=512, batch_size=4, threads=2) as e:
        yield e


def _plain_requests(engine):
    prompts = ["Name a color.", "What is the capital of Italy?"]
    return [Request(f"plain{i}", engine.tokenize(USER.format(p)), 40, 0, GREEDY) for i, p in enumerate(prompts)]


@pytest.mark.model
def test_pause_run_inject_resume_leaves_other_sequences_unchanged(engine):
    alone = {c.request.key: c.tokens for c in engine.generate(_plain_requests(engine))}
    stats = ToolStats()
    with SandboxPool(SandboxLimits(timeout=5)) as pool:
        prompt = USER.format("Compute 6 times 7 with Python.") + "```python\nx = 6 * 7\nprint(x)\n"
        tir = Request("tir", engine.tokenize(prompt), 60, 0, GREEDY,
                      tool=PythonTool(pool, "tir", max_calls=2, stats=stats, prefix=prompt))
        out = {c.request.key: c for c in engine.generate([tir, *_plain_requests(engine)])}
    text = out["tir"].text
    assert text.startswith("```\n```output\n42\n```\n")  # the model closed the block; the output came back
    assert len(text) > len("```\n```output\n42\n```\n") + 5  # and it went on generating after it
    assert "42" in text.split("```output\n42\n```\n", 1)[1]
    assert stats.calls == 1 and stats.ok == 1
    assert engine.stats.tool_pauses >= 1 and engine.stats.injected_tokens > 0
    for key, tokens in alone.items():
        assert out[key].tokens == tokens  # the pause did not change the other sequences


@pytest.mark.model
def test_a_runaway_block_times_out_and_the_sample_goes_on(engine):
    stats = ToolStats()
    with SandboxPool(SandboxLimits(timeout=1.0)) as pool:
        prompt = USER.format("Loop forever in Python.") + "```python\nwhile True:\n    pass\n"
        tir = Request("loop", engine.tokenize(prompt), 40, 0, GREEDY,
                      tool=PythonTool(pool, "loop", max_calls=1, stats=stats, prefix=prompt))
        [done] = engine.generate([tir])
    assert stats.timeouts == 1 and stats.calls == 1
    assert "```output\n" in done.text and len(done.tokens) > 3


@pytest.mark.model
@pytest.mark.slow
def test_run_with_tir_over_the_sample_set_reports_tool_counters(runner, tmp_path):
    summary = tmp_path / "s.json"
    result = runner.invoke(cli, ["run", "--tir", "-n", "2", "-b", "8", "--max-tokens", "160", "-t", "2", "-q",
                                 "-o", str(tmp_path / "sub.csv"), "--summary", str(summary)])
    assert result.exit_code == 0, result.output
    s = json.loads(summary.read_text())
    assert s["problems_done"] == 12
    tools = s["tools"]
    assert tools["tool_calls"] > 0 and tools["samples_with_tools"] > 0
    assert tools["tool_calls"] == tools["tool_ok"] + tools["tool_errors"] + tools["tool_timeouts"]
    assert tools["injected_tokens"] > 0


@pytest.mark.model
def test_the_competition_adapter_takes_tir(tmp_path):
    from aimo_gguf.kaggle import KaggleSolver

    s = KaggleSolver(total_seconds=120, safety_seconds=1, n_problems=1, tir=True, samples=2, batch_size=2,
                     max_tokens=80, threads=2, temperature=0.0)
    frame = s.predict("q1", "Compute 6 times 7 with Python.")
    s.close()
    assert frame["id"].to_list() == ["q1"] and s.stats.failures == 0


class NeverDone:
    """A tool that pauses at the first piece and never returns."""

    def wants_call(self, text, piece):
        return True

    def start(self, text):
        pass

    def poll(self):
        return None

    def reset(self):
        pass


@pytest.mark.model
def test_the_callers_clock_runs_while_every_sequence_waits_on_a_tool(engine):
    request = Request("stuck", engine.tokenize(USER.format("Hi")), 20, 0, GREEDY, tool=NeverDone())
    steps = []

    def on_step():
        steps.append(1)
        if len(steps) >= 20:
            request.cancelled = True  # what the solver's time limit does

    [done] = engine.generate([request], on_step=on_step)
    assert done.finish_reason == "cancelled" and len(done.tokens) == 1
