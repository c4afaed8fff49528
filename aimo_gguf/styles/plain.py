"""The plain family: a system prompt and the problem through the model's chat template (a base model,
or any model with --raw-prompt, gets the raw "Problem: ... Solution:" prompt), answered by the whole
text, or with --tir by its code's output (``aimo_gguf.styles.tir``)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .answers import extract_answer
from .base import Answer, AnswerLimits, PromptStyle, SampleTool
from .prompts import chat_prompt, raw_prompt
from .tir import PythonTool, ToolStats, tir_answer

if TYPE_CHECKING:
    from ..sandbox import SandboxPool


@dataclass(frozen=True, kw_only=True)
class PlainStyle(PromptStyle):
    """A system prompt and the problem; fenced Python with --tir."""

    name: ClassVar[str] = "plain"
    special_tokens: ClassVar[bool] = False
    answer_parts: ClassVar[tuple[str, str] | None] = None

    template: str | None  # the model's chat template; None: the raw completion prompt
    system_prompt: str
    bos_token: str = ""
    eos_token: str = ""
    limits: AnswerLimits
    max_calls: int  # --max-tool-calls

    def prompt(self, problem: str) -> str:
        if self.template is None:
            return raw_prompt(problem, self.system_prompt)
        return chat_prompt(problem, template=self.template, system_prompt=self.system_prompt,
                           bos_token=self.bos_token, eos_token=self.eos_token)

    def python_tool(self, pool: SandboxPool, key: Hashable, *, prompt: str, stats: ToolStats) -> PythonTool:
        return PythonTool(pool, key, max_calls=self.max_calls, stats=stats, prefix=prompt)

    def budget(self, python: PythonTool | None, *, prompt: str, room: int) -> SampleTool | None:
        return python

    def answer(self, text: str, python: PythonTool | None, *, truncated: bool) -> Answer:
        limits = self.limits.of(truncated=truncated)
        if python is not None:
            return tir_answer(text, python.results, **limits), None
        return extract_answer(text, **limits), None
