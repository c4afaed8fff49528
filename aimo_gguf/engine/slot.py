"""One running sequence: its state, what it still has to decode, and what it generated.

A ``Slot`` is one KV sequence of the context (a slot, ``seq_id``) and the
request it runs. Its life, as the scheduler moves it::

    WAITING --(a sibling decoded the shared prompt: copy its KV)--> PREFILL
    PREFILL --(prompt decoded: first token sampled)--> DECODE
    DECODE  --(the text closed a tool call)--> TOOL --(output ready)--> INJECT --> DECODE
    any     --(eos, stop string, budget, cancel, kv_full, low confidence)--> released (the slot is free again)

Plain Python: no llama.cpp here. Token pieces come in as bytes, stop strings
are matched on those bytes, and the tool hook (``Request.tool``) is asked
after every token (an end-of-generation one too) whether it just closed a call.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from ..utf8 import utf8
from .api import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_LOW_CONFIDENCE,
    FINISH_STOP,
    Completion,
    Request,
)
from .confidence import Tracker


class SeqState(enum.Enum):
    WAITING = "waiting"  # admitted; waits for a sibling to finish the shared prompt, to copy its KV
    PREFILL = "prefill"  # its prompt is being decoded, in chunks of the step's token budget
    DECODE = "decode"  # generating, one token a step
    TOOL = "tool"  # paused on a tool call with its KV kept; decodes nothing
    INJECT = "inject"  # the tool's output (after the token that closed the call) is being decoded


class StopMatcher:
    """Finds the first stop string in a sequence's text, looking only near its end."""

    __slots__ = ("stops", "_tail")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [utf8(s) for s in stops if s]
        self._tail = max((len(s) for s in self.stops), default=0) + 16

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: bytearray, n_new: int) -> int:
        """Where ``text`` must be cut, given that its last ``n_new`` bytes just arrived; -1 for nowhere."""
        tail = bytes(text[-(n_new + self._tail):])
        hit = min((i for i in (tail.find(s) for s in self.stops) if i >= 0), default=-1)
        return -1 if hit < 0 else len(text) - len(tail) + hit


class Slot:
    """One slot of the context and the request it is running."""

    __slots__ = (
        "seq_id", "request", "state", "feed", "fed", "pos", "generated", "text", "max_new", "injected",
        "inject_from", "order", "reserved", "step_start", "logit_index", "kept", "tracker",
    )

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.request: Request | None = None
        self.state = SeqState.WAITING

    def start(self, request: Request, *, max_new: int, order: int, wait_for_prefix: bool) -> None:
        """Take ``request``: nothing of it is in the KV cache yet."""
        self.request = request
        self.state = SeqState.WAITING if wait_for_prefix else SeqState.PREFILL
        self.feed: Sequence[int] = request.prompt  # tokens to decode...
        self.fed = 0  # ...and how many of them are in the batch or the KV cache
        self.pos = 0  # position of the next token
        self.generated: list[int] = []
        self.text = bytearray()
        self.max_new = max_new  # most tokens to generate: the request's budget, clipped to the context
        self.injected = 0  # tool output tokens added so far
        self.inject_from = 0  # in INJECT, where the tool's tokens start in ``feed`` (after the pending token)
        self.order = order  # admission order: the youngest is preempted first
        self.reserved = 0  # KV cells the scheduler counts for it (unified KV)
        self.step_start = 0
        self.logit_index = -1  # its row in this step's logits, -1 when it samples nothing
        self.kept = 0  # prompt tokens its slot's cells held when it started (prompt reuse)
        self.tracker: Tracker | None = None  # its confidence aggregates, when the engine computes them

    @property
    def kv_need(self) -> int:
        """The most KV cells it can ever hold: prompt, tool output and generation budget."""
        return len(self.request.prompt) + self.injected + self.max_new

    def reuse_prompt(self, keep: int) -> int:
        """The slot's cells already hold the first ``keep`` prompt tokens: decode only the rest."""
        self.fed = self.pos = keep
        return keep

    @property
    def prompt_in_kv(self) -> int:
        """How many of its prompt tokens its cells hold (the step's feed undone by a rewind counts out)."""
        if self.state is SeqState.WAITING:
            return 0
        if self.state is SeqState.PREFILL and self.feed is self.request.prompt:
            return self.fed
        return len(self.request.prompt) if self.state is not SeqState.PREFILL else self.pos

    def copy_prompt(self) -> int:
        """Its prompt's KV was copied from a sibling: only the last prompt token is left to decode,
        so it gets logits of its own. Returns the prompt tokens it did not decode."""
        n_prompt = len(self.request.prompt)
        self.feed = [self.request.prompt[-1]]
        self.fed = 0
        self.pos = n_prompt - 1
        self.state = SeqState.PREFILL
        return n_prompt - 1

    def take(self, budget: int) -> int:
        """Put up to ``budget`` of its pending tokens in this step; returns how many."""
        self.step_start = self.fed
        self.logit_index = -1
        if self.state is SeqState.WAITING or self.state is SeqState.TOOL:
            return 0
        take = min(len(self.feed) - self.fed, budget)
        if take > 0:
            self.fed += take
            self.pos += take
        return max(take, 0)

    @property
    def wants_logits(self) -> bool:
        """Everything it had to decode is in this step: it samples a token afterwards."""
        return self.fed == len(self.feed) and self.fed > self.step_start

    def rewind(self) -> None:
        """Undo this step's bookkeeping after a decode that left the KV cache unchanged."""
        taken = self.fed - self.step_start
        self.fed -= taken
        self.pos -= taken
        self.logit_index = -1

    def accept(self, token: int, piece: bytes, *, eog: bool, stops: StopMatcher) -> str | None:
        """Take a sampled token. Returns why the sequence ends, or None when it goes on
        (decoding the token next step, or paused on a tool call: state TOOL)."""
        self.state = SeqState.DECODE
        self.generated.append(token)
        text = self.text
        tool = self.request.tool
        if eog:
            # A format whose tool calls end on an end-of-generation token (gpt-oss's <|call|>) pauses here.
            if tool is None or len(self.generated) >= self.max_new:
                return FINISH_EOS
            text += piece
            if not tool.wants_call(text, piece, token, room=self.max_new - len(self.generated), eog=True):
                if piece:
                    del text[-len(piece):]  # the ending token is never written
                return FINISH_EOS
            self._pause(token, tool)
            return None
        text += piece
        if stops and piece:
            cut = stops.find(text, len(piece))
            if cut >= 0:
                del text[cut:]
                return FINISH_STOP
        if len(self.generated) >= self.max_new:
            return FINISH_LENGTH
        threshold = self.request.stop_below
        if threshold is not None and self.tracker is not None:
            group = self.tracker.group_confidence
            if group is not None and group < threshold:
                return FINISH_LOW_CONFIDENCE
        self.feed = [token]
        self.fed = 0
        if tool is not None and tool.wants_call(text, piece, token, room=self.max_new - len(self.generated),
                                                eog=False):
            self._pause(token, tool)
        return None

    def _pause(self, token: int, tool) -> None:
        """Wait for ``tool`` with the KV kept; ``token`` is decoded with the tool's reply."""
        self.feed = [token]
        self.fed = 0
        self.state = SeqState.TOOL
        tool.start(bytes(self.text).decode("utf-8", "replace"))

    def inject(self, tokens: list[int], piece: Callable[..., bytes], *, n_ctx_seq: int, whole: bool = False
               ) -> int | None:
        """Queue a tool's output after the pending token; returns the tokens queued, or None when
        the context has no room left (the caller ends the sequence). The output is cut to the room,
        unless ``whole``: a reply with framing (harmony's message, a closed thinking) that does not fit
        whole is not queued at all (None)."""
        room = n_ctx_seq - self.pos - 2  # the pending token and one more to sample
        if room < 1 or (whole and len(tokens) > room):
            return None
        tokens = tokens[:room]
        pending = list(self.feed[self.fed:])
        self.inject_from = len(pending)
        self.feed = pending + tokens
        self.fed = 0
        special = self.request.render_special
        self.text += b"".join(piece(t, True) if special else piece(t) for t in tokens)
        self.injected += len(tokens)
        # The injected tokens use context the generation budget had counted on.
        self.max_new = min(self.max_new, len(self.generated) + n_ctx_seq - self.pos - len(self.feed))
        self.state = SeqState.INJECT
        return len(tokens)

    @property
    def injected_in_step(self) -> int:
        """Tool output tokens this step decodes (the pending token that closed the call is not one)."""
        return max(0, self.fed - max(self.step_start, self.inject_from))

    def completion(self, reason: str) -> Completion:
        return Completion(request=self.request, text=bytes(self.text).decode("utf-8", "replace"),
                          tokens=self.generated, finish_reason=reason,
                          confidence=None if self.tracker is None else self.tracker.result())
