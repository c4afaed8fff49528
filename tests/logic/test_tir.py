"""Tool-integrated reasoning: code blocks detected, run in the sandbox, their output decoded
back into the same sequence while the others go on."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from aimo_gguf.sandbox import ToolResult
from aimo_gguf.solving.voting import Tally
from aimo_gguf.styles.tir import PythonTool, ToolStats, code_to_run, tir_answer

LIMITS = dict(min_answer=0, max_answer=99999, modulo=None)


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
    assert not tool.wants_call(text, b"\n", -1, room=100, eog=False)  # no backtick: not even looked at
    text += b"```"
    assert tool.wants_call(text, b"```", -1, room=100, eog=False)
    tool.start(text.decode())
    assert pool.submitted == [("k", "print(6*7)")]
    assert tool.poll() is None  # still running
    pool.futures[0].set_result(_ok("42"))
    assert tool.poll() == "\n```output\n42\n```\n"
    # The output block is not code.
    assert not tool.wants_call(text + b"\n```output\n42\n```\n", b"```\n", -1, room=100, eog=False)
    assert stats.calls == 1 and stats.ok == 1 and stats.samples_with_tools == 1 and tool.all_ok


def test_python_tool_sees_a_block_the_prompt_opened_and_stops_at_max_calls():
    pool, stats = FakePool(_ok("")), ToolStats()
    tool = PythonTool(pool, 0, max_calls=1, stats=stats, prefix="...\n```python\nx = 2\n")
    assert tool.wants_call(bytearray(b"```"), b"```", -1, room=100, eog=False)
    tool.start("```")
    assert pool.submitted == [(0, "x = 2")]
    pool.futures[0].set_result(ToolResult(True, "", "ok", 0.0))
    assert tool.poll() == "\n```output\n(no output)\n```\n"
    assert not tool.wants_call(bytearray(b"```\n```python\nprint(1)\n```"), b"```", -1, room=100,
                               eog=False)  # max_calls reached


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


@pytest.mark.parametrize("plan", [
    [(1, 0)],  # one call, cut before its result (a stop signal, an early-stopped problem)
    [(1, 1), (1, 0), (2, 1)],
    [(2, 2), (3, 3), (1, 0), (0, 0)],
    [(3, 1)] * 4,
])
@pytest.mark.parametrize("harmony", [False, True])
def test_tool_counters_never_count_a_sample_whose_calls_they_do_not_count(plan, harmony):
    """Issue 20: after SIGTERM the summary said tool_calls: 0 beside samples_with_tools: 4. ``plan``: per
    sample, (calls started, calls that came back); the counters are read after every event."""
    from aimo_gguf.styles.harmony import HarmonyTool

    pool, stats = FakePool(_ok("1")), ToolStats()

    def consistent():
        assert stats.calls == stats.ok + stats.errors + stats.timeouts
        assert stats.samples_with_tools == sum(1 for t in tools if t.results)  # finished calls, not started ones

    tools = [HarmonyTool(pool, i, max_calls=5, stats=stats, call_token=7) if harmony
             else PythonTool(pool, i, max_calls=5, stats=stats) for i in range(len(plan))]
    for tool, (started, finished) in zip(tools, plan):
        for n in range(started):
            tool._run(f"print({n})")
            consistent()
            if n < finished:
                pool.futures[-1].set_result(_ok("1"))
                assert tool.poll() is not None
                consistent()
    assert stats.calls == sum(f for _, f in plan)
    assert stats.samples_with_tools == sum(1 for _, f in plan if f)


@pytest.mark.parametrize(("text", "results", "answer"), [
    # The prose's last number goes; a box, a phrase and the tool's computed output stay.
    ("```python\nprint(3**4)\n```\n```output\n81\n```\nSo the total is 8", [_ok("81")], 81),
    ("```python\nprint(3**4)\n```\n```output\n81\n```\nThus \\boxed{82} since 8", [_ok("81")], 82),
    ("We try 3 then 17 then", [], None),
    ("The final answer is 17. To check, 1", [], 17),
])
def test_a_truncated_tir_sample_keeps_its_tool_output_but_not_its_last_number(text, results, answer):
    assert tir_answer(text, results, **LIMITS, truncated=True) == answer
