"""One sequence's bookkeeping: stop strings, how a sampled token ends it or not, tool injection."""

from __future__ import annotations

import pytest

from aimo_gguf.engine.api import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Request
from aimo_gguf.engine.slot import SeqState, Slot, StopMatcher


@pytest.mark.parametrize(("stops", "text", "new", "cut"), [
    (["\nProblem:"], b"so 42.\nProblem:", 9, 6),
    (["\nProblem:"], b"so 42.\nProb", 4, -1),
    (["</s>", "##"], b"abc##d</s>", 4, 3),  # the earliest stop string wins
    (["ab"], b"xxab", 1, 2),  # a stop string split over two pieces
    ([""], b"anything", 3, -1),
])
def test_stop_matcher_finds_the_first_stop_string_near_the_end(stops, text, new, cut):
    matcher = StopMatcher(stops)
    assert matcher.find(bytearray(text), new) == cut


def test_an_empty_matcher_is_false():
    assert not StopMatcher([]) and not StopMatcher([""]) and StopMatcher(["x"])


def started(max_new=3, tool=None, prompt=(1, 2, 3)) -> Slot:
    seq = Slot(0)
    seq.start(Request(key="r", prompt=list(prompt), max_tokens=max_new, seed=0, tool=tool), max_new=max_new,
              order=0, wait_for_prefix=False)
    return seq


def test_a_token_continues_then_the_budget_ends_it():
    seq = started(max_new=2)
    assert seq.take(100) == 3 and seq.wants_logits
    assert seq.accept(5, b"a", eog=False, stops=StopMatcher([])) is None
    assert seq.feed == [5] and seq.fed == 0 and seq.state is SeqState.DECODE
    assert seq.accept(6, b"b", eog=False, stops=StopMatcher([])) == FINISH_LENGTH
    assert seq.completion(FINISH_LENGTH).text == "ab" and seq.generated == [5, 6]


def test_eog_and_stop_strings_end_it():
    seq = started(max_new=9)
    assert seq.accept(0, b"", eog=True, stops=StopMatcher([])) == FINISH_EOS
    seq = started(max_new=9)
    stops = StopMatcher(["!!"])
    assert seq.accept(1, b"hi!", eog=False, stops=stops) is None
    assert seq.accept(2, b"!x", eog=False, stops=stops) == FINISH_STOP
    assert bytes(seq.text) == b"hi"


def test_rewind_undoes_the_step():
    seq = started()
    seq.take(2)
    assert (seq.fed, seq.pos) == (2, 2) and not seq.wants_logits
    seq.rewind()
    assert (seq.fed, seq.pos, seq.logit_index) == (0, 0, -1)


class CallAtOnce:
    def __init__(self):
        self.started = None

    def wants_call(self, text, piece, token=-1, **_):
        return True

    def start(self, text):
        self.started = text

    def poll(self):
        return None

    def reset(self):
        pass


def test_a_tool_call_pauses_and_its_output_is_queued_after_the_pending_token():
    tool = CallAtOnce()
    seq = started(max_new=50, tool=tool)
    seq.take(100)
    assert seq.accept(9, b"```", eog=False, stops=StopMatcher([])) is None
    assert seq.state is SeqState.TOOL and tool.started == "```"
    assert seq.take(100) == 0  # paused: nothing to decode
    added = seq.inject([20, 21, 22], lambda t: b"o", n_ctx_seq=64)
    assert added == 3 and seq.feed == [9, 20, 21, 22] and seq.state is SeqState.INJECT
    assert bytes(seq.text) == b"```ooo" and seq.injected == 3
    assert seq.kv_need == 3 + 3 + 50
    seq.take(100)
    assert seq.injected_in_step == 3  # the pending token 9 is generation, not tool output


def test_injection_is_cut_to_the_context_and_takes_from_the_budget():
    seq = started(max_new=58, tool=CallAtOnce(), prompt=range(1, 5))  # 4 + 58 = 62 of 64
    seq.take(100)
    seq.accept(9, b"x", eog=False, stops=StopMatcher([]))
    added = seq.inject(list(range(100)), lambda t: b"", n_ctx_seq=64)
    assert added == 64 - 4 - 2  # room: the context less the position, the pending token and one to sample
    assert seq.kv_need == 64 and seq.max_new == 2  # the token generated, and one more


def test_no_room_for_an_injection():
    seq = started(max_new=2, tool=CallAtOnce(), prompt=range(1, 62))
    seq.take(100)
    seq.accept(9, b"x", eog=False, stops=StopMatcher([]))
    assert seq.inject([1, 2], lambda t: b"", n_ctx_seq=63) is None
