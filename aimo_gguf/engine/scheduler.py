"""The scheduler: which requests run, and what each step decodes. Plain Python, no model.

As in vLLM's v1 scheduler, scheduling is apart from execution: ``schedule()``
returns a ``StepPlan`` (what to put in this step's ``llama_batch``, which
prompt KV to copy, which sequences are new), the engine executes it, and the
step's outcome comes back through ``preempt()`` (the decode found no KV slot)
or ``accept()`` (one sampled token per sequence that asked for one). The
engine frees the C resources of the sequences ``take_released()`` hands it.

What it decides:

- Admission. A free slot takes the next request, pulled lazily from the
  caller's iterable (so the caller decides late what runs next). A request
  starts only if its prompt fits one sequence's context, and, with a unified
  KV cache, only if its prompt plus budget fits the cells not yet promised to
  the running sequences. A cancelled request ends at the next step.
- Prompt sharing. Requests with the same ``prefix_key`` and prompt (the samples
  of one problem) wait for a sibling to decode the prompt, then copy its KV
  cells and decode only the last prompt token.
- Prompt reuse. With ``slot_cache`` (one stream of KV per sequence), a finished
  sequence leaves its prompt's cells in its slot; a new request takes the free
  slot whose cached prompt shares the longest prefix with its own, keeps those
  cells and decodes only the rest (the chat template's system part, or the
  whole prompt of the problem's previous sample), as llama.cpp's own prompt
  cache does for one sequence.
- Tool calls. A sequence paused on a tool decodes nothing until its tool's
  output is there; that output is then decoded into it.
- Preemption. When a decode finds no KV slot, every sequence's step is undone
  and the youngest is put back at the head of the queue (started again from
  its prompt later); a request preempted more than ``max_preemptions`` times,
  or the only sequence left, ends as ``kv_full``. The step after a preemption
  admits nothing, so a victim is not re-admitted into the same shortage at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .api import (
    DEFAULT_MAX_PREEMPTIONS,
    FINISH_CANCELLED,
    FINISH_KV_FULL,
    FINISH_LENGTH,
    FINISH_TOO_LONG,
    Completion,
    EngineStats,
    Request,
)
from .slot import SeqState, Slot, StopMatcher


def common_prefix(a: list[int], b) -> int:
    """The length of the longest common prefix of two token lists (slices compared in C)."""
    b = b if isinstance(b, list) else list(b)
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # a[:lo] == b[:lo]
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(slots=True)
class StepPlan:
    """What one step does. The engine applies it in this order: free the released sequences'
    samplers (and their KV unless the scheduler keeps it: ``Scheduler.keeps_kv``), trim ``trims``,
    make samplers for ``admitted``, copy ``copies``, then decode ``batch``."""

    admitted: list[Slot] = field(default_factory=list)  # new this step: each needs a sampler chain
    trims: list[tuple[int, int]] = field(default_factory=list)  # (seq id, keep): drop its cells from keep on
    copies: list[tuple[int, int, int]] = field(default_factory=list)  # (donor seq id, seq id, keep): KV to copy
    batch: list[Slot] = field(default_factory=list)  # sequences with tokens in this step, in batch order
    n_tokens: int = 0  # tokens in this step's batch
    waiting_on_tools: int = 0  # sequences paused on a tool call
    done: bool = False  # nothing is running and nothing is left to pull: generation is over

    @property
    def sampling(self) -> list[Slot]:
        """The sequences that sample a token after this step's decode."""
        return [s for s in self.batch if s.logit_index >= 0]


class Scheduler:
    """Admission, queue, KV accounting, prompt sharing and preemption for one ``generate`` call."""

    def __init__(
        self,
        requests: Iterable[Request],
        *,
        n_slots: int,
        n_ctx_seq: int,
        n_ctx_total: int,
        kv_unified: bool,
        share_prompts: bool,
        token_budget: int,
        stats: EngineStats,
        tokenize: Callable[..., list[int]],  # (text) as plain text; (text, True) with special tokens parsed
        piece: Callable[..., bytes],  # (token); (token, True) renders a special token's text too
        stops: StopMatcher | None = None,
        max_preemptions: int = DEFAULT_MAX_PREEMPTIONS,
        slot_cache: list[list[int]] | None = None,
        windowed: bool = False,
    ) -> None:
        self._source: Iterator[Request] = iter(requests)
        self._exhausted = False
        self.queue: deque[Request] = deque()  # pulled but not running: preempted ones go first
        self.free: deque[Slot] = deque(Slot(i) for i in range(n_slots))
        self.running: list[Slot] = []
        self.n_ctx_seq = n_ctx_seq
        self.n_ctx_total = n_ctx_total
        self.kv_unified = kv_unified
        self.share_prompts = share_prompts
        self.token_budget = token_budget
        self.stats = stats
        self.tokenize = tokenize
        self.piece = piece
        self.stops = stops or StopMatcher(())
        self.max_preemptions = max_preemptions
        # Per slot, the prompt tokens whose cells its stream still holds (None: slots are cleared on release).
        self.slot_cache = slot_cache
        # Sliding-window layers drop cells behind the window as a sequence goes on: a donor's prompt is
        # whole only until it decodes its first generated token.
        self.windowed = windowed
        self.reserved = 0  # KV cells promised to running sequences (counted with a unified cache)
        self._admitted = 0
        self._preempted: dict[Request, int] = {}  # request -> times put back
        self._admit_paused = False  # the last step preempted: admit nothing in this one
        self._finished: list[Completion] = []
        self._released: list[Slot] = []

    # --- the step ---------------------------------------------------------------------------------------

    def schedule(self) -> StepPlan:
        """Plan the next step: cancel, admit, share prompts, poll tools, fill the batch."""
        plan = StepPlan()
        for seq in self.running[:]:
            if seq.request.cancelled:
                self._release(seq, FINISH_CANCELLED)
        if self._admit_paused:
            self._admit_paused = False
        else:
            self._admit(plan)
        if not self.running:
            plan.done = self._exhausted and not self.queue
            return plan
        for seq in self.running[:]:
            if seq.state is SeqState.WAITING:
                self._attach_prefix(seq, plan)
            elif seq.state is SeqState.TOOL:
                if not self._poll_tool(seq):
                    plan.waiting_on_tools += 1
        budget = self.token_budget
        n = 0
        for seq in self.running:  # the oldest first: a long prompt cannot starve running sequences
            take = seq.take(budget - n)
            if take:
                n += take
                plan.batch.append(seq)
        # In the batch, in slot order: with one KV stream per sequence, llama.cpp decodes a batch whose
        # sequences come out of stream order about twice as slowly (measured: 174 vs 89 ms a step at 16).
        plan.batch.sort(key=lambda s: s.seq_id)
        row = 0
        for seq in plan.batch:
            row += seq.fed - seq.step_start
            if seq.wants_logits:
                seq.logit_index = row - 1
        plan.n_tokens = n
        return plan

    def decoded(self, plan: StepPlan) -> None:
        """The step's decode succeeded: count what it decoded."""
        stats = self.stats
        stats.steps += 1
        stats.sequence_steps += len(plan.batch)
        for seq in plan.batch:
            if seq.state is SeqState.PREFILL:
                stats.prompt_tokens += seq.fed - seq.step_start
            elif seq.state is SeqState.INJECT:
                stats.injected_tokens += seq.injected_in_step

    def accept(self, seq: Slot, token: int, piece: bytes, *, eog: bool) -> None:
        """The token ``seq`` sampled after this step's decode."""
        self.stats.generated_tokens += 1
        reason = seq.accept(token, piece, eog=eog, stops=self.stops)
        if reason is not None:
            self._release(seq, reason)
        elif seq.state is SeqState.TOOL:
            self.stats.tool_pauses += 1

    def preempt(self) -> None:
        """The step's decode found no KV slot and changed nothing: undo the step and make room."""
        for seq in self.running:
            seq.rewind()
        self._admit_paused = True
        if len(self.running) == 1:
            self._release(self.running[0], FINISH_KV_FULL)
            return
        # The youngest sequence that holds cells: one still waiting for a shared prompt frees nothing.
        holders = [s for s in self.running if s.state is not SeqState.WAITING] or self.running
        victim = max(holders, key=lambda s: s.order)
        request = victim.request
        times = self._preempted.get(request, 0) + 1
        if times > self.max_preemptions:
            self._release(victim, FINISH_KV_FULL)
            return
        self._preempted[request] = times
        self.stats.kv_preemptions += 1
        if request.tool is not None:
            request.tool.reset()  # it starts again from its prompt
        self._release(victim, None)
        self.queue.appendleft(request)

    def take_finished(self) -> list[Completion]:
        """Completions since the last call, in finishing order."""
        done, self._finished = self._finished, []
        return done

    @property
    def keeps_kv(self) -> bool:
        """Released sequences keep their cells (prompt reuse): the engine frees only their samplers."""
        return self.slot_cache is not None

    def take_released(self) -> list[Slot]:
        """Sequences released since the last call: the engine frees their samplers (and clears their
        KV unless ``keeps_kv``)."""
        released, self._released = self._released, []
        return released

    def close(self) -> list[Slot]:
        """Generation stopped early (the caller closed it, Ctrl-C): every running sequence is released."""
        for seq in self.running[:]:
            # Stopped anywhere in a step: which of its cells hold what is not known, so the slot keeps none.
            self._release(seq, None, keep_prompt=False)
        return self.take_released()

    # --- parts ------------------------------------------------------------------------------------------

    def _admit(self, plan: StepPlan) -> None:
        """Fill free slots while the next request fits."""
        queue = self.queue
        while self.free and (queue or not self._exhausted):
            if queue:
                request = queue[0]
            else:
                request = next(self._source, None)
                if request is None:
                    self._exhausted = True
                    break
                queue.append(request)
            if request.cancelled:
                queue.popleft()
                self._end(request, FINISH_CANCELLED)
                continue
            n_prompt = len(request.prompt)
            if n_prompt == 0 or n_prompt >= self.n_ctx_seq:
                queue.popleft()
                self._end(request, FINISH_TOO_LONG)
                continue
            max_new = min(request.max_tokens, self.n_ctx_seq - n_prompt)
            need = n_prompt + max_new
            if self.kv_unified and self.running and self.reserved + need > self.n_ctx_total:
                break  # wait for cells to free up
            queue.popleft()
            seq, keep = self._take_slot(request.prompt)
            wait = self.share_prompts and request.prefix_key is not None and keep < n_prompt - 1
            seq.start(request, max_new=max_new, order=self._admitted, wait_for_prefix=wait)
            if self.slot_cache is not None:
                plan.trims.append((seq.seq_id, keep))
                seq.kept = keep
                if keep and not wait:  # a waiting one may copy a sibling's prompt instead
                    self.stats.shared_prompt_tokens += seq.reuse_prompt(keep)
            self._admitted += 1
            seq.reserved = need
            self.reserved += need
            self.running.append(seq)
            plan.admitted.append(seq)

    def _take_slot(self, prompt) -> tuple[Slot, int]:
        """A free slot for ``prompt`` and how many of its prompt tokens the slot's cells already hold."""
        # The lowest free slot, among those holding the longest prefix: running sequences stay packed at
        # the low slots, and llama.cpp splits a batch wherever its slots have a gap (one ubatch per run).
        if self.slot_cache is None:
            best, keep = min(self.free, key=lambda s: s.seq_id), 0
        else:
            best, keep = self.free[0], -1
            for seq in sorted(self.free, key=lambda s: s.seq_id):
                common = common_prefix(self.slot_cache[seq.seq_id], prompt)
                if common > keep:
                    best, keep = seq, common
        self.free.remove(best)
        if self.slot_cache is None:
            return best, 0
        self.slot_cache[best.seq_id] = []  # its cells are the new sequence's from here on
        return best, min(keep, len(prompt) - 1)  # the last prompt token is decoded again, for its logits

    def _attach_prefix(self, seq: Slot, plan: StepPlan) -> None:
        """Copy the prompt's KV from a sibling that decoded it, or decode it if no sibling will."""
        request = seq.request
        key, prompt = request.prefix_key, request.prompt
        n_prompt = len(prompt)
        donor = None
        prefilling = False
        for other in self.running:
            if other is seq or other.state is SeqState.WAITING or other.request.prefix_key != key:
                continue
            if other.state is SeqState.PREFILL and other.fed < n_prompt - 1:
                prefilling = True  # it will have the prompt soon: wait for it
                continue
            if self.windowed and other.pos > n_prompt:
                continue  # its windowed layers no longer hold the start of the prompt's last window
            if other.request.prompt is prompt or other.request.prompt == prompt:
                donor = other
                break
        if donor is not None:
            # A copy gives every cell of the donor, its generation too: keep the
            # prompt but its last token, which is decoded again for logits of its own.
            plan.copies.append((donor.seq_id, seq.seq_id, n_prompt - 1))
            self.stats.shared_prompt_tokens += seq.copy_prompt()
        elif not prefilling:
            seq.state = SeqState.PREFILL  # nobody to copy from: decode the prompt (but what its slot kept)
            if seq.kept:
                self.stats.shared_prompt_tokens += seq.reuse_prompt(seq.kept)

    def _poll_tool(self, seq: Slot) -> bool:
        """Feed a paused sequence its tool's output once it is there; False while it waits."""
        output = seq.request.tool.poll()
        if output is None:
            return False
        if isinstance(output, str):
            tokens = self.tokenize(output)
        else:  # (text, parse_special) parts: framing tokens special, the tool's output plain text
            tokens = [t for text, special in output for t in (self.tokenize(text, True) if special
                                                                else self.tokenize(text))]
        if seq.inject(tokens, self.piece, n_ctx_seq=self.n_ctx_seq, whole=not isinstance(output, str)) is None:
            self._release(seq, FINISH_LENGTH)
            return True
        # Its KV grows by the injection, within its context: the generation
        # budget shrank by as much once the context was the limit.
        need = seq.kv_need
        self.reserved += need - seq.reserved
        seq.reserved = need
        return True

    def _release(self, seq: Slot, reason: str | None, *, keep_prompt: bool = True) -> None:
        """Free ``seq``'s slot; with a reason it finished (a completion), without one it was put back."""
        self.running.remove(seq)
        self.reserved -= seq.reserved
        if self.slot_cache is not None:
            self.slot_cache[seq.seq_id] = list(seq.request.prompt[:seq.prompt_in_kv]) if keep_prompt else []
        if reason is not None:
            self._finished.append(seq.completion(reason))
            self._preempted.pop(seq.request, None)
        self._released.append(seq)
        self.free.append(seq)

    def _end(self, request: Request, reason: str) -> None:
        """A request that never ran ends."""
        self._preempted.pop(request, None)
        self._finished.append(Completion(request, "", [], reason))
