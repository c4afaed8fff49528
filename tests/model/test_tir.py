"""Tool-integrated reasoning: code blocks detected, run in the sandbox, their output decoded
back into the same sequence while the others go on."""

from __future__ import annotations

import json

import pytest

from aimo_gguf.cli import cli
from aimo_gguf.engine import Engine, Request, SamplingParams
from aimo_gguf.gguf.files import default_model_path
from aimo_gguf.sandbox import SandboxLimits, SandboxPool
from aimo_gguf.styles.tir import PythonTool, ToolStats

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

    def wants_call(self, text, piece, token=-1, **_):
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


class PauseOnToken:
    """A tool hook that pauses on one token (here SmolLM2's end of turn, standing in for gpt-oss's
    <|call|>) and replies with chat-format framing parsed as special tokens, as harmony's tool does."""

    def __init__(self, token: int, reply) -> None:
        self.token, self.reply, self.calls, self.pending = token, reply, 0, False

    def wants_call(self, text, piece, token=-1, **_):
        return token == self.token and self.calls == 0

    def start(self, text):
        self.calls += 1
        self.started_with = text
        self.pending = True

    def poll(self):
        if not self.pending:
            return None
        self.pending = False
        return self.reply

    def reset(self):
        self.calls, self.pending = 0, False


@pytest.mark.model
def test_a_pause_on_an_end_of_generation_token_decodes_the_reply_into_the_same_sequence(engine):
    [end_of_turn] = engine.tokenize("<|im_end|>", add_special=False)
    assert end_of_turn in engine._eog  # the token would end the sample: the hook keeps it going
    alone = {c.request.key: c.tokens for c in engine.generate(_plain_requests(engine))}
    framing = "\n<|im_start|>user\nNow say it in French.<|im_end|>\n<|im_start|>assistant\n"
    hook = PauseOnToken(end_of_turn, (("\n<|im_start|>user\n", True), ("Now say it in French.", False),
                                      ("<|im_end|>\n<|im_start|>assistant\n", True)))
    prompt = engine.tokenize(USER.format("What is 2+2?"))  # greedy, it ends its turn after 7 tokens
    paused = Request("paused", prompt, 60, 0, GREEDY, tool=hook, render_special=True)
    out = {c.request.key: c for c in engine.generate([paused, *_plain_requests(engine)])}
    done = out["paused"]
    assert hook.calls == 1 and hook.started_with.endswith("<|im_end|>")  # paused on the token, its text kept
    assert end_of_turn in done.tokens
    cut = done.tokens.index(end_of_turn) + 1
    before, after = done.tokens[:cut], done.tokens[cut:]
    assert len(after) > 2  # the sample went on after the reply
    assert framing in done.text  # the reply is in the text, special tokens spelled out (render_special)
    # The same tokens as a fresh greedy run whose prompt holds everything the paused sequence's KV held:
    # the prompt, its tokens up to the end of turn, and the reply (framing parsed as special tokens).
    reply = engine.tokenize(framing, add_special=False)
    fresh = Request("fresh", list(prompt) + before + reply, len(after), 0, GREEDY)
    [again] = engine.generate([fresh])
    assert again.tokens == after[:len(again.tokens)] and len(again.tokens) >= min(len(after), 5)
    for key, tokens in alone.items():
        assert out[key].tokens == tokens  # the pause did not change the other sequences' greedy tokens
