"""The scheduler without a model: admission, lazy pulling, refill, cancel, prompt sharing, KV accounting,
preemption, tool pauses. A small driver plays the engine: it decodes each plan (or fails it, as a full KV
cache does) and hands one token back per sequence that samples."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aimo_gguf.engine.api import (
    FINISH_CANCELLED,
    FINISH_EOS,
    FINISH_KV_FULL,
    FINISH_LENGTH,
    FINISH_STOP,
    FINISH_TOO_LONG,
    EngineStats,
    Request,
)
from aimo_gguf.engine.scheduler import Scheduler, StepPlan, common_prefix
from aimo_gguf.engine.slot import SeqState, StopMatcher

EOG = 0  # the driver's end-of-generation token


def request(key, n_prompt=4, max_tokens=3, *, prompt=None, prefix_key=None, tool=None) -> Request:
    return Request(key=key, prompt=prompt if prompt is not None else list(range(1, n_prompt + 1)),
                   max_tokens=max_tokens, seed=0, prefix_key=prefix_key, tool=tool)


def scheduler(requests, *, n_slots=2, n_ctx_seq=64, n_ctx_total=None, kv_unified=False, share_prompts=False,
              token_budget=512, stops=(), max_preemptions=3, pulled=None, slot_cache=None, windowed=False
              ) -> Scheduler:
    def source():
        for r in requests:
            if pulled is not None:
                pulled.append(r.key)
            yield r

    return Scheduler(source(), n_slots=n_slots, n_ctx_seq=n_ctx_seq,
                     n_ctx_total=n_ctx_total or n_ctx_seq * n_slots, kv_unified=kv_unified,
                     share_prompts=share_prompts, token_budget=token_budget, stats=EngineStats(),
                     tokenize=lambda text: [ord(c) for c in text], piece=lambda t: bytes([t % 256]),
                     stops=StopMatcher(stops), max_preemptions=max_preemptions, slot_cache=slot_cache,
                     windowed=windowed)


class Step:
    """What one plan held, copied when it was made (sequences are slots, reused by later requests)."""

    def __init__(self, plan: StepPlan) -> None:
        self.admitted = [s.request.key for s in plan.admitted]
        self.batch = [s.request.key for s in plan.batch]
        self.taken = [s.fed - s.step_start for s in plan.batch]
        self.copies = list(plan.copies)
        self.trims = list(plan.trims)
        self.n_tokens = plan.n_tokens
        self.waiting_on_tools = plan.waiting_on_tools


class Driver:
    """Runs a scheduler to the end the way the engine does, recording what each step did."""

    def __init__(self, sched: Scheduler, *, decode: Callable[[StepPlan], int] = lambda plan: 0,
                 token: Callable[[object], int] = lambda seq: 7, on_step: Callable[[int], None] | None = None):
        self.sched, self.decode, self.token, self.on_step = sched, decode, token, on_step
        self.completions = []
        self.plans: list[Step] = []
        self.released: list[int] = []
        self.steps = 0

    def run(self, max_steps: int = 500):
        sched = self.sched
        while self.steps < max_steps:
            plan = sched.schedule()
            self.plans.append(Step(plan))
            self.released += [s.seq_id for s in sched.take_released()]
            self.completions += sched.take_finished()
            if plan.done:
                return self.completions
            self.steps += 1
            if plan.n_tokens:
                if self.decode(plan) == 1:
                    sched.preempt()
                else:
                    sched.decoded(plan)
                    for seq in plan.sampling:
                        token = self.token(seq)
                        sched.accept(seq, token, bytes([token % 256]), eog=token == EOG)
                self.released += [s.seq_id for s in sched.take_released()]
                self.completions += sched.take_finished()
            if self.on_step is not None:
                self.on_step(self.steps)
        raise AssertionError(f"the scheduler did not finish within {max_steps} steps")

    def reasons(self):
        return {c.request.key: c.finish_reason for c in self.completions}


# --- admission, lazy pulling, refill -----------------------------------------------------------------


def test_admits_up_to_the_slots_and_pulls_lazily():
    pulled = []
    sched = scheduler([request(i) for i in range(5)], n_slots=2, pulled=pulled)
    plan = sched.schedule()
    assert [s.request.key for s in plan.admitted] == [0, 1]
    assert pulled == [0, 1]  # nothing pulled beyond the free slots
    assert plan.n_tokens == 8 and [s.logit_index for s in plan.batch] == [3, 7]


def test_a_finished_sequence_frees_its_slot_for_the_next_request_at_the_next_step():
    sched = scheduler([request(0, max_tokens=1), request(1, max_tokens=5), request(2, max_tokens=1)], n_slots=2)
    driver = Driver(sched)
    driver.run()
    admitted = [p.admitted for p in driver.plans]
    assert admitted[0] == [0, 1] and admitted[1] == [2]  # request 0 ended at step 1; 2 took its slot
    assert [c.request.key for c in driver.completions] == [0, 2, 1]  # finishing order
    assert all(len(c.tokens) == c.request.max_tokens for c in driver.completions)
    assert driver.reasons() == {0: FINISH_LENGTH, 1: FINISH_LENGTH, 2: FINISH_LENGTH}


def test_eos_and_stop_strings_end_a_sequence():
    tokens = iter([7, EOG, ord("a"), ord("b"), ord("!"), 9, 9])
    sched = scheduler([request("eos", max_tokens=5), request("stop", max_tokens=9)], n_slots=1, stops=["b!"])
    driver = Driver(sched, token=lambda seq: next(tokens))
    driver.run()
    done = {c.request.key: c for c in driver.completions}
    assert done["eos"].finish_reason == FINISH_EOS and done["eos"].tokens == [7, EOG]
    assert done["stop"].finish_reason == FINISH_STOP and done["stop"].text == "a"  # the stop string is cut


def test_prompts_are_chunked_to_the_token_budget():
    sched = scheduler([request(0, n_prompt=10), request(1, n_prompt=10)], n_slots=2, token_budget=6)
    plan = sched.schedule()
    assert plan.n_tokens == 6 and [s.request.key for s in plan.batch] == [0]
    assert plan.sampling == []  # no sequence has all its prompt in this step
    sched.decoded(plan)
    plan = sched.schedule()
    assert plan.n_tokens == 6 and [s.fed - s.step_start for s in plan.batch] == [4, 2]
    assert [s.request.key for s in plan.sampling] == [0]


def test_the_batch_is_in_slot_order_whatever_order_the_slots_were_refilled_in():
    # llama.cpp decodes a batch of one-stream-per-sequence KV as one ubatch only when its sequences
    # come in stream order; out of order it splits it (measured: a step at 16 took twice as long).
    lengths = {0: 9, 1: 2, 2: 6, 3: 1, 4: 5, 5: 7, 6: 4, 7: 3, 8: 8, 9: 6}
    sched = scheduler([request(k, n_prompt=3, max_tokens=n) for k, n in lengths.items()], n_slots=4)
    real = sched.schedule

    def schedule():  # checked as the engine would see the plan
        plan = real()
        ids = [s.seq_id for s in plan.batch]
        assert ids == sorted(ids)
        rows = 0
        for seq in plan.batch:  # a sampling sequence's logits row is its last token's place in the batch
            rows += seq.fed - seq.step_start
            assert seq.logit_index == (rows - 1 if seq.wants_logits else -1)
        return plan

    sched.schedule = schedule
    driver = Driver(sched)
    driver.run()
    assert all(len(c.tokens) == lengths[c.request.key] for c in driver.completions)
    refilled = [p.admitted for p in driver.plans[1:] if p.admitted]
    assert len(refilled) >= 3  # slots were refilled as sequences ended out of order


def test_a_new_request_takes_the_lowest_free_slot():
    sched = scheduler([request(0, max_tokens=5), request(1, max_tokens=1), request(2, max_tokens=1),
                       request(3, max_tokens=5), request(4, max_tokens=5)], n_slots=4)
    plan = sched.schedule()
    assert [s.seq_id for s in plan.admitted] == [0, 1, 2, 3]
    sched.decoded(plan)
    for seq in reversed(plan.sampling):  # 2 then 1 end: slot 2 is freed first
        sched.accept(seq, 7, b"x", eog=False)
    plan = sched.schedule()
    assert [(s.request.key, s.seq_id) for s in plan.admitted] == [(4, 1)]  # slot 1, not 2: no gap at 1


# --- cancel and too long ---------------------------------------------------------------------------------


def test_a_cancelled_request_ends_at_the_next_step_and_one_never_started_never_runs():
    first, queued = request("run", max_tokens=50), request("queued", max_tokens=50)
    queued.cancelled = True
    sched = scheduler([first, queued, request("after", max_tokens=1)], n_slots=1)

    def on_step(step):
        if step == 2:
            first.cancelled = True

    driver = Driver(sched, on_step=on_step)
    driver.run()
    assert driver.reasons() == {"run": FINISH_CANCELLED, "queued": FINISH_CANCELLED, "after": FINISH_LENGTH}
    cancelled = next(c for c in driver.completions if c.request.key == "run")
    assert len(cancelled.tokens) == 2  # two steps ran, the third never decoded it
    assert all("queued" not in p.admitted for p in driver.plans)


@pytest.mark.parametrize("n_prompt", [0, 64, 100])
def test_a_prompt_that_does_not_fit_one_sequence_is_too_long(n_prompt):
    sched = scheduler([request("long", n_prompt=n_prompt), request("ok")], n_slots=1, n_ctx_seq=64)
    driver = Driver(sched)
    driver.run()
    assert driver.reasons() == {"long": FINISH_TOO_LONG, "ok": FINISH_LENGTH}


def test_the_budget_is_clipped_to_the_context():
    sched = scheduler([request(0, n_prompt=60, max_tokens=100)], n_slots=1, n_ctx_seq=64)
    driver = Driver(sched)
    (done,) = driver.run()
    assert done.finish_reason == FINISH_LENGTH and len(done.tokens) == 4


# --- unified KV accounting ---------------------------------------------------------------------------


def test_with_unified_kv_a_request_waits_until_its_cells_are_free():
    # 100 cells for all: 10 + 40 each; the third must wait for a free slot and free cells
    reqs = [request(i, n_prompt=10, max_tokens=40) for i in range(3)]
    sched = scheduler(reqs, n_slots=3, n_ctx_seq=100, n_ctx_total=100, kv_unified=True)
    reserved = []
    driver = Driver(sched, on_step=lambda step: reserved.append(sched.reserved))
    driver.run()
    assert driver.plans[0].admitted == [0, 1] and reserved[0] == 100
    admitted_at = next(i for i, p in enumerate(driver.plans) if 2 in p.admitted)
    assert admitted_at == 40  # the step after 0 and 1 sampled their 40th token, not before
    assert sorted(driver.reasons()) == [0, 1, 2] and sched.reserved == 0


class Tool:
    """A tool hook that calls at the first piece, and answers at once with ``output``."""

    def __init__(self, output: str, calls: int = 1) -> None:
        self.output, self.calls, self.started, self.resets = output, calls, 0, 0

    def wants_call(self, text, piece, token=-1, **_):
        return self.started < self.calls

    def start(self, text):
        self.started += 1

    def poll(self):
        return self.output

    def reset(self):
        self.resets += 1
        self.started = 0


def test_injected_tokens_are_reserved_only_within_the_context():
    # The budget (200) is clipped to the context (64 - 4 = 60): the sequence can never hold more than
    # 64 cells, whatever a tool injects. Before the fix the reservation grew past the context.
    tool = Tool("x" * 20)
    sched = scheduler([request("tir", n_prompt=4, max_tokens=200, tool=tool), request("next", max_tokens=3)],
                      n_slots=2, n_ctx_seq=64, n_ctx_total=64, kv_unified=True)
    driver = Driver(sched)
    seen = []

    def watch(step):
        seen.append(sched.reserved)
        assert all(s.kv_need <= 64 for s in sched.running)

    driver.on_step = watch
    driver.run()
    assert max(seen) <= 64
    done = {c.request.key: c for c in driver.completions}
    assert done["tir"].finish_reason == FINISH_LENGTH
    assert 4 + 20 + len(done["tir"].tokens) <= 64  # the tool output came out of the generation budget
    assert sched.stats.injected_tokens == 20 and sched.stats.tool_pauses == 1


def test_injected_tokens_grow_the_reservation_when_the_budget_has_room():
    tool = Tool("x" * 5)
    sched = scheduler([request("tir", n_prompt=4, max_tokens=10, tool=tool)], n_slots=1, n_ctx_seq=64,
                      kv_unified=True)
    driver = Driver(sched)
    needs = []
    driver.on_step = lambda step: needs.append(sched.reserved)
    driver.run()
    assert needs[0] == 14 and max(needs) == 19  # prompt + budget, then + the 5 injected tokens


# --- prompt sharing ------------------------------------------------------------------------------------


def test_siblings_wait_for_the_prompt_then_copy_it():
    prompt = list(range(1, 9))
    reqs = [request((0, j), prompt=prompt, prefix_key=0, max_tokens=2) for j in range(3)]
    sched = scheduler(reqs, n_slots=3, share_prompts=True)
    plan = sched.schedule()
    assert [s.state for s in sched.running] == [SeqState.PREFILL, SeqState.WAITING, SeqState.WAITING]
    assert plan.n_tokens == 8 and plan.copies == []
    sched.decoded(plan)
    for seq in plan.sampling:
        sched.accept(seq, 7, b"x", eog=False)
    plan = sched.schedule()
    donor = sched.running[0].seq_id
    assert plan.copies == [(donor, 1, 7), (donor, 2, 7)]  # every prompt cell but the last
    assert [s.fed - s.step_start for s in plan.batch] == [1, 1, 1]
    assert sched.stats.shared_prompt_tokens == 14


def test_a_sibling_copies_only_from_a_donor_whose_prompt_is_in_the_cache():
    prompt = list(range(1, 11))
    reqs = [request((0, j), prompt=prompt, prefix_key=0, max_tokens=2) for j in range(2)]
    sched = scheduler(reqs, n_slots=2, share_prompts=True, token_budget=4)
    for _ in range(2):  # the donor decodes its prompt 4 tokens a step: 8 of 10 after two steps
        plan = sched.schedule()
        assert plan.copies == []
        sched.decoded(plan)
    plan = sched.schedule()  # 8 >= 10 - 1 would be wrong: still waiting at 8
    assert plan.copies == [] and sched.running[1].state is SeqState.WAITING
    sched.decoded(plan)
    for seq in plan.sampling:
        sched.accept(seq, 7, b"x", eog=False)
    assert sched.schedule().copies == [(0, 1, 9)]


@pytest.mark.parametrize("windowed", [False, True])
def test_with_sliding_window_layers_a_late_sibling_copies_only_from_a_donor_still_at_its_prompt(windowed):
    # One slot frees up late: the third sample of the problem arrives when the first two have generated.
    prompt = list(range(1, 9))
    reqs = [request("short", max_tokens=2)] + [request(("p", j), prompt=prompt, prefix_key="p", max_tokens=6)
                                                for j in range(2)]
    sched = scheduler(reqs, n_slots=2, share_prompts=True, windowed=windowed)
    driver = Driver(sched)
    driver.run()
    copies = [c for p in driver.plans for c in p.copies]
    if windowed:  # the donor had decoded past its prompt: its window no longer holds the prompt's end
        assert copies == [] and sched.stats.prompt_tokens == 4 + 8 + 8
    else:
        assert len(copies) == 1 and sched.stats.prompt_tokens == 4 + 8 + 1
    assert all(len(c.tokens) == c.request.max_tokens for c in driver.completions)


def test_different_prompts_under_one_prefix_key_are_not_shared():
    reqs = [request("a", prompt=[1, 2, 3], prefix_key=0), request("b", prompt=[4, 5, 6], prefix_key=0)]
    sched = scheduler(reqs, n_slots=2, share_prompts=True)
    driver = Driver(sched)
    driver.run()
    assert all(p.copies == [] for p in driver.plans)
    assert sched.stats.prompt_tokens == 6


# --- prompt reuse (a slot keeps its prompt's cells) ----------------------------------------------------


@pytest.mark.parametrize(("a", "b", "n"), [
    ([], [1], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 2, 3], [1, 9, 3], 1),
    ([5], [6], 0), (list(range(1000)), list(range(999)) + [0], 999), ([1, 2], (1, 2, 3), 2),
])
def test_common_prefix(a, b, n):
    assert common_prefix(a, b) == n


def test_without_a_slot_cache_nothing_is_kept_or_trimmed():
    sched = scheduler([request(i, prompt=[1, 2, 3, 4]) for i in range(3)], n_slots=1)
    driver = Driver(sched)
    driver.run()
    assert not sched.keeps_kv and all(p.trims == [] for p in driver.plans)
    assert sched.stats.prompt_tokens == 12 and sched.stats.shared_prompt_tokens == 0


def test_a_request_takes_the_slot_holding_the_longest_prefix_of_its_prompt_and_decodes_the_rest():
    system = [9, 9, 9, 9, 9, 9]
    cache = [[1, 2, 3], system + [1, 2], []]  # slot 1 holds the system part and 2 tokens of another problem
    sched = scheduler([request("p", prompt=system + [5, 6, 7], max_tokens=1)], n_slots=3, slot_cache=cache)
    plan = sched.schedule()
    (seq,) = plan.admitted
    assert seq.seq_id == 1 and plan.trims == [(1, 6)]  # its cells from 6 on are dropped
    assert plan.n_tokens == 3 and seq.pos == 9  # only [5, 6, 7] decoded, at positions 6..8
    assert sched.stats.shared_prompt_tokens == 6
    sched.decoded(plan)
    assert sched.stats.prompt_tokens == 3
    sched.accept(seq, 7, b"x", eog=False)  # its one token: done
    sched.schedule()
    assert cache[1] == system + [5, 6, 7]  # what its cells hold now, for the next request


def test_the_same_prompt_again_decodes_only_its_last_token_for_logits():
    prompt = [4, 5, 6, 7, 8]
    sched = scheduler([request(i, prompt=prompt, max_tokens=2) for i in range(3)], n_slots=1, slot_cache=[[]])
    driver = Driver(sched)
    driver.run()
    assert driver.plans[0].trims == [(0, 0)] and driver.plans[0].taken == [5]
    later = [p for p in driver.plans if p.admitted][1:]
    assert [p.trims for p in later] == [[(0, 4)], [(0, 4)]] and [p.taken[0] for p in later] == [1, 1]
    assert sched.stats.prompt_tokens == 5 + 1 + 1 and sched.stats.shared_prompt_tokens == 8
    assert all(len(c.tokens) == 2 for c in driver.completions)


def test_a_free_slot_with_nothing_in_common_is_cleared_for_the_new_request():
    cache = [[7, 7, 7]]
    sched = scheduler([request("p", prompt=[1, 2, 3], max_tokens=1)], n_slots=1, slot_cache=cache)
    plan = sched.schedule()
    assert plan.trims == [(0, 0)] and plan.n_tokens == 3 and cache == [[]]


def test_a_preempted_sequence_leaves_only_the_prompt_cells_it_had_decoded():
    cache = [[], []]
    failures = iter([0, 1])  # the second step (the rest of 1's prompt) finds no KV slot
    reqs = [request(0, n_prompt=4, max_tokens=8), request(1, prompt=list(range(20, 30)), max_tokens=8)]
    sched = scheduler(reqs, n_slots=2, token_budget=8, slot_cache=cache)
    driver = Driver(sched, decode=lambda plan: next(failures, 0))
    snapshots = []
    driver.on_step = lambda step: snapshots.append([list(c) for c in cache])
    driver.run()
    # step 1: 0's prompt (4) + 4 of 1's; step 2 fails and 1, the youngest, goes back holding 4 prompt cells
    assert snapshots[1][1] == list(range(20, 24))
    readmitted = next(p for p in driver.plans[2:] if 1 in p.admitted)
    assert readmitted.trims == [(1, 4)]  # it takes its own slot back and decodes only the other 6
    assert driver.reasons() == {0: FINISH_LENGTH, 1: FINISH_LENGTH}


def test_close_leaves_no_prompt_cached_in_a_slot_stopped_mid_step():
    cache = [[]]
    sched = scheduler([request(0, prompt=[1, 2, 3])], n_slots=1, slot_cache=cache)
    sched.schedule()  # the prompt is in the batch, its decode never reported
    sched.close()
    assert cache == [[]]


def test_a_sibling_whose_slot_holds_part_of_the_prompt_still_copies_it_whole():
    prompt = list(range(1, 9))
    cache = [[], prompt[:4]]
    reqs = [request((0, j), prompt=prompt, prefix_key=0, max_tokens=2) for j in range(2)]
    sched = scheduler(reqs, n_slots=2, share_prompts=True, slot_cache=cache)
    plan = sched.schedule()
    donor, sibling = plan.admitted
    assert donor.seq_id == 1 and plan.trims == [(1, 4), (0, 0)]  # the first takes the slot with 4 cells
    assert donor.state is SeqState.PREFILL and sibling.state is SeqState.WAITING
    assert plan.n_tokens == 4 and donor.pos == 8  # the donor decodes only the other 4
    sched.decoded(plan)
    for seq in plan.sampling:
        sched.accept(seq, 7, b"x", eog=False)
    assert sched.schedule().copies == [(1, 0, 7)]
    assert sched.stats.shared_prompt_tokens == 4 + 7  # kept cells and copied cells, each counted once


def test_a_sibling_whose_slot_holds_the_whole_prompt_does_not_wait():
    prompt = list(range(1, 9))
    reqs = [request((0, j), prompt=prompt, prefix_key=0, max_tokens=2) for j in range(2)]
    sched = scheduler(reqs, n_slots=2, share_prompts=True, slot_cache=[list(prompt), list(prompt)])
    plan = sched.schedule()
    assert [s.state for s in plan.admitted] == [SeqState.PREFILL, SeqState.PREFILL]
    assert plan.trims == [(0, 7), (1, 7)] and plan.n_tokens == 2 and plan.copies == []


# --- preemption ----------------------------------------------------------------------------------------


def test_a_failed_decode_preempts_the_youngest_and_admits_nothing_in_the_next_step():
    failures = iter([1])
    sched = scheduler([request(i, max_tokens=4) for i in range(3)], n_slots=2)
    driver = Driver(sched, decode=lambda plan: next(failures, 0))
    driver.run()
    assert sched.stats.kv_preemptions == 1
    # step 1: 0 and 1 admitted, the decode fails, 1 (the youngest) goes back to the queue;
    # step 2 admits nothing; step 3 admits 1 again, ahead of 2
    assert driver.plans[0].admitted == [0, 1]
    assert driver.plans[1].admitted == [] and driver.plans[1].batch == [0]
    assert driver.plans[2].admitted == [1]
    assert driver.reasons() == {0: FINISH_LENGTH, 1: FINISH_LENGTH, 2: FINISH_LENGTH}
    assert all(len(c.tokens) == 4 for c in driver.completions)  # the victim started over from its prompt


def test_a_victim_preempted_too_often_ends_as_kv_full():
    # The decode fails whenever request 1 is in it: it is preempted, re-admitted, preempted...
    sched = scheduler([request(0, max_tokens=30), request(1, max_tokens=30)], n_slots=2, max_preemptions=3)
    driver = Driver(sched, decode=lambda plan: 1 if any(s.request.key == 1 for s in plan.batch) else 0)
    driver.run(max_steps=100)
    assert driver.reasons() == {0: FINISH_LENGTH, 1: FINISH_KV_FULL}
    assert sched.stats.kv_preemptions == 3


def test_a_decode_that_always_fails_ends_every_sequence_as_kv_full_in_bounded_steps():
    sched = scheduler([request(i, max_tokens=5) for i in range(6)], n_slots=3, max_preemptions=2)
    steps = []
    driver = Driver(sched, decode=lambda plan: 1, on_step=steps.append)
    driver.run(max_steps=200)
    assert set(driver.reasons().values()) == {FINISH_KV_FULL} and len(driver.reasons()) == 6
    assert len(steps) == driver.steps < 60  # every step reported, none lost in a loop


def test_preemption_resets_the_victims_tool():
    tool = Tool("out", calls=1)
    failures = iter([0, 0, 1])
    sched = scheduler([request("first", max_tokens=5), request("tir", max_tokens=5, tool=tool)], n_slots=2)
    driver = Driver(sched, decode=lambda plan: next(failures, 0))
    driver.run()
    assert tool.resets == 1 and driver.reasons()["tir"] == FINISH_LENGTH


# --- tool pauses ---------------------------------------------------------------------------------------


class SlowTool(Tool):
    def __init__(self, ready_after: int) -> None:
        super().__init__("ok")
        self.polls, self.ready_after = 0, ready_after

    def poll(self):
        self.polls += 1
        return self.output if self.polls > self.ready_after else None


def test_a_paused_sequence_decodes_nothing_until_its_output_is_there():
    tool = SlowTool(ready_after=3)
    sched = scheduler([request("tir", max_tokens=4, tool=tool), request("plain", max_tokens=6)], n_slots=2)
    driver = Driver(sched)
    driver.run()
    waiting = [p.waiting_on_tools for p in driver.plans]
    assert waiting[1:4] == [1, 1, 1] and waiting[4] == 0
    for plan in driver.plans[1:4]:
        assert plan.batch == ["plain"]
    tir = next(c for c in driver.completions if c.request.key == "tir")
    assert "ok" in tir.text and sched.stats.injected_tokens == 2


def test_a_tool_output_with_no_room_left_ends_the_sequence():
    tool = Tool("y" * 10)
    sched = scheduler([request("tir", n_prompt=61, max_tokens=10, tool=tool)], n_slots=1, n_ctx_seq=63)
    driver = Driver(sched)
    (done,) = driver.run()
    assert done.finish_reason == FINISH_LENGTH and sched.stats.injected_tokens == 0


def test_close_releases_every_running_sequence():
    sched = scheduler([request(i) for i in range(2)], n_slots=2)
    sched.schedule()
    assert sorted(s.seq_id for s in sched.close()) == [0, 1]
    assert sched.running == [] and len(sched.free) == 2 and sched.reserved == 0
