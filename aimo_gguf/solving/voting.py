"""Voting over one problem's sampled answers, usable while samples run.

Four modes (``--vote``), each a weight per sample from its confidence
aggregates (``aimo_gguf.engine.confidence``):

- ``majority``: every vote weighs 1;
- ``entropy``: ``1 / max(mean entropy, floor)``, the AIMO3 winners' weight (mean
  top-5 entropy of the sample's tokens: a sure sample weighs more);
- ``tail``: the same over the last ``tail_window`` tokens only, the tokens that
  lead to the answer (AIMO3's second place);
- ``deepconf``: the sample's lowest sliding-window group confidence (DeepConf,
  arXiv 2508.15260).

``keep_top`` (percent) keeps only the most confident samples before the vote
(DeepConf's filtering), ranked by the mode's own confidence (``majority`` and
``deepconf``: the lowest group confidence). A sample without confidence
aggregates weighs 1.

Tie-break rule: among answers with the most votes, the winner is the one
whose lowest voting sample index is smallest. Sample indices are fixed when
the samples are planned, so the result does not depend on the order in which
samples happen to finish.

``Tally.decided`` is conservative: it reports a decision only once the
remaining samples could not even *tie* the leader, since a tie might be
broken against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..engine.confidence import Confidence

VOTE_MODES = ("majority", "entropy", "tail", "deepconf")
DEFAULT_VOTE_FLOOR = 0.05  # nats: one near-certain sample must not outweigh many (1 / floor = 20 votes at most)


@dataclass(slots=True)
class Tally:
    """Votes of one problem's finished samples."""

    n_samples: int
    """Samples planned for this problem; valid sample indices are ``0..n_samples-1``."""
    counts: dict[int, int] = field(default_factory=dict)
    """Answer -> number of samples that voted for it."""
    first_sample: dict[int, int] = field(default_factory=dict)
    """Answer -> lowest sample index that voted for it (the tie-break key)."""
    max_weight: float = 1.0
    """The largest weight a vote can carry (see ``add``); 1.0: plain majority."""
    weights: dict[int, float] = field(default_factory=dict)
    """Answer -> summed weight of its votes; equals ``counts`` when every weight is 1."""
    finished: int = 0
    """Samples finished so far, with or without a valid answer."""
    valid: int = 0
    """Finished samples that produced a valid answer."""
    _seen: set[int] = field(default_factory=set, init=False, repr=False, compare=False)
    """Indices already added; a sample counted twice would skew the vote."""

    def __post_init__(self) -> None:
        if self.n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {self.n_samples}")

    @classmethod
    def new(cls, n_samples: int) -> Tally:
        """An empty tally for ``n_samples`` planned samples."""
        return cls(n_samples)

    def add(self, sample_index: int, answer: int | None, weight: float = 1.0) -> None:
        """Record that sample ``sample_index`` finished with ``answer`` (None: no valid answer),
        its vote weighing ``weight`` (at most ``max_weight``).

        A sample index out of range, or added twice, is a bug in the caller, not
        bad user input: ValueError, which no CLI turns into a friendly line.
        """
        if not 0 <= sample_index < self.n_samples:
            raise ValueError(f"sample index {sample_index} outside 0..{self.n_samples - 1}")
        if sample_index in self._seen:
            raise ValueError(f"sample {sample_index} was already added")
        self._seen.add(sample_index)
        self.finished += 1
        if answer is None:
            return
        self.valid += 1
        self.counts[answer] = self.counts.get(answer, 0) + 1
        self.weights[answer] = self.weights.get(answer, 0.0) + weight
        first = self.first_sample.get(answer)
        if first is None or sample_index < first:
            self.first_sample[answer] = sample_index

    @property
    def remaining(self) -> int:
        """Samples planned but not finished yet."""
        return self.n_samples - self.finished

    def winner(self) -> int | None:
        """The answer with the most vote weight (tie-break: lowest first sample index); None if no votes."""
        if not self.counts:
            return None
        # The answer sets are tiny (at most n_samples), so a scan beats
        # keeping a sorted structure up to date on every add.
        return max(self.weights, key=lambda a: (self.weights[a], -self.first_sample[a]))

    def decided(self) -> bool:
        """True once no remaining sample can change the winner."""
        if self.remaining == 0:
            return True
        leader = self.winner()
        if leader is None:
            return False
        runner_up = max((w for a, w in self.weights.items() if a != leader), default=0.0)
        return self.weights[leader] > runner_up + self.remaining * self.max_weight

    def has_majority(self, answer: int | None = None) -> bool:
        """True if ``answer`` (by default the tally's winner) holds a strict majority of the finished samples."""
        answer = self.winner() if answer is None else answer
        return answer is not None and 2 * self.counts.get(answer, 0) > self.finished


@dataclass(frozen=True, slots=True)
class Vote:
    """One finished sample's answer and what its vote weighs."""

    sample: int
    answer: int | None
    confidence: Confidence | None = None
    bonus: float = 1.0  # --tir-weight for a sample whose code all ran, else 1
    capped: bool = False  # it ended at the token limit (its answer is one it stated, see answers.extract_answer)


def vote_weight(mode: str, confidence: Confidence | None, floor: float = DEFAULT_VOTE_FLOOR) -> float:
    """What a sample's vote weighs under ``mode`` (before its bonus)."""
    if mode == "majority" or confidence is None:
        return 1.0
    if mode == "entropy":
        return 1.0 / max(confidence.mean_entropy, floor)
    if mode == "tail":
        return 1.0 / max(confidence.tail_entropy, floor)
    if mode == "deepconf":
        return max(confidence.lowest_group_confidence, 0.0)
    raise ValueError(f"unknown vote mode {mode!r}")


def max_vote_weight(mode: str, floor: float = DEFAULT_VOTE_FLOOR, bonus: float = 1.0) -> float:
    """The largest weight one vote can carry under ``mode``: what early stopping must assume of a
    sample still running (``deepconf``'s confidence has no bound: it waits for every sample)."""
    if mode == "majority":
        return bonus
    if mode in ("entropy", "tail"):
        return bonus / floor
    return math.inf


def rank_score(mode: str, confidence: Confidence | None) -> float:
    """How confident a sample is under ``mode``, higher is surer (``keep_top`` keeps the highest)."""
    if confidence is None:
        return -math.inf
    if mode == "entropy":
        return -confidence.mean_entropy
    if mode == "tail":
        return -confidence.tail_entropy
    return confidence.lowest_group_confidence


def kept(votes: Iterable[Vote], mode: str, keep_top: float = 100.0) -> list[Vote]:
    """The votes with an answer, less all but the most confident ``keep_top`` percent of them
    (at least one; ties keep the lower sample index)."""
    valid = [v for v in votes if v.answer is not None]
    if keep_top >= 100 or not valid:
        return valid
    n = max(1, math.ceil(len(valid) * keep_top / 100))
    return sorted(valid, key=lambda v: (-rank_score(mode, v.confidence), v.sample))[:n]


def pick(votes: Sequence[Vote], mode: str = "majority", *, floor: float = DEFAULT_VOTE_FLOOR,
         keep_top: float = 100.0) -> int | None:
    """The winner of ``votes`` under ``mode`` (None when no vote has an answer)."""
    chosen = kept(votes, mode, keep_top)
    if not chosen:
        return None
    tally = Tally(max(v.sample for v in chosen) + 1)
    for v in chosen:
        tally.add(v.sample, v.answer, v.bonus * vote_weight(mode, v.confidence, floor))
    return tally.winner()


def every_mode(votes: Sequence[Vote], *, floor: float = DEFAULT_VOTE_FLOOR, keep_top: float = 100.0
               ) -> dict[str, int | None]:
    """The winner each vote mode would have picked from the same ``votes``."""
    return {mode: pick(votes, mode, floor=floor, keep_top=keep_top) for mode in VOTE_MODES}
