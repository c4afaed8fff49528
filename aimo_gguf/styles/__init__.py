"""Prompt families and their answer rules: plain, harmony (gpt-oss), think, and --tir's tool.

``style_for`` works out a run's family once, at the load; the solver then asks
the ``PromptStyle`` it returns for every prompt, tool hook and answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from .base import AnswerLimits, PromptStyle, SampleTool
from .harmony import PYTHON_DESCRIPTION, HarmonyStyle, call_token
from .plain import PlainStyle
from .prompts import DEFAULT_SYSTEM_PROMPT, detect_style
from .think import ThinkStyle, default_reserve
from .tir import TIR_SYSTEM_PROMPT

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..engine.api import BatchEngine

__all__ = ["PromptStyle", "SampleTool", "answer_parts", "style_for"]
PROBE = "What is 1 + 1?"  # rendered once at the load: a template that fails on every problem fails there


def answer_parts(name: str) -> tuple[str, str] | None:
    """The ``answer_parts`` of the family called ``name`` (a summary holds the name alone: a replica's
    style stays in its process); None for an unknown name."""
    family = {style.name: style for style in (PlainStyle, ThinkStyle, HarmonyStyle)}.get(name)
    return family.answer_parts if family is not None else None


def style_for(engine: BatchEngine, config: RunConfig) -> PromptStyle:
    """The prompt family of a run on ``engine``: --prompt-style, or the one the GGUF says (``detect_style``);
    a model without a chat template (a base model) is prompted plainly, unless it is a harmony one. A family
    the model cannot take is an InputError, raised here (at the load) rather than at the first problem."""
    template = None if config.raw_prompt else engine.chat_template
    name = config.prompt_style
    if name == "auto":
        info = engine.info
        name = detect_style(info.architecture, template, info.name)
        name = "plain" if name == "think" and template is None else name
    elif name == "think" and template is None:
        raise InputError("--prompt-style think needs the model's chat template, and this model has none "
                         "(a base model: use --prompt-style plain)")
    limits = AnswerLimits(min_answer=config.min_answer, max_answer=config.max_answer, modulo=config.modulo)
    style: PromptStyle
    if name == "harmony":
        style = HarmonyStyle(instructions=config.system_prompt, reasoning_effort=config.reasoning_effort,
                             python_description=PYTHON_DESCRIPTION.format(timeout=config.tool_timeout)
                             if config.tir else None, call_token=call_token(engine.tokenize), limits=limits,
                             max_calls=config.max_tool_calls)
    else:
        # With --tir and the default system prompt, the prompt invites fenced Python.
        system = TIR_SYSTEM_PROMPT if config.tir and config.system_prompt == DEFAULT_SYSTEM_PROMPT \
            else config.system_prompt
        common = dict(template=template, system_prompt=system, bos_token=engine.bos_token,
                      eos_token=engine.eos_token, limits=limits, max_calls=config.max_tool_calls)
        style = ThinkStyle(**common, reserve=config.think_reserve or default_reserve(config.max_tokens)) \
            if name == "think" else PlainStyle(**common)
    style.prompt(PROBE)
    return style
