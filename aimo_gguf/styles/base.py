"""What a prompt family is to the solver: ``PromptStyle``, and ``SampleTool``, the tool hook it hands out.

A style is built once per run (``aimo_gguf.styles.style_for``), bound to the
model's chat template and the run's settings, and then asked, for every
problem and sample, for the prompt, the sample's tool hook and its answer.
The solver holds no rule of its own about any family: plain
(``aimo_gguf.styles.plain``), think (``aimo_gguf.styles.think``) and harmony
(``aimo_gguf.styles.harmony``) each answer the same questions their way.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..engine.api import ToolHook
from .tir import PythonTool, ToolStats

if TYPE_CHECKING:
    from ..sandbox import SandboxPool

Answer = tuple[int | None, str | None]  # the answer, and where it came from: "final", "fallback", or None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerLimits:
    """Which integers count as answers (--min-answer, --max-answer, --modulo)."""

    min_answer: int
    max_answer: int
    modulo: int | None

    def of(self, *, truncated: bool) -> dict:
        """The keywords of the answer rules (``aimo_gguf.styles.answers.extract_answer`` and the like)."""
        return dict(min_answer=self.min_answer, max_answer=self.max_answer, modulo=self.modulo,
                    truncated=truncated)


class SampleTool(ToolHook, Protocol):
    """A sample's tool hook as the solver holds it: the engine's ``ToolHook``, and the sample's Python tool
    (itself, a thinking budget's inner tool, or None), whose sandbox worker the solver releases and whose
    results the answer rule reads."""

    @property
    def python(self) -> PythonTool | None: ...


class PromptStyle(Protocol):
    """One prompt family, bound to a model and a run's settings."""

    name: str  # plain, think or harmony: what the run's summary reports
    special_tokens: bool  # completions are rendered with their special tokens written out (harmony's framing)
    # where an answer comes from, and a fallback one, in the run summary's words; None: one place only
    answer_parts: tuple[str, str] | None

    def prompt(self, problem: str) -> str:
        """The text the model sees for ``problem``; an InputError when the model's template fails on it."""
        ...

    def python_tool(self, pool: SandboxPool, key: Hashable, *, prompt: str, stats: ToolStats) -> PythonTool:
        """With --tir, the sample's Python tool in this family's call format, its worker in ``pool`` under
        ``key``; ``prompt`` is the sample's prompt text."""
        ...

    def budget(self, python: PythonTool | None, *, prompt: str, room: int) -> SampleTool | None:
        """The sample's tool hook: ``python`` as it is, or inside the family's budget hook; ``room`` is the
        most tokens the sample may generate."""
        ...

    def answer(self, text: str, python: PythonTool | None, *, truncated: bool) -> Answer:
        """A finished sample's answer from its text (and its tool's results); ``truncated``: it hit the
        token limit, so only an answer it stated counts (``aimo_gguf.styles.answers.extract_answer``)."""
        ...
