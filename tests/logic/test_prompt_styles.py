"""Prompt families: detected from the GGUF, the think models' prompt from their real templates, the
thinking budget, the answer after </think>; and the engine's side of a pause on an end-of-generation
token (the sequence and the scheduler)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimo_gguf.engine.api import EngineStats, Request
from aimo_gguf.engine.scheduler import Scheduler
from aimo_gguf.engine.slot import SeqState, Slot, StopMatcher
from aimo_gguf.styles.prompts import DEFAULT_SYSTEM_PROMPT, chat_prompt, detect_style
from aimo_gguf.styles.think import (
    CONCLUDE,
    ThinkBudget,
    default_reserve,
    open_thinking,
    think_answer,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "templates"
R1 = (TEMPLATES / "r1-distill.jinja").read_text()
QWQ = (TEMPLATES / "qwq.jinja").read_text()
GPT_OSS = (TEMPLATES / "gpt-oss.jinja").read_text()
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LIMITS = dict(min_answer=0, max_answer=99999, modulo=None)
# A non-thinking instruct template that drops earlier turns' reasoning (as Qwen3's 2507 instruct ones do).
STRIPS_THINKING = ("{% for m in messages %}{% set c = m.content %}{% if '</think>' in c %}"
                   "{% set c = c.split('</think>')[-1] %}{% endif %}<|im_start|>{{ m.role }}\n{{ c }}<|im_end|>\n"
                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize(("architecture", "template", "name", "style"), [
    ("gpt-oss", GPT_OSS, "Gpt-Oss-20B", "harmony"),
    ("gpt-oss", None, "", "harmony"),  # the architecture alone
    ("llama", GPT_OSS, "", "harmony"),  # a harmony template on another architecture
    ("qwen2", R1, "DeepSeek R1 Distill Qwen 7B", "think"),
    ("qwen2", QWQ, "QwQ 32B", "think"),
    ("qwen2", CHATML, "OpenMath-Nemotron-14B-Kaggle", "think"),  # Qwen's template: the name tells
    ("qwen2", CHATML, "Qwen2.5 Math 7B Instruct", "plain"),
    ("llama", CHATML, "SmolLM2 135M Instruct", "plain"),
    ("gemma3", None, "", "plain"),
    ("qwen2", CHATML, "Brainstorm-R12", "plain"),  # "R1" must be a word
    ("qwen3", STRIPS_THINKING, "Qwen3 4B Instruct 2507", "plain"),  # only strips </think> from earlier turns
    ("qwen3", CHATML + "{% if enable_thinking is defined %}{% endif %}", "Qwen3 8B", "think"),  # a switch
])
def test_the_prompt_family_comes_from_architecture_template_and_name(architecture, template, name, style):
    assert detect_style(architecture, template, name) == style


@pytest.mark.parametrize("template", [R1, QWQ])
def test_a_think_prompt_has_no_system_message_and_opens_the_thinking(template):
    user = f"What is 2+2?\n\n{DEFAULT_SYSTEM_PROMPT}"
    text = open_thinking(chat_prompt(user, template=template, system_prompt="", bos_token="<bos>",
                                     enable_thinking=True))
    assert text.endswith("<think>\n") and text.count("<think>") == 1
    assert user in text and "system" not in text.replace("system_prompt", "")


def test_the_r1_prompt_is_the_models_own_format():
    text = open_thinking(chat_prompt("Q", template=R1, system_prompt="", bos_token="<｜begin▁of▁sentence｜>",
                                     enable_thinking=True))
    assert text == "<｜begin▁of▁sentence｜><｜User｜>Q<｜Assistant｜><think>\n"


@pytest.mark.parametrize(("prompt", "opened"), [
    ("<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n"),
    ("<｜Assistant｜><think>\n", "<｜Assistant｜><think>\n"),
    ("<｜Assistant｜><think>", "<｜Assistant｜><think>\n"),
    ("<｜Assistant｜><think>\n</think>", "<｜Assistant｜><think>\n</think>"),  # thinking turned off: as it is
])
def test_open_thinking(prompt, opened):
    assert open_thinking(prompt) == opened


@pytest.mark.parametrize(("max_tokens", "reserve"), [(8, 1), (1024, 128), (4096, 512), (32768, 512)])
def test_the_default_reserve(max_tokens, reserve):
    assert default_reserve(max_tokens) == reserve


def thinking(hook, max_new=10) -> Slot:
    seq = Slot(0)
    seq.start(Request("k", [1, 2, 3], max_new, 0, tool=hook), max_new=max_new, order=0, wait_for_prefix=False)
    seq.take(3)
    return seq


def feed(seq: Slot, pieces: list[str], *, eog_at: int = -1) -> list[int]:
    """Sample ``pieces`` into ``seq`` one token each; the positions where it paused for its hook
    (each pause answered at once, as the scheduler would)."""
    stops, pauses = StopMatcher(()), []
    for i, piece in enumerate(pieces):
        reason = seq.accept(i, piece.encode(), eog=i == eog_at, stops=stops)
        if reason is not None:
            break
        if seq.state is SeqState.TOOL:
            pauses.append(i)
            reply = seq.request.tool.poll()
            seq.inject([0] * sum(len(t) for t, _ in reply), lambda t, special=False: b"", n_ctx_seq=64, whole=True)
            seq.state = SeqState.DECODE
    return pauses


@pytest.mark.parametrize(("max_new", "reserve", "pause_at"), [(10, 3, 6), (10, 1, 8), (20, 5, 14)])
def test_the_budget_fires_where_the_room_left_is_the_reserve(max_new, reserve, pause_at):
    hook = ThinkBudget(reserve=reserve)
    seq = thinking(hook, max_new=max_new)
    pauses = feed(seq, ["a"] * max_new)
    assert pauses[:1] == [pause_at]  # token pause_at leaves max_new - pause_at - 1 == reserve
    reply = ThinkBudget(reserve=1)
    reply.wants_call(bytearray(b"a"), b"a", 0, room=1, eog=False)
    assert reply.poll() == ((CONCLUDE, False), ("</think>", True), ("\n\n", False)) and reply.poll() is None


def test_tool_replies_that_take_the_context_bring_the_budget_forward():
    # The same sample, with a reply of 20 tokens injected early: the room shrinks, the budget fires sooner.
    hook = ThinkBudget(reserve=3)
    seq = thinking(hook, max_new=60)
    seq.accept(1, b"a", eog=False, stops=StopMatcher(()))
    seq.inject([0] * 20, lambda t, special=False: b"", n_ctx_seq=40, whole=True)  # max_new shrinks to fit
    seq.state = SeqState.DECODE
    room = seq.max_new - len(seq.generated)
    pauses = feed(seq, ["a"] * room)
    assert pauses and pauses[0] == room - 3 - 1


def test_the_budget_never_pauses_on_an_end_of_generation_token():
    hook = ThinkBudget(reserve=8)
    seq = thinking(hook, max_new=10)
    assert seq.accept(5, b"", eog=True, stops=StopMatcher(())) == "eos" and not hook.closed
    hook = ThinkBudget(reserve=8)
    seq = thinking(hook, max_new=10)
    assert seq.accept(5, b"<|im_end|>", eog=True, stops=StopMatcher(())) == "eos"  # a piece that renders too
    assert bytes(seq.text) == b""  # the ending token is never written


def test_a_model_that_closes_its_thinking_itself_is_left_alone():
    hook = ThinkBudget(reserve=3)
    seq = thinking(hook, max_new=10)
    assert feed(seq, ["x", "</", "think", ">", "\n", "so", "4", ".", "!", "!"]) == []
    assert hook.closed


def test_a_prompt_that_turned_thinking_off_gets_no_closing():
    hook = ThinkBudget(reserve=5, closed=True)
    assert feed(thinking(hook, max_new=10), ["a"] * 10) == []
    hook.reset()
    assert hook.closed  # a restart from the prompt: still off


def test_the_budget_passes_the_python_tool_through_and_reset_starts_over():
    class Inner:
        def __init__(self):
            self.started, self.resets, self.results, self.all_ok = [], 0, ["r"], True

        def wants_call(self, text, piece, token=-1, **_):
            return piece == b"```"

        def start(self, text):
            self.started.append(text)

        def poll(self):
            return "\n```output\n1\n```\n"

        def reset(self):
            self.resets += 1

    inner = Inner()
    hook = ThinkBudget(reserve=2, inner=inner)
    assert hook.wants_call(bytearray(b"a```"), b"```", 1, room=50, eog=False)
    hook.start("a```")
    assert hook.poll() == "\n```output\n1\n```\n" and inner.started == ["a```"] and hook.poll() is None
    assert hook.python is inner
    assert hook.wants_call(bytearray(b"b"), b"b", 2, room=2, eog=False) and hook.closed
    hook.reset()
    assert inner.resets == 1 and not hook.closed


@pytest.mark.parametrize(("text", "answer", "source"), [
    ("Let me think, maybe 3.\n</think>\n\nThe answer is \\boxed{7}.", 7, "final"),
    ("\\boxed{3} hmm\n</think>\n\nSo it is 7", 7, "final"),
    ("first </think> then \\boxed{1} </think> finally \\boxed{2}", 2, "final"),  # after the last </think>
    ("long thinking ... so the answer is 12\n</think>\n\nI am not sure.", 12, "fallback"),
    ("cut off while thinking: \\boxed{15}", 15, "fallback"),
    ("nothing here", None, None),
])
def test_the_answer_comes_after_the_thinking_and_the_thinking_only_as_a_fallback(text, answer, source):
    assert think_answer(text, None, **LIMITS) == (answer, source)


# --- the engine's side: a pause on an end-of-generation token ----------------------------------------------


class OnToken:
    def __init__(self, token):
        self.token, self.started = token, None

    def wants_call(self, text, piece, token=-1, **_):
        return token == self.token

    def start(self, text):
        self.started = text

    def poll(self):
        return (("<s>", True), ("out", False))

    def reset(self):
        pass


def running(tool, max_new=10, render_special=True) -> Slot:
    seq = Slot(0)
    seq.start(Request("k", [1, 2, 3], max_new, 0, tool=tool, render_special=render_special), max_new=max_new,
              order=0, wait_for_prefix=False)
    seq.take(3)
    return seq


def test_an_end_of_generation_token_the_tool_wants_pauses_instead_of_ending():
    tool = OnToken(99)
    seq = running(tool)
    assert seq.accept(5, b"a", eog=False, stops=StopMatcher(())) is None
    assert seq.accept(99, b"<|call|>", eog=True, stops=StopMatcher(())) is None
    assert seq.state is SeqState.TOOL and tool.started == "a<|call|>"  # its piece is in the text
    assert list(seq.feed[seq.fed:]) == [99]  # pending: decoded with the reply
    other = running(OnToken(7))
    assert other.accept(99, b"", eog=True, stops=StopMatcher(())) == "eos"  # a token the tool ignores ends it


def test_a_call_on_the_last_token_of_the_budget_ends_the_sample():
    seq = running(OnToken(99), max_new=1)
    assert seq.accept(99, b"<|call|>", eog=True, stops=StopMatcher(())) == "eos"


def test_the_scheduler_tokenizes_a_replys_framing_as_special_and_its_output_as_text():
    calls = []

    def tokenize(text, special=False):
        calls.append((text, special))
        return [ord(c) for c in text]

    def piece(token, special=False):
        return f"[{chr(token)}]".encode() if special else chr(token).encode()

    tool = OnToken(99)
    request = Request("k", [1, 2, 3], 20, 0, tool=tool, render_special=True)
    sched = Scheduler([request], n_slots=1, n_ctx_seq=64, n_ctx_total=64, kv_unified=False, share_prompts=False,
                      token_budget=64, stats=EngineStats(), tokenize=tokenize, piece=piece)
    plan = sched.schedule()
    sched.decoded(plan)
    [seq] = plan.sampling
    sched.accept(seq, 99, b"<|call|>", eog=True)
    assert seq.state is SeqState.TOOL
    sched.schedule()  # polls the tool: the reply is queued after the pending token
    assert calls == [("<s>", True), ("out", False)]
    assert bytes(seq.text) == b"<|call|>[<][s][>][o][u][t]"  # rendered with special tokens spelled out
    assert seq.state is SeqState.INJECT


@pytest.mark.parametrize(("text", "answer", "source"), [
    ("cut off while thinking: \\boxed{15} and 2 + 2 = 4", 15, "fallback"),
    ("the answer is 12, so that 3 * 4 = 1", 12, "fallback"),
    ("we try 3 then 17 then", None, None),
    ("thinking\n</think>\n\nSo we get 7 and", None, None),
])
def test_a_truncated_thinking_sample_counts_only_an_answer_it_stated(text, answer, source):
    assert think_answer(text, None, **LIMITS, truncated=True) == (answer, source)
