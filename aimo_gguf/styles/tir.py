"""Tool-integrated reasoning: the model writes Python, a sandbox runs it, the output goes back.

``PythonTool`` is the engine's tool hook for one sample. When the sample's text
closes a ```` ```python ```` block, the engine pauses the sequence (its KV
cache kept) and the code goes to the sample's own sandbox worker
(``aimo_gguf.sandbox``), on a background thread; other sequences keep
decoding. When the result is there, it is decoded into the same sequence as a
fenced ```` ```output ```` block and generation goes on. At most
``max_calls`` rounds per sample; after that, code blocks are left as text.

The answer of a TIR sample is the last ``\\boxed{}`` after its last tool output,
else the integer that its last successful tool output printed last. Votes can
be weighted (``--tir-weight``): a sample whose code all ran without error
counts that much more.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, fields

from ..engine.api import ToolHook, ToolReply
from .answers import extract_answer, normalize_answer, validate_answer

TIR_SYSTEM_PROMPT = (
    "Please integrate natural language reasoning with programs to solve the problem. Write Python code in "
    "```python blocks; after each block you will see what it printed in an ```output block. "
    "Put your final answer within \\boxed{}."
)
OPEN = "```python"
CLOSE = "```"
OUTPUT_OPEN = "```output\n"
OUTPUT_CLOSE = "\n```\n"
_OUTPUT_BLOCK = re.compile(r"```output\n(.*?)\n```", re.DOTALL)
_INTEGER = re.compile(r"-?\d[\d,]*")


@dataclass
class ToolStats:
    """Counters of every tool call in a run (thread-safe: calls finish on pool threads)."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0  # timed out or crashed (the worker was killed)
    seconds: float = 0.0  # time inside the sandbox, summed over calls
    samples_with_tools: int = 0  # samples with at least one call counted above (a call cut by a stop is in neither)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, status: str, seconds: float) -> None:
        with self._lock:
            self.calls += 1
            self.seconds += seconds
            if status == "ok":
                self.ok += 1
            elif status == "error":
                self.errors += 1
            else:
                self.timeouts += 1

    def count_sample(self) -> None:
        """One more sample used a tool."""
        with self._lock:
            self.samples_with_tools += 1

    @classmethod
    def merged(cls, many: Iterable[ToolStats]) -> ToolStats:
        """Several runs' counters added up, as a new object (each read under its own lock)."""
        total = cls()
        for stats in many:
            counts = stats._counts()
            for name in _TOOL_COUNTS:
                setattr(total, name, getattr(total, name) + counts[name])
        return total

    def snapshot(self) -> ToolStats:
        """A copy that no longer changes: what crosses to another thread or process."""
        return ToolStats.merged([self])

    def assign(self, other: ToolStats) -> None:
        """Take ``other``'s counts as this one's: a driver's copy of its replicas' totals."""
        counts = other._counts()
        with self._lock:
            for name in _TOOL_COUNTS:
                setattr(self, name, counts[name])

    def _counts(self) -> dict:
        with self._lock:
            return {name: getattr(self, name) for name in _TOOL_COUNTS}

    def __getstate__(self) -> dict:  # a lock does not pickle: a copy in another process gets its own
        return self._counts()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def to_dict(self) -> dict:
        return {"tool_calls": self.calls, "tool_ok": self.ok, "tool_errors": self.errors,
                "tool_timeouts": self.timeouts, "tool_seconds": round(self.seconds, 3),
                "samples_with_tools": self.samples_with_tools}


_TOOL_COUNTS = tuple(f.name for f in fields(ToolStats) if f.name != "_lock")


class PythonTool(ToolHook):
    """The tool hook of one sample: detects a closed code block, runs it, formats the output."""

    __slots__ = ("pool", "key", "max_calls", "stats", "prefix", "calls", "results", "_future", "_last_scan",
                 "_counted")

    def __init__(self, pool, key, *, max_calls: int, stats: ToolStats, prefix: str = "") -> None:
        self.pool = pool  # a SandboxPool: submit(key, code) -> Future[ToolResult]
        self.key = key
        self.prefix = prefix  # the prompt's text: a block it opens can be closed by the sample
        self.max_calls = max_calls
        self.stats = stats
        self.calls = 0
        self.results: list = []  # ToolResult of each call, in order
        self._future: Future | None = None
        self._last_scan = 0  # where the last closed block ended in the text
        self._counted = False  # in stats.samples_with_tools

    def wants_call(self, text: bytearray, piece: bytes, token: int, *, room: int, eog: bool) -> bool:
        if eog or b"`" not in piece or self.calls >= self.max_calls:
            return False
        return code_to_run(self._unscanned(bytes(text).decode("utf-8", "replace"))) is not None

    def start(self, text: str) -> None:
        code = code_to_run(self._unscanned(text))
        self._last_scan = len(self.prefix) + len(text)
        self._run(code or "")

    def _run(self, code: str) -> None:
        """Send ``code`` to the sample's worker: one more call (counted in ``stats`` once it is done)."""
        self.calls += 1
        self._future = self.pool.submit(self.key, code)

    @property
    def python(self) -> PythonTool:
        """The sample's Python tool: this one."""
        return self

    def poll(self) -> ToolReply | None:
        future = self._future
        if future is None or not future.done():
            return None
        self._future = None
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - a broken pool must not stop the sample
            from ..sandbox import ToolResult

            result = ToolResult(False, f"{type(e).__name__}: {e}", "crashed", 0.0)
        self.results.append(result)
        self.stats.record(result.status, result.seconds)
        if not self._counted:  # with its first finished call: samples_with_tools counts no call tool_calls lacks
            self._counted = True
            self.stats.count_sample()
        body = result.output.rstrip("\n") if result.output.strip() else "(no output)"
        return self._format(body)

    def _format(self, body: str) -> ToolReply:
        """The reply decoded into the sample: a fenced output block."""
        return "\n" + OUTPUT_OPEN + body + OUTPUT_CLOSE

    def _unscanned(self, generated: str) -> str:
        """Prompt and generated text after the last block that already ran."""
        return (self.prefix + generated)[self._last_scan:]

    def reset(self) -> None:
        """The sequence restarts from its prompt: forget its calls and give it a fresh worker."""
        self.pool.release(self.key)  # kills a call still running; the next submit starts anew
        self.calls = 0
        self.results.clear()
        self._last_scan = 0
        self._future = None

    @property
    def all_ok(self) -> bool:
        """Used a tool, and every call ran without error."""
        return bool(self.results) and all(r.ok for r in self.results)


def code_to_run(text: str) -> str | None:
    """The code of a ```python block that ``text`` ends by closing, else None."""
    stripped = text.rstrip()
    if not stripped.endswith(CLOSE):
        return None
    start = stripped.rfind(OPEN)
    if start < 0:
        return None
    body = stripped[start + len(OPEN):len(stripped) - len(CLOSE)]
    if CLOSE in body:  # the block closed earlier; this fence belongs to something else
        return None
    body = body.removeprefix("3")  # ```python3
    if body and not body.startswith("\n"):
        return None  # ```pythonic or the like: not a code block
    return body.strip("\n")


def tir_answer(text: str, results: list, *, min_answer: int, max_answer: int, modulo: int | None,
               truncated: bool = False) -> int | None:
    """A TIR sample's answer: the answer the text after its last tool output ends on, when that text
    boxes one (``extract_answer``), else the last integer its last successful tool output printed.
    ``truncated`` (it hit the token limit) drops only the prose's last-number fallback: a tool's output
    is computed, not wherever the limit fell."""
    limits = dict(min_answer=min_answer, max_answer=max_answer, modulo=modulo)
    outputs = list(_OUTPUT_BLOCK.finditer(text))
    tail = text[outputs[-1].end():] if outputs else text
    if "\\boxed" in tail:
        answer = extract_answer(tail, **limits, truncated=truncated)
        if answer is not None:
            return answer
    for result in reversed(results):
        if result.ok:
            numbers = _INTEGER.findall(result.output)
            if numbers:
                return validate_answer(normalize_answer(numbers[-1]), **limits)
            break
    if not outputs:
        return extract_answer(text, **limits, truncated=truncated)
    return None
