from __future__ import annotations

import time

import pytest

from aimo_gguf.styles.answers import (
    DEFAULT_MAX_ANSWER,
    DEFAULT_MIN_ANSWER,
    extract_answer,
    find_answer_text,
    normalize_answer,
    validate_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{\frac{12}{3}}", r"\frac{12}{3}"),
        (r"\boxed{ {1}{,}234 }", "{1}{,}234"),
        (r"first \boxed{1} then \boxed{2} finally \boxed{3}.", "3"),
        (r"\boxed{7} and then \boxed{8", "7"),
        (r"\boxed{7} \boxed{} done", "7"),
        (r"\fbox{99}", "99"),
        (r"\boxed {5}", "5"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        ("The final answer is 42.", "42"),
        ("The Final Answer: 17", "17"),
        ("**Final Answer:** $7$", "$7$"),
        ("**Final Answer**: 12,345. Done", "12,345"),
        ("Final answer is **81**.", "**81**"),
        ("So the answer is $\\frac{1}{2}$. Wait.", "$\\frac{1}{2}$"),
        ("the answer is 5. Hmm, the answer is 6, since ...", "6"),
        ("the answer is 2.5.", "2.5"),
        ("The answer is 8.\nLet me check the answer is correct.", "8"),
        ("we get 3 apples and 12,345 pears.", "12,345"),
        ("values 1, then -17 at the end", "-17"),
        ("range 3-5", None),  # a range, or a difference: the 5 is part of an expression
        ("pi is about 3.14", "3.14"),
        ("no numbers here at all", None),
        ("", None),
    ],
)
def test_find_answer_text(text: str, expected: str | None) -> None:
    assert find_answer_text(text) == expected


def test_unclosed_only_box_falls_back_to_phrase_then_number() -> None:
    assert find_answer_text(r"answer is 9. \boxed{10") == "9"
    assert find_answer_text(r"we had 9 then \boxed{") == "9"


def test_many_unclosed_boxes_are_skipped() -> None:
    text = r"\boxed{5} " + r"\boxed{1 " * 2000
    assert find_answer_text(text) == "5"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42),
        (" 42 ", 42),
        ("$42$", 42),
        ("$$42$$", 42),
        (r"\(42\)", 42),
        ("**42**", 42),
        ("42.", 42),
        ("+42", 42),
        ("-42", -42),
        ("\u221242", -42),  # U+2212 MINUS SIGN
        ("1,234", 1234),
        ("12,345,678", 12345678),
        ("1{,}234", 1234),
        (r"1\,234", 1234),
        ("1 234", 1234),
        ("1,23", None),
        (r"\text{42}", 42),
        (r"\textbf{42}", 42),
        (r"\mathrm{42}", 42),
        (r"$\text{ 1{,}000 }$", 1000),
        (r"\frac{12}{3}", 4),
        (r"\dfrac{12}{3}", 4),
        (r"\tfrac{12}{3}", 4),
        (r"-\frac{12}{3}", -4),
        (r"\frac{-12}{3}", -4),
        (r"\frac{1}{2}", None),
        (r"\frac{5}{0}", None),
        (r"\frac84", 2),
        (r"\frac{\frac{12}{2}}{3}", 2),
        (r"\frac{12}{3} + 1", 5),  # plain arithmetic has its value
        ("12/3", 4),
        ("7/2", None),
        ("42.0", 42),
        ("42.00", 42),
        ("2.5", None),
        ("-3.0", -3),
        ("x = 42", 42),
        ("n=42", 42),
        ("2^{10}", 1024),
        ("2^10", 1024),
        ("-2^2", -4),
        ("10^{100}", 10**100),  # large, but cheap: with --modulo it may matter
        ("10^{5000}", None),  # more bits than any answer needs
        (r"30^\circ", 30),
        (r"30^{\circ}", 30),
        (r"\displaystyle 42", 42),
        ("forty-two", None),
        ("x+1", None),
        ("", None),
        ("$", None),
        ("3, 4", None),
    ],
)
def test_normalize_answer(raw: str, expected: int | None) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (42, {}, 42),
        (0, {}, 0),
        (99999, {}, 99999),
        (100000, {}, None),
        (-1, {}, None),
        (None, {}, None),
        (123456, {"modulo": 100000}, 23456),
        (-7, {"modulo": 1000}, 993),
        (1000, {"modulo": 1000}, 0),
        (50, {"min_answer": 1, "max_answer": 49}, None),
        (5, {"min_answer": -10, "max_answer": 10}, 5),
        (-5, {"min_answer": -10, "max_answer": 10}, -5),
    ],
)
def test_validate_answer(value: int | None, kwargs: dict[str, int], expected: int | None) -> None:
    assert validate_answer(value, **kwargs) == expected


def test_default_range() -> None:
    assert (DEFAULT_MIN_ANSWER, DEFAULT_MAX_ANSWER) == (0, 99999)


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        (r"Thus the answer is $\boxed{42}$.", {}, 42),
        (r"\boxed{\frac{12}{3}}", {}, 4),
        (r"\boxed{\frac{1}{3}}", {}, None),
        (r"\boxed{3} \boxed{\text{12,345}}", {}, 12345),
        (r"\boxed{2.5}", {}, None),
        (r"\boxed{7.0}", {}, 7),
        (r"\boxed{-1}", {}, None),
        (r"\boxed{100000}", {}, None),
        (r"\boxed{123456}", {"modulo": 100000}, 23456),
        (r"\boxed{-7}", {"modulo": 1000}, 993),
        ("The final answer is 42.", {}, 42),
        ("**Final Answer:** $7$", {}, 7),
        ("After all that, we get 12,345 as the count", {}, 12345),
        ("I could not solve this.", {}, None),
        (r"\boxed{x+1}", {}, None),
    ],
)
def test_extract_answer(text: str, kwargs: dict[str, int], expected: int | None) -> None:
    assert extract_answer(text, **kwargs) == expected


def test_extract_answer_on_long_text_is_fast() -> None:
    filler = "We compute {a}_{b} = \\frac{x}{y} + 3, then 17 more steps. " * 1100
    text = filler[:60_000] + r" Therefore \boxed{\frac{2024}{8}}."
    assert len(text) > 60_000
    start = time.perf_counter()
    assert extract_answer(text) == 253
    assert time.perf_counter() - start < 0.5


def test_long_text_without_box_is_fast() -> None:
    text = "the answer is maybe something, " * 2000 + "so we end with 314"
    start = time.perf_counter()
    assert extract_answer(text) == 314
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The answer the text ends on wins over an earlier box.
        (r"we get \boxed{255}. In total the final answer is 10,455.", 10455),
        (r"The final answer is 7. Double-checking: \boxed{8}", 8),
        # A phrase followed by prose, or by an expression ending in = N.
        ("Final Answer: The number of ways is 2{,}024.", 2024),
        ("So the answer is $3 \\cdot 4 = 12$.", 12),
        # A non-integer final answer is no answer: not the last number inside it.
        ("So the answer is $\\frac{3}{4}$ of the cake.", None),
        (r"It comes to $\frac{7}{2}$", None),
        # LaTeX shorthand.
        (r"\boxed{\frac{8}4}", 2),
        (r"\boxed{\dfrac{9}{3}}", 3),
        (r"so it is \boxed 5 in all", 5),
        # Chat tokens, even with digits in them, are not part of the answer.
        ("the answer is 41<|reserved_special_token_12|>", 41),
        ("Answer: 6\n<|im_end|>", 6),
        ("**Answer:** 19", 19),
        # Separators: math mode only for spaces, LaTeX's own anywhere.
        ("In total $12 345$ ways", 12345),
        ("there were 3 100 apples", 100),
        ("about 1\\,234 of them", 1234),
        # A box without a value is no answer: not the number inside it.
        (r"\boxed{x + 1}", None),
    ],
)
def test_extraction_families_real_outputs_use(text: str, expected: int | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A later phrase in passing does not beat the box: it gives no number of its own.
        ("\\boxed{12}\n\nCheck: the answer is at most 20, which holds.", 12),
        # A phrase gives the number it starts with, not the last one of its sentence.
        ("The answer is 42 (since 6 * 7).", 42),
        # A phrase whose value is not whole gives way to the box before it.
        (r"\boxed{150}. In hours the answer is 2.5.", 150),
        # "\boxed" followed by a word is not a box.
        (r"\boxed{7}, written in \boxed form", 7),
    ],
)
def test_cases_the_review_found(text: str, expected: int | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    "Final Answer" + "\n" * 50_000 + "x",
    "Answer" + " " * 50_000,
    "final answer **" + " " * 50_000 + "is",
    "\n" + "answer " * 10_000,
])
def test_long_runs_of_blanks_after_a_phrase_stay_linear(text: str) -> None:
    start = time.perf_counter()
    extract_answer(text)
    assert time.perf_counter() - start < 0.5


# The families issue 21 found, each with the inputs that fooled the extractor and their neighbours.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A label's rule does not leak into the box it introduces: a box without a value is no answer.
        ("Answer:\n\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\\\ 3 \\end{pmatrix}}", None),
        ("Answer:\n\\sqrt{\\frac{1 + 5}{2}} = \\boxed{\\frac{\\sqrt{6}}{\\sqrt{2}}}", None),
        ("Final Answer: $\\boxed{(7, 6)}$", None),
        ("**Final Answer:** \\boxed{12}", 12),
        # Units, percent and currency inside the answer.
        (r"\boxed{1320 km}", 1320),
        (r"\boxed{40 \text{ feet}}", 40),
        (r"\boxed{15\mbox{ cm}^2}", 15),
        (r"The distance is $\boxed{125\textnormal{ miles}}.$", 125),
        (r"\boxed{17\text{ any text}}", 17),
        (r"\boxed{40\%}", 40),
        (r"\boxed{10%}", 10),
        ("So it is $20 \\%$", 20),
        ("So it is $20\\%$", 20),
        (r"\boxed{\$10}", 10),
        (r"\boxed{4t}", None),  # a letter glued to the number is a variable, not a unit
        (r"\boxed{2 \pi}", None),
        # An expression with no value is no answer, not its last digit; plain arithmetic has its value.
        ("So $\\frac{1+\\sqrt{5}}{2}$", None),
        ("The point is $(7, 6)$", None),
        ("so $x \\geq 5$", None),
        ("the probability is \\frac{4}{23}", None),
        ("Answer \\( (9+1) \\)", 10),
        ("AZYUK2A", None),
        ("AD = h = 3 + 2\u221a2.", None),
        ("= \u22121013\u2009ln\u20092026.", None),
        ("The count is $\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}$", None),
        ("there are $4\\sqrt{2}$", None),
        (r"\boxed{\frac{7!}{16}}", 315),
        (r"\boxed{\sqrt{16}}", 4),
        # Equations: what follows = only after a name or arithmetic.
        (r"\boxed{x-2y+z-1=0}", None),
        (r"\boxed{(x+y)^2=81}", None),
        (r"\boxed{2S = -86}", None),
        (r"\boxed{x = 11}", 11),
        (r"\boxed{a_{10} = 55}", 55),
        (r"\boxed{f(3) = 7}", 7),
        (r"\boxed{m+n = 35}", 35),
        (r"\boxed{|AB| = 13}", 13),
        (r"\boxed{\angle ABC = 30^\circ}", 30),
        (r"\boxed{x^2 = 16}", None),  # the value of x^2, not of what was asked
        ("so $V_{3\\text{inch}} = \\$675$", 675),
        ("So the answer is $786 + 101 = 887$.", 887),
        ("$x\\approx11$", 11),
        # Separators.
        ("is $\\boxed{32,\\! 349}$", 32349),
        ("is $\\boxed{11,\\! 111,\\! 111,\\! 100}$", 11111111100),
        ("Final Answer: The final answer is $14 {, }916$. I hope it is correct.", 14916),
        ("so $16,\\!386.20$", None),  # not a whole number
        ("is $\\boxed{32, 349}$", None),  # a list of two
        ("1 000", 1000),
        ("there were 3 100 apples", 100),  # in prose, outside math mode, two numbers
        # A base subscript whose digits fit the base is the number as written.
        (r"a quotient of $\boxed{204_5}$", 204),
        # A price is not math mode.
        ("So she earned $15.", 15),
    ],
)
def test_issue_21_families(text: str, expected: int | None) -> None:
    assert extract_answer(text, min_answer=-(10**12), max_answer=10**12) == expected


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        # Cut off mid-sentence: the last number is wherever the limit fell.
        ("However, (12, 42), (13, 41), (16, 38), and (17, 37", None),
        ("Since $10000/77 \\approx 129.87$, there are 130 numbers less", None),
        ("the minimum is 13\n\nSo, the final answer", None),
        # What the sample stated before the limit still counts.
        ("So the answer is \\boxed{42}. Let me double-check: 6 * 7 = 4", 42),
        ("The answer is 42. Checking: 6 * 7 = 4", 42),
        ("Final Answer: 17\n\nTo verify, note that 17 = 1", 17),
    ],
)
def test_a_truncated_sample_counts_only_what_it_states(text: str, stated: int | None) -> None:
    assert extract_answer(text, truncated=True) == stated


@pytest.mark.parametrize("text", [
    "However, (12, 42), (13, 41), (16, 38), and (17, 37",
    "there are 130 numbers less",
    "we get 25 and",
])
def test_a_finished_sample_still_falls_back_to_its_last_number(text: str) -> None:
    assert extract_answer(text) is not None
    assert extract_answer(text, truncated=True) is None
