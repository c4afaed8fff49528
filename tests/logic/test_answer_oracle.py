"""The answer extractor against Math-Verify (HuggingFace's answer checker) as an oracle.

On 600 realistic completions (tests/answer_corpus.py) the two must agree on at least 99% and ours
must give the known answer; the cases where they differ on purpose are listed below, each with
the reason ours is right.
"""

from __future__ import annotations

import logging

import pytest
import sympy
from answer_corpus import corpus
from math_verify import parse

from aimo_gguf.styles.answers import extract_answer

pytestmark = pytest.mark.logic
logging.getLogger("math_verify").setLevel(logging.CRITICAL)


def oracle(text: str) -> int | None:
    """Math-Verify's answer as an integer (None: nothing, or not one integer)."""
    found = parse(text)
    if not found:
        return None
    value = found[0]
    try:
        if isinstance(value, sympy.Integer) or (getattr(value, "is_number", False) and value.is_integer):
            return int(value)
    except (TypeError, ValueError):
        pass
    return None


def test_the_extractor_agrees_with_math_verify_on_realistic_completions():
    entries = corpus()
    assert len(entries) >= 500
    ours = [extract_answer(text) for text, _ in entries]
    theirs = [oracle(text) for text, _ in entries]
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert agree / len(entries) >= 0.99, [(t[-80:], a, b) for (t, _), a, b in zip(entries, ours, theirs) if a != b]
    assert ours == [answer for _, answer in entries]  # and ours is right on every one


# Where the two differ on purpose: (text, ours, Math-Verify's, why ours is right).
DISAGREEMENTS = [
    ("Adding, $786 + 101 = 887$, so the answer is $786 + 101 = 887$.", 887, None,
     "an answer written as an expression ending in = N states N; Math-Verify declines the equation"),
    ("**Final Answer:** 14{,}898", 14898, 14,
     "{,} is LaTeX's thousands separator wherever it appears; Math-Verify reads it outside math mode as a cut"),
    ("So we count $1 000$ tilings.", 1000, 0,
     "a space between digit groups in math mode separates thousands; Math-Verify multiplies 1 by 000"),
    ("The answer is $10\\,455$.", 10455, 465,
     "a thin space (\\,) between digit groups separates thousands; Math-Verify adds 10 and 455"),
    ("We first guessed \\boxed{832}, but checking again gives \\boxed{763}.", 763, 832763,
     "the last box is the answer; Math-Verify joins boxes in one clause into a list, here read as 832,763"),
    ("First \\boxed{32}, then after checking, \\boxed{20}.", 20, None,
     "the last box is the answer; Math-Verify returns the set {20, 32}, not one integer"),
]


@pytest.mark.parametrize(("text", "ours", "theirs", "why"), DISAGREEMENTS, ids=[d[3][:40] for d in DISAGREEMENTS])
def test_each_listed_disagreement_is_what_it_says(text, ours, theirs, why):
    assert extract_answer(text) == ours
    # What Math-Verify 0.9.0 gives, for the record; a later version that agrees is welcome.
    assert oracle(text) != ours


# The completions the issue found, each a family now handled; Math-Verify agrees on all of them.
ISSUE_CASES = [
    ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", 120),
    ("Final Answer: The largest $n$ is 34.", 34),
    ("so $10,000 + 200 = \\boxed{255}$ So the bill is $10,200 + $255 = $10,455. Final Answer: The final answer "
     "is $10,455$. I hope it is correct.", 10455),
    ("Therefore, the answer is 2 * 2 = 4.", 4),
    ("$\\frac3{3}$", 1),
]


@pytest.mark.parametrize(("text", "answer"), ISSUE_CASES)
def test_the_cases_that_fooled_the_old_extractor(text, answer):
    assert extract_answer(text) == answer == oracle(text)
