"""Reasoning models that think in a ``<think>`` block first (DeepSeek-R1 distills, QwQ, OpenMath-Nemotron).

Their conventions, from the models' cards: no system prompt (the instruction
goes in the user turn), the reply opens with ``<think>\\n``, and the answer is
written after ``</think>``. A sample that is still thinking when its budget
is nearly spent would end with no answer at all, so ``ThinkBudget`` (the
engine's tool hook) closes the thinking ``reserve`` tokens before the end, with
the sentence Qwen documents for its thinking budget, and the model writes its
answer in what is left. ``think_answer`` reads the answer after ``</think>``,
the thinking only as a fallback. ``ThinkStyle`` is the family as the solver
sees it (``aimo_gguf.styles.base.PromptStyle``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..engine.api import ToolHook, ToolReply
from .answers import extract_answer
from .base import Answer
from .plain import PlainStyle
from .prompts import chat_prompt
from .tir import PythonTool, tir_answer

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Qwen's thinking-budget sentence (Qwen3 model card), then the closing tag.
CONCLUDE = "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking " \
           "directly now.\n"
MAX_RESERVE = 512


def default_reserve(max_tokens: int) -> int:
    """Tokens kept for the answer after ``</think>``: an eighth of the budget, at most 512."""
    return min(MAX_RESERVE, max(1, max_tokens // 8))


def open_thinking(prompt: str) -> str:
    """The prompt, ending with ``<think>\\n`` as the R1 models' card asks (newer templates add it)."""
    stripped = prompt.rstrip()
    if stripped.endswith(THINK_CLOSE):  # a template that turned thinking off
        return prompt
    if stripped.endswith(THINK_OPEN):
        return stripped + "\n"
    return prompt + THINK_OPEN + "\n"


class ThinkBudget(ToolHook):
    """The tool hook of one thinking sample: once only ``reserve`` tokens are left to it (its budget,
    less what its tool replies took of the context) and it has not closed its thinking, the thinking
    is closed for it. ``inner`` is the sample's Python tool (fenced code, with --tir), whose calls go
    through as before. ``closed``: the prompt turned thinking off, nothing to close."""

    __slots__ = ("inner", "reserve", "closed", "_off", "_active", "_concluding")

    def __init__(self, *, reserve: int, inner: PythonTool | None = None, closed: bool = False) -> None:
        self.inner = inner
        self.reserve = max(1, reserve)
        self.closed = closed  # </think> written, by the model or by us
        self._off = closed  # the prompt itself closed the thinking
        self._active = None  # the inner tool while its call runs
        self._concluding = False

    def wants_call(self, text: bytearray, piece: bytes, token: int, *, room: int, eog: bool) -> bool:
        if not self.closed and b">" in piece and text.rfind(THINK_CLOSE.encode(), max(0, len(text) - 64)) >= 0:
            self.closed = True
        if not self.closed and not eog and room <= self.reserve:
            self.closed = self._concluding = True  # an ending sample just ends: never on an end token
            return True
        if self.inner is not None and self.inner.wants_call(text, piece, token, room=room, eog=eog):
            self._active = self.inner
            return True
        return False

    def start(self, text: str) -> None:
        if self._active is not None:
            self._active.start(text)

    def poll(self) -> ToolReply | None:
        if self._concluding:
            self._concluding = False
            return (CONCLUDE, False), (THINK_CLOSE, True), ("\n\n", False)
        if self._active is None:
            return None
        reply = self._active.poll()
        if reply is not None:
            self._active = None
        return reply

    def reset(self) -> None:
        self.closed = self._off  # restarted from its prompt: nothing it generated is left
        self._active, self._concluding = None, False
        if self.inner is not None:
            self.inner.reset()

    @property
    def python(self) -> PythonTool | None:
        """The sample's Python tool, or None."""
        return self.inner


def think_answer(text: str, results: list | None, *, min_answer: int, max_answer: int, modulo: int | None,
                 truncated: bool = False) -> tuple[int | None, str | None]:
    """A thinking sample's answer and where it came from: ``"final"`` (the text after its last
    ``</think>``), ``"fallback"`` (the thinking, or with --tir its tool outputs, when the text after
    it has no answer), or ``None``. ``truncated``: as ``answers.extract_answer``'s."""
    limits = dict(min_answer=min_answer, max_answer=max_answer, modulo=modulo, truncated=truncated)
    head, sep, tail = text.rpartition(THINK_CLOSE)
    if sep:
        answer = extract_answer(tail, **limits)
        if answer is not None:
            return answer, "final"
    thinking = head if sep else text
    answer = tir_answer(thinking, results, **limits) if results else extract_answer(thinking, **limits)
    return (answer, "fallback") if answer is not None else (None, None)


@dataclass(frozen=True, kw_only=True)
class ThinkStyle(PlainStyle):
    """No system prompt (the instruction follows the problem in the user turn), the reply opened with
    ``<think>``, a thinking budget on every sample, the answer after ``</think>``."""

    name: ClassVar[str] = "think"
    answer_parts: ClassVar[tuple[str, str] | None] = ("text after </think>", "thinking")

    reserve: int  # --think-reserve, or default_reserve(--max-tokens)

    def prompt(self, problem: str) -> str:
        if self.template is None:  # never chosen without a template (styles.style_for): the raw prompt
            return super().prompt(problem)
        system = self.system_prompt
        user = f"{problem.strip()}\n\n{system}" if system else problem
        return open_thinking(chat_prompt(user, template=self.template, system_prompt="", bos_token=self.bos_token,
                                         eos_token=self.eos_token, enable_thinking=True))

    def budget(self, python: PythonTool | None, *, prompt: str, room: int) -> ThinkBudget:
        return ThinkBudget(reserve=min(self.reserve, room // 2), inner=python,
                           closed=prompt.rstrip().endswith(THINK_CLOSE))

    def answer(self, text: str, python: PythonTool | None, *, truncated: bool) -> Answer:
        return think_answer(text, python.results if python is not None else None, **self.limits.of(truncated=truncated))
