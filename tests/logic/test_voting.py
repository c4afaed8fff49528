from __future__ import annotations

import itertools

import pytest
from fakes import conf

from aimo_gguf.errors import AimoError
from aimo_gguf.solving.voting import (
    VOTE_MODES,
    Tally,
    Vote,
    every_mode,
    kept,
    max_vote_weight,
    pick,
    vote_weight,
)


def tally_of(n_samples: int, votes: list[tuple[int, int | None]]) -> Tally:
    tally = Tally.new(n_samples)
    for index, answer in votes:
        tally.add(index, answer)
    return tally


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([], None),
        ([None, None, None], None),
        ([5], 5),
        ([1, 2, 2], 2),
        ([3, 3, 1, 1, 1], 1),
        ([None, 4, None, 4, 9], 4),
        # Ties: the answer first voted for by the lowest sample index wins.
        ([1, 2], 1),
        ([2, 1], 2),
        ([7, 8, 8, 7], 7),
        ([None, 9, 3, 3, 9], 9),
        ([0, 0, 5, 5, 6, 6, 6], 6),
    ],
)
def test_the_tally_s_winner(answers: list[int | None], expected: int | None) -> None:
    assert tally_of(len(answers), list(enumerate(answers))).winner() == expected


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_tie_break_ignores_completion_order(order: tuple[int, ...]) -> None:
    answers = [11, 22, 22, 11]
    tally = tally_of(4, [(i, answers[i]) for i in order])
    assert tally.winner() == 11
    assert tally.first_sample == {11: 0, 22: 1}


def test_counters() -> None:
    tally = tally_of(5, [(3, 7), (0, None), (1, 7), (4, 2)])
    assert tally.counts == {7: 2, 2: 1}
    assert tally.first_sample == {7: 1, 2: 4}
    assert (tally.finished, tally.valid, tally.remaining) == (4, 3, 1)


def test_empty_tally() -> None:
    tally = Tally.new(3)
    assert tally.winner() is None
    assert not tally.decided()
    assert not tally.has_majority()
    assert tally.remaining == 3


@pytest.mark.parametrize(
    ("n_samples", "votes", "expected"),
    [
        # Leader 3, runner-up 0, 1 left: unreachable.
        (4, [(0, 5), (1, 5), (2, 5)], True),
        # Leader 3, runner-up 1, 1 left: 3 > 1 + 1.
        (5, [(0, 5), (1, 5), (2, 5), (3, 6)], True),
        # Leader 2, runner-up 0, 2 left: the other answer could tie.
        (4, [(0, 5), (1, 5)], False),
        # Leader 2, runner-up 1, 1 left: runner-up could tie (and win the tie-break).
        (4, [(1, 5), (2, 5), (0, 6)], False),
        # Leader 1, runner-up 1, 2 left: could be overtaken.
        (4, [(0, 5), (1, 6)], False),
        # Leader 3 of 8 with 5 left: an unseen answer could overtake.
        (8, [(0, 1), (1, 1), (2, 1)], False),
        # Leader 5 of 8 with 3 left: 5 > 0 + 3.
        (8, [(i, 1) for i in range(5)], True),
        # Nothing left: decided whatever the votes.
        (2, [(0, 1), (1, 2)], True),
        (2, [(0, None), (1, None)], True),
        # No valid votes yet and samples left.
        (3, [(0, None)], False),
    ],
)
def test_decided(n_samples: int, votes: list[tuple[int, int | None]], expected: bool) -> None:
    assert tally_of(n_samples, votes).decided() is expected


@pytest.mark.parametrize(
    ("n_samples", "votes", "expected"),
    [
        (4, [(0, 5), (1, 5), (2, 6)], True),  # 2 of 3 finished
        (4, [(0, 5), (1, 6)], False),  # 1 of 2 is not strict
        (4, [(0, 5), (1, 5), (2, 6), (3, 6)], False),  # 2 of 4 is not strict
        (4, [(0, 5), (1, None), (2, None)], False),  # invalid samples count as finished
        (3, [(0, None), (1, None)], False),
        (1, [(0, 9)], True),
    ],
)
def test_has_majority(n_samples: int, votes: list[tuple[int, int | None]], expected: bool) -> None:
    assert tally_of(n_samples, votes).has_majority() is expected


@pytest.mark.parametrize("answers", [list(p) for n in range(1, 6) for p in itertools.product([None, 1, 2], repeat=n)])
def test_has_majority_of_any_answer_is_a_strict_majority_of_the_finished_samples(answers: list[int | None]) -> None:
    """The one majority rule: the solver asks it of the answer it submits, which --vote may pick by weight."""
    tally = tally_of(len(answers), list(enumerate(answers)))
    for answer in (1, 2, 3):
        assert tally.has_majority(answer) is (2 * answers.count(answer) > len(answers))
    assert tally.has_majority() is tally.has_majority(tally.winner())


def test_default_constructor_matches_new() -> None:
    assert Tally(3) == Tally.new(3)
    assert Tally(3).counts is not Tally(3).counts


@pytest.mark.parametrize("index", [-1, 3])
def test_add_rejects_out_of_range_index(index: int) -> None:
    with pytest.raises(ValueError) as error:
        Tally.new(3).add(index, 1)
    assert not isinstance(error.value, AimoError)  # a programming error, not a user's


def test_add_rejects_duplicate_index() -> None:
    tally = tally_of(3, [(1, 4)])
    with pytest.raises(ValueError, match="already added"):
        tally.add(1, 4)
    assert tally.counts == {4: 1}
    assert tally.finished == 1


def test_negative_sample_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        Tally.new(-1)


# --- confidence-weighted modes (aimo_gguf.solving.voting.pick) ----------------------------------------------------


def votes_of(*entries) -> list[Vote]:
    """(answer, mean entropy, lowest group confidence[, tail entropy]) per sample, in sample order."""
    out = []
    for i, e in enumerate(entries):
        answer, entropy, group, *tail = e
        out.append(Vote(i, answer, conf(entropy, group=group, tail=tail[0] if tail else None)))
    return out


def test_each_mode_weighs_what_it_says():
    c = conf(0.5, group=3.0, tail=0.25)
    assert vote_weight("majority", c) == 1.0
    assert vote_weight("entropy", c) == pytest.approx(2.0)
    assert vote_weight("tail", c) == pytest.approx(4.0)
    assert vote_weight("deepconf", c) == pytest.approx(3.0)
    assert vote_weight("entropy", conf(0.0), floor=0.1) == pytest.approx(10.0)  # the floor bounds the weight
    assert all(vote_weight(mode, None) == 1.0 for mode in VOTE_MODES)  # no confidence: a plain vote
    with pytest.raises(ValueError):
        vote_weight("loudest", c)


def test_two_sure_samples_outvote_three_unsure_ones_but_not_under_majority():
    votes = votes_of((1, 2.0, 1.0), (1, 2.0, 1.0), (1, 2.0, 1.0), (2, 0.2, 9.0), (2, 0.2, 9.0))
    assert every_mode(votes) == {"majority": 1, "entropy": 2, "tail": 2, "deepconf": 2}


def test_tail_weighs_the_end_of_a_sample_not_its_mean():
    votes = votes_of((1, 0.1, 5.0, 3.0), (2, 3.0, 5.0, 0.1), (2, 3.0, 5.0, 0.2))
    assert pick(votes, "entropy") == 1 and pick(votes, "tail") == 2


def test_a_weighted_tie_goes_to_the_lowest_sample_index():
    votes = votes_of((None, 1.0, 1.0), (4, 1.0, 2.0), (3, 1.0, 2.0))
    assert pick(votes, "deepconf") == 4
    assert pick(votes_of((None, 1.0, 1.0)), "entropy") is None


def test_keep_top_keeps_the_most_confident_share_of_the_answered_samples():
    votes = votes_of((1, 1.0, 1.0), (1, 1.0, 1.5), (1, 1.0, 2.0), (2, 1.0, 8.0), (2, 1.0, 9.0), (None, 0, 99.0))
    assert [v.sample for v in kept(votes, "deepconf", 40)] == [4, 3]  # ceil(5 x 0.4) = 2 of the 5 answered
    assert pick(votes, "majority") == 1
    assert pick(votes, "majority", keep_top=40) == 2  # DeepConf-style filtering, then a plain count
    assert len(kept(votes, "deepconf", 1)) == 1 and len(kept(votes, "deepconf", 100)) == 5


def test_the_largest_weight_bounds_early_stopping():
    assert max_vote_weight("majority", bonus=2.0) == 2.0
    assert max_vote_weight("entropy", 0.05) == pytest.approx(20.0)
    assert max_vote_weight("deepconf") == float("inf")
    # Leader 3 votes of weight 2 against 1 of weight 1, two samples to come that could weigh 20 each:
    tally = Tally(6, max_weight=max_vote_weight("entropy", 0.05))
    for i, (answer, w) in enumerate([(1, 2.0), (1, 2.0), (1, 2.0), (2, 1.0)]):
        tally.add(i, answer, w)
    assert not tally.decided()
    tally.add(4, 1, 2.0)
    assert not tally.decided()  # 8 vs 1 + 20: still open
    plain = Tally(6)
    for i, answer in enumerate([1, 1, 1, 2, 1]):
        plain.add(i, answer)
    assert plain.decided()  # 4 vs 1 + 1: majority would have stopped here
