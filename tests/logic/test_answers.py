from __future__ import annotations

import time

import pytest

from aimo_gguf.answers import (
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
        ("range 3-5", "5"),
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
        (r"\frac{12}{3} + 1", None),
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
        ("10^{100}", None),
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
