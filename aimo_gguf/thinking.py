"""Reasoning models that think in a ``<think>`` block first (DeepSeek-R1 distills, QwQ, OpenMath-Nemotron).

Their conventions, from the models' cards: no system prompt (the instruction
goes in the user turn), the reply opens with ``<think>\\n``, and the answer is
written after ``</think>``. A sample that is still thinking when its budget
is nearly spent would end with no answer at all, so ``ThinkBudget`` (the
engine's tool hook) closes the thinking ``reserve`` tokens before the end, with
the sentence Qwen documents for its thinking budget, and the model writes its
answer in what is left. ``think_answer`` reads the answer after ``</think>``,
the thinking only as a fallback.
"""

from __future__ import annotations

from .answers import extract_answer
from .tir import tir_answer

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


class ThinkBudget:
    """The tool hook of one thinking sample: once it has generated ``max_tokens - reserve`` tokens
    without closing its thinking, the thinking is closed for it. ``inner`` is the sample's other
    tool (the fenced Python tool with --tir), whose calls go through as before."""

    __slots__ = ("inner", "limit", "seen", "closed", "_active", "_concluding")

    def __init__(self, *, max_tokens: int, reserve: int, inner=None) -> None:
        self.inner = inner
        self.limit = max(1, max_tokens - reserve)
        self.seen = 0  # tokens generated so far (one call of wants_call each)
        self.closed = False  # </think> written, by the model or by us
        self._active = None  # the inner tool while its call runs
        self._concluding = False

    def wants_call(self, text: bytearray, piece: bytes, token: int = -1) -> bool:
        self.seen += 1
        if not self.closed and b">" in piece and text.rfind(THINK_CLOSE.encode(), max(0, len(text) - 64)) >= 0:
            self.closed = True
        if not self.closed and self.seen >= self.limit and piece:  # never on an end token (it renders empty)
            self.closed = self._concluding = True
            return True
        if self.inner is not None and self.inner.wants_call(text, piece, token):
            self._active = self.inner
            return True
        return False

    def start(self, text: str) -> None:
        if self._active is not None:
            self._active.start(text)

    def poll(self):
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
        self.seen, self.closed, self._active, self._concluding = 0, False, None, False
        if self.inner is not None:
            self.inner.reset()

    # What the solver reads of the sample's Python tool.
    @property
    def results(self) -> list:
        return self.inner.results if self.inner is not None else []

    @property
    def all_ok(self) -> bool:
        return self.inner is not None and self.inner.all_ok


def think_answer(text: str, results: list | None, *, min_answer: int, max_answer: int, modulo: int | None
                 ) -> tuple[int | None, str | None]:
    """A thinking sample's answer and where it came from: ``"final"`` (the text after its last
    ``</think>``), ``"fallback"`` (the thinking, or with --tir its tool outputs, when the text after
    it has no answer), or ``None``."""
    limits = dict(min_answer=min_answer, max_answer=max_answer, modulo=modulo)
    head, sep, tail = text.rpartition(THINK_CLOSE)
    if sep:
        answer = extract_answer(tail, **limits)
        if answer is not None:
            return answer, "final"
    thinking = head if sep else text
    answer = tir_answer(thinking, results, **limits) if results else extract_answer(thinking, **limits)
    return (answer, "fallback") if answer is not None else (None, None)
