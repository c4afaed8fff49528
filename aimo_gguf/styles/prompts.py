"""Turning a problem into the text the model sees.

Instruction models get the chat template stored in their GGUF
(``tokenizer.chat_template``), rendered with Jinja the way Hugging Face
tokenizers render it. Base models, or any model with ``raw_prompt``, get a
plain "Problem: ... Solution:" completion prompt.

Three prompt families (``--prompt-style``), told apart by the GGUF's
architecture, chat template and name (``detect_style``), each a
``PromptStyle`` (``aimo_gguf.styles.base``) that ``aimo_gguf.styles.style_for``
builds once per run:

- ``harmony``: gpt-oss (``aimo_gguf.styles.harmony``): system, developer and user
  messages, the reasoning effort, the Python tool declared as gpt-oss's own.
- ``think``: reasoning models with a ``<think>`` block (``aimo_gguf.styles.think``):
  no system prompt, the instruction in the user turn, the reply opened with
  ``<think>``.
- ``plain`` (``aimo_gguf.styles.plain``): a system prompt and the problem through
  the chat template.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InputError

# Qwen2.5-Math's own instruction; the recommended math models are trained on it.
DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
RAW_PROMPT_TEMPLATE = "{system}\n\nProblem: {problem}\nSolution:"
RAW_PROMPT_STOPS = ("\nProblem:",)  # a base model goes on to invent the next problem
PROMPT_STYLES = ("auto", "harmony", "think", "plain")
# Reasoning families whose GGUF template may not show the <think> block (OpenMath-Nemotron keeps Qwen2.5's).
_THINKING_NAMES = re.compile(r"(?i)\bR1\b|QwQ|OpenMath-Nemotron|Thinking|\bOpenThinker")


def detect_style(architecture: str, template: str | None, name: str = "") -> str:
    """The prompt family of a model, from its GGUF: ``harmony`` for gpt-oss (its architecture, or a
    template that writes harmony channels); ``think`` for a template whose reply opens a ``<think>``
    block (rendered with thinking on), a template with a thinking switch (``enable_thinking``), or a
    known reasoning family's name; else ``plain``. A template that only strips ``</think>`` from
    earlier turns (non-thinking instruct models) is not enough."""
    template = template or ""
    if architecture == "gpt-oss" or "<|channel|>" in template:
        return "harmony"
    if _THINKING_NAMES.search(name or "") or "enable_thinking" in template or _opens_thinking(template):
        return "think"
    return "plain"


def _opens_thinking(template: str) -> bool:
    """Whether the template's generation prompt opens a ``<think>`` block after the user's turn."""
    if "<think>" not in template:
        return False
    marker = "\u2063problem\u2063"
    try:
        text = chat_prompt(marker, template=template, system_prompt="", enable_thinking=True)
    except InputError:
        return False
    return "<think>" in text[text.rfind(marker) + len(marker):]


def raw_prompt(problem: str, system_prompt: str) -> str:
    return RAW_PROMPT_TEMPLATE.format(system=system_prompt.strip(), problem=problem.strip())


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)  # a render can pass its own clock
    try:
        return env.from_string(template)
    except Exception as e:  # noqa: BLE001 - the template is the model's code: any failure is its error
        raise InputError(f"The model's chat template does not parse ({_reason(e)}): use --raw-prompt") from None


def chat_prompt(
    problem: str,
    *,
    template: str,
    system_prompt: str,
    bos_token: str = "",
    eos_token: str = "",
    today: date | None = None,
    **variables,
) -> str:
    """Render the chat template with a system and a user message, ready for the reply.

    Templates that refuse a system role (Gemma's, for one) get the system
    prompt folded into the user message instead. ``variables`` go to the
    template as they are (``enable_thinking``, ``reasoning_effort``); a template
    that asks for the date (``strftime_now``) gets ``today`` when given.
    """
    compiled = _compile(template)
    user = problem.strip()
    variants = []
    if system_prompt:
        variants.append([{"role": "system", "content": system_prompt}, {"role": "user", "content": user}])
        variants.append([{"role": "user", "content": f"{system_prompt}\n\n{user}"}])
    else:
        variants.append([{"role": "user", "content": user}])
    error: Exception | None = None
    for messages in variants:
        try:
            if today is not None:
                variables["strftime_now"] = today.strftime
            return compiled.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
                **variables,
            )
        # Not only Jinja's errors: a template can add a list to a number (TypeError), ask for a
        # range too long (OverflowError) or recurse without end (RecursionError).
        except Exception as e:  # noqa: BLE001 - the template is the model's code: any failure is its error
            error = e
    raise InputError(f"The model's chat template failed to render ({_reason(error)}): use --raw-prompt")


def _reason(error: BaseException) -> str:
    """A template's error on one line, with its kind when it is not Jinja's own."""
    text = " ".join(str(error).split())
    if isinstance(error, jinja2.TemplateError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
