"""gpt-oss's harmony format: its prompt, the messages of a completion, its Python tool and its answer.

gpt-oss was trained on one conversation format (OpenAI's "harmony"): messages
``<|start|>{header}<|message|>{content}<|end|>``, a system message with the
reasoning effort and the built-in tools, a developer message with the
instructions, and assistant messages on three channels: ``analysis`` (the
chain of thought, where the Python tool is called), ``commentary`` and
``final`` (the answer). A tool call is an assistant message addressed
``to=python`` that ends with ``<|call|>`` (an end-of-generation token for
llama.cpp); the tool's reply is a message from ``python`` ``to=assistant``,
after which the assistant turn is opened again.

``render_prompt`` writes that text itself, byte for byte what the gpt-oss
chat template (carried by the GGUFs, copied in tests/data/templates) renders,
which the tests check; the template cannot take our own tool description or
date, so the text is not rendered through it. The ``openai-harmony`` package
would render the same, but it downloads its tokenizer file on first use and
fails offline (a Kaggle submission has no internet), so it is not used.

``HarmonyTool`` is the engine's tool hook for one sample (the same sandbox
worker as ``aimo_gguf.styles.tir``, one per sample, stateful across calls), and
``harmony_answer`` takes the answer from the ``final`` channel, the analysis
only as a fallback. ``HarmonyStyle`` is the family as the solver sees it
(``aimo_gguf.styles.base.PromptStyle``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, ClassVar

from ..engine.api import ToolReply
from ..errors import InputError
from .answers import extract_answer
from .base import Answer, AnswerLimits, PromptStyle
from .tir import PythonTool, ToolStats

if TYPE_CHECKING:
    from ..sandbox import SandboxPool

REASONING_EFFORTS = ("low", "medium", "high")
START, END, MESSAGE, CHANNEL, CALL, RETURN, CONSTRAIN = (
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|call|>", "<|return|>", "<|constrain|>")
TERMINATORS = (END, CALL, RETURN)
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."  # what gpt-oss was trained with
KNOWLEDGE_CUTOFF = "2024-06"
# The built-in python tool's description as the gpt-oss chat template (and openai-harmony) write it.
TEMPLATE_PYTHON_DESCRIPTION = (
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. "
    "This tool should be used for internal reasoning, but not for code that is intended to be visible to the "
    "user (e.g. when creating plots, tables, or files).\n\n"
    "When you send a message containing Python code to python, it will be executed in a stateful Jupyter "
    "notebook environment. python will respond with the output of the execution or time out after 120.0 "
    "seconds. The drive at '/mnt/data' can be used to save and persist user files. Internet access for this "
    "session is UNKNOWN. Depends on the cluster."
)
# Ours: the same first paragraph (what the model knows), then what our sandbox really is.
PYTHON_DESCRIPTION = (
    "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. "
    "This tool should be used for internal reasoning, but not for code that is intended to be visible to the "
    "user (e.g. when creating plots, tables, or files).\n\n"
    "When you send a message containing Python code to python, it will be executed in a stateful Jupyter "
    "notebook environment: variables persist between calls, and the value of the last line is shown. python "
    "will respond with the output of the execution or time out after {timeout:g} seconds. sympy and numpy "
    "can be imported. Internet access for this session is disabled."
)
_HEADER_RECIPIENT = re.compile(r"\bto=(\S+)")


def system_message(*, reasoning_effort: str = "high", python: str | None = None, identity: str = DEFAULT_IDENTITY,
                   today: date | None = None) -> str:
    """The harmony system message: identity, dates, reasoning effort, the python tool (its description)."""
    if reasoning_effort not in REASONING_EFFORTS:
        raise ValueError(f"reasoning effort must be one of {', '.join(REASONING_EFFORTS)}, got {reasoning_effort!r}")
    day = (today or date.today()).strftime("%Y-%m-%d")
    text = f"{identity}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {day}\n\nReasoning: {reasoning_effort}\n\n"
    if python is not None:
        text += f"# Tools\n\n## python\n\n{python}\n\n"
    text += "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    return f"{START}system{MESSAGE}{text}{END}"


def render_prompt(problem: str, *, instructions: str = "", reasoning_effort: str = "high",
                  python: str | None = None, identity: str = DEFAULT_IDENTITY, today: date | None = None) -> str:
    """The prompt of one problem, ready for the assistant's reply: system, developer (the instructions,
    when there are any) and user messages, then ``<|start|>assistant``."""
    text = system_message(reasoning_effort=reasoning_effort, python=python, identity=identity, today=today)
    if instructions:
        text += f"{START}developer{MESSAGE}# Instructions\n\n{instructions}\n\n{END}"
    return text + f"{START}user{MESSAGE}{problem.strip()}{END}{START}assistant"


# --- reading a completion ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a completion."""

    role: str  # assistant, or the tool that replied (python)
    channel: str  # analysis, commentary, final, or "" when the header names none
    recipient: str  # "python" for a tool call, "assistant" for a tool's reply, "" for nobody
    content_type: str  # "code", "json", ... as the header says, or ""
    content: str
    end: str  # the token that ended it (<|end|>, <|call|>, <|return|>), "" when the text stops inside it

    @property
    def is_call(self) -> bool:
        return self.role == "assistant" and bool(self.recipient) and self.recipient != "assistant"


def parse(text: str, *, role: str = "assistant") -> list[Message]:
    """The messages of a completion (special tokens written out), which starts inside the header of
    a message by ``role`` (the prompt ends with ``<|start|>assistant``). A message cut off by the end
    of the text has ``end == ""``; text outside any message is dropped."""
    messages = []
    for i, chunk in enumerate(text.split(START)):
        if i == 0:
            header_role = role
        elif not chunk:
            continue
        else:
            header_role = None
        header, sep, body = chunk.partition(MESSAGE)
        if not sep:
            if i == 0 and not chunk.strip():
                continue
            body, header = "", chunk  # a header that never reached <|message|>: cut off
        end = ""
        cut = len(body)
        for token in TERMINATORS:
            at = body.find(token)
            if 0 <= at < cut:
                cut, end = at, token
        content = body[:cut]
        messages.append(_message(header, header_role, content, end if sep else ""))
    return messages


def _message(header: str, role: str | None, content: str, end: str) -> Message:
    header = header.replace(CONSTRAIN, " ")  # "to=functions.f<|constrain|>json": the type is a word of its own
    head, _, channel_part = header.partition(CHANNEL)
    words = head.split()
    if role is None:
        role = words[0] if words else ""
        words = words[1:]
    recipient = ""
    for part in (" ".join(words), channel_part):
        match = _HEADER_RECIPIENT.search(part)
        if match:
            recipient = match.group(1)
    channel_words = _HEADER_RECIPIENT.sub("", channel_part).split()
    channel = channel_words[0] if channel_words else ""
    content_type = channel_words[1] if len(channel_words) > 1 else ""
    return Message(role=role, channel=channel, recipient=recipient, content_type=content_type, content=content,
                   end=end)


def harmony_answer(text: str, *, min_answer: int, max_answer: int, modulo: int | None, truncated: bool = False
                   ) -> tuple[int | None, str | None]:
    """A harmony sample's answer and where it came from: ``"final"`` (the last final-channel message:
    its last ``\\boxed{}``, else its answer phrase or last number), ``"fallback"`` (the same read from the
    analysis, when there is no final answer), or ``None``. ``truncated`` (it hit the token limit): only
    an answer it states counts, never a last number (``answers.extract_answer``)."""
    limits = dict(min_answer=min_answer, max_answer=max_answer, modulo=modulo, truncated=truncated)
    messages = parse(text)
    finals = [m for m in messages if m.channel == "final" and m.role == "assistant"]
    if finals:
        answer = extract_answer(finals[-1].content, **limits)
        if answer is not None:
            return answer, "final"
    thinking = "\n".join(m.content for m in messages if m.role == "assistant" and m.channel != "final"
                         and not m.is_call)
    answer = extract_answer(thinking, **limits)
    return (answer, "fallback") if answer is not None else (None, None)


# --- the tool ----------------------------------------------------------------------------------------------


class HarmonyTool(PythonTool):
    """The tool hook of one harmony sample: pauses on ``<|call|>``, runs a ``to=python`` message's code
    in the sample's sandbox worker, and replies with the python tool's message, the assistant turn
    opened again. After ``max_calls`` calls (or a call to a tool that does not exist) the reply says
    so without running anything, so the sample goes on to its answer."""

    __slots__ = ("call_token", "_reply", "_channel")

    def __init__(self, pool, key, *, max_calls: int, stats, call_token: int) -> None:
        super().__init__(pool, key, max_calls=max_calls, stats=stats)
        self.call_token = call_token
        self._reply: tuple[str, str, str] | None = None  # (author, channel, text) known at once
        self._channel = "analysis"  # the channel of the call being run: its reply goes there too

    def wants_call(self, text: bytearray, piece: bytes, token: int, *, room: int, eog: bool) -> bool:
        return token == self.call_token

    def start(self, text: str) -> None:
        messages = parse(text)
        call = messages[-1] if messages else None
        channel = (call.channel if call is not None else "") or "analysis"
        recipient = call.recipient if call is not None else ""
        if not recipient.startswith("python"):
            self._reply = (recipient or "functions", channel,
                           f"Error: there is no tool {recipient or '(none named)'}; only python is available.")
            return
        if self.calls >= self.max_calls:
            self._reply = ("python", channel, f"Error: the limit of {self.max_calls} python calls is reached: "
                                              "continue without the tool.")
            return
        self._channel = channel
        self._reply = None
        self._run(call.content)

    def poll(self) -> ToolReply | None:
        if self._reply is not None:
            author, channel, body = self._reply
            self._reply = None
            return _tool_message(author, channel, body)
        return super().poll()

    def _format(self, body: str) -> ToolReply:
        return _tool_message("python", self._channel, body)

    def reset(self) -> None:
        super().reset()
        self._reply = None


def _tool_message(author: str, channel: str, body: str) -> tuple[tuple[str, bool], ...]:
    """A tool's reply message and the assistant turn opened again: framing as special tokens, the
    output as plain text. llama.cpp parses gpt-oss's <|start|>, <|channel|>, <|message|>,
    <|constrain|> and <|end|> even in plain text (they are user-defined tokens there), so a printed
    ``<|`` gets a zero-width space: code cannot forge a message."""
    return ((f"{START}{author} to=assistant{CHANNEL}{channel}{MESSAGE}", True), (defuse(body), False),
            (f"{END}{START}assistant", True))


def defuse(text: str) -> str:
    """``text`` with every ``<|`` broken by a zero-width space, so no special token can be read in it."""
    return text.replace("<|", "<\u200b|")


# --- the family ----------------------------------------------------------------------------------------------


def call_token(tokenize: Callable[..., list[int]]) -> int:
    """The id of ``<|call|>`` in a model's vocabulary (``tokenize``: the engine's); a model without
    harmony's special tokens is an InputError."""
    ids = tokenize(CALL, add_special=False, parse_special=True)
    ends = tokenize(END, add_special=False, parse_special=True)
    if len(ids) != 1 or len(ends) != 1:
        raise InputError("--prompt-style harmony needs gpt-oss's special tokens (<|call|>, <|end|>), and this "
                         "model has none: use --prompt-style plain or auto")
    return ids[0]


@dataclass(frozen=True, kw_only=True)
class HarmonyStyle(PromptStyle):
    """gpt-oss: harmony messages, its own python tool (paused on ``<|call|>``), the final channel's answer."""

    name: ClassVar[str] = "harmony"
    special_tokens: ClassVar[bool] = True
    answer_parts: ClassVar[tuple[str, str] | None] = ("final channel", "analysis")

    instructions: str  # the system prompt, as the developer message
    reasoning_effort: str
    python_description: str | None  # the python tool's, with --tir; None: no tool declared
    call_token: int  # <|call|>'s id (``call_token``)
    limits: AnswerLimits
    max_calls: int  # --max-tool-calls

    def prompt(self, problem: str) -> str:
        return render_prompt(problem, instructions=self.instructions, reasoning_effort=self.reasoning_effort,
                             python=self.python_description)

    def python_tool(self, pool: SandboxPool, key: Hashable, *, prompt: str, stats: ToolStats) -> HarmonyTool:
        return HarmonyTool(pool, key, max_calls=self.max_calls, stats=stats, call_token=self.call_token)

    def budget(self, python: PythonTool | None, *, prompt: str, room: int) -> PythonTool | None:
        return python

    def answer(self, text: str, python: PythonTool | None, *, truncated: bool) -> Answer:
        return harmony_answer(text, **self.limits.of(truncated=truncated))
