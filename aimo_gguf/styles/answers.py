"""Pull one integer answer out of a finished completion.

Three steps, each usable on its own:

1. ``answer_candidates`` lists the raw candidate strings, best first: the
   answer the text ends on (the later of its last complete ``\\boxed{...}`` /
   ``\\fbox{...}`` and its last "final answer is" / "final answer:" / "answer
   is" / "Answer:" phrase), then the other of the two. A phrase that holds the box
   ("Answer: \\boxed{...}") is that box, nothing more. A phrase also offers the number it
   starts with when words follow it ("the answer is 42 (since 6 * 7)"), and a label
   ("Final Answer: The largest $n$ is 34") the value its prose ends on. A phrase whose value
   is not a whole number gives way to the box. Only a text with neither a box nor a phrase
   falls back to the value it ends on: the math segment (``$...$``, ``\\(...\\)``,
   ``\\[...\\]``) that holds its last number, else that number when it stands alone (not
   inside a word, a LaTeX argument or a sum: ``AZYUK2A``, ``\\frac{4}{23}`` and ``2 + 3\\sqrt2``
   give nothing). A truncated sample (one that hit the token limit, ``truncated=True``) has no
   such fallback: its last number is wherever the limit cut it. ``find_answer_text`` is the first.
2. ``answer_value`` (``aimo_gguf.styles.answer_values``) reads one candidate's exact value: LaTeX
   wrappers, thousands separators, units, percent and currency signs, exact arithmetic, and an
   equation's right side when its left side names a quantity. ``normalize_answer`` is that value
   when it is an ``int``.
3. ``validate_answer`` reduces by an optional modulus and range-checks.

``extract_answer`` takes the first candidate that has a value (a value that is
not a whole number ends the search: the sample answered something else), and
validates it. Chat tokens such as ``<|im_end|>`` are dropped first. Every scan is linear in the text length:
completions can be ~50k characters and this runs once per finished sample.
"""

from __future__ import annotations

import re
import string

from .answer_values import answer_value

DEFAULT_MIN_ANSWER = 0
DEFAULT_MAX_ANSWER = 99999

# How far after "answer is" the phrase fallback looks; bounds the work per
# phrase so a long single-line text with many phrases stays linear.
PHRASE_WINDOW = 200

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANY_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# A brace preceded by a backslash is a literal brace (``\{``), not a group.
_BRACE_RE = re.compile(r"(?<!\\)[{}]")

_BARE_BOX_RE = re.compile(r"\\boxed\s+(-?\d[^\s${}\\]*)")  # ``\boxed 5``: a number boxed without braces
_PHRASE_RE = re.compile(
    # A ``**`` right after the colon closes a bold label ("**Final Answer:** 7");
    # after "is" it would open a bold answer, so it is left to the answer.
    # (Each optional ``**`` carries its own spaces: two ``\s*`` around an optional group would backtrack
    # quadratically over a long run of blanks.)
    r"final\s+answer\s*(?:(?:\*\*|__)\s*)?(?:is\b\s*:?|(?P<label>:)\s*(?:\*\*|__)?)"
    r"|answer\s+is\b\s*:?"
    r"|(?:^|\n)[ \t#*_]*answer\s*(?:(?:\*\*|__)\s*)?(?P<line>:)\s*(?:\*\*|__)?",  # "Answer: 7", "**Answer:** 7"
    re.IGNORECASE,
)
# Special tokens a chat model may leave in its text (``<|im_end|>``, ``<|reserved_special_token_12|>``, ``</s>``).
_CHAT_TOKEN_RE = re.compile(r"<\|[^|<>\s]{1,64}\|>|</s>|<eos>|<end_of_turn>")
# The number a phrase starts with, when words (not an operator) follow it: "42 (since 6 * 7)", "5 apples".
_LEADING_NUMBER_RE = re.compile(r"\$?\s*(-?\d[\d,]*(?:\.\d+)?)\$?(?=[.,;:!?]?(?:\s+[A-Za-z(]|\s*$))")
# Where a phrase's answer stops: a sentence-ending mark before whitespace or
# the end (so ``2.5`` survives), a newline, or ", " (``42, since ...``).
_SENTENCE_END_RE = re.compile(r"[.!?;](?=\s|$)|\n|,\s")
_DIGIT_RE = re.compile(r"\d")

# Thousands-separated form first so ``12,345`` (or LaTeX's ``12{,}345``, ``12\\,345``) is one number; ``(?!\d)`` stops
# ``12,3456`` from reading as ``12,345``. A minus counts only where it cannot
# be a binary minus (``3-5`` yields 5, not -5).
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)}\]])-)?(?:\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?!\d)|\d+)(?:\.\d+)?"
)
# The same with the separators math mode uses (``1\,000``, ``1{,}000``, ``1~000``, ``1 000``): only read so
# inside math mode, where a space between digits is a thousands separator, not two numbers, or when the
# number is its line's only content.
_MATH_NUMBER_RE = re.compile(
    r"(?:(?<![\w)}\]])-)?\d{1,3}(?:(?:,|\\,|\s*\{\s*,\s*\}\s*|,\s*\\!\s*|\\ |~| )\d{3})+(?!\d)(?:\.\d+)?"
)
_DOLLARS_RE = re.compile(r"(?<!\\)\$\$|(?<!\\)\$")
# What may not touch a number that stands alone: a letter or digit (``AZYUK2A``, ``4t``), a LaTeX argument or
# script (``{23}``, ``^2``, ``_5``), a command (``\\sqrt3``), a root sign; nor an arithmetic operator or a function
# name before or after it across spaces (``9 + 1``, ``ln 2026``).
_GLUED_LEFT = set("_^{\\/.\u221a" + string.ascii_letters + string.digits)
_GLUED_RIGHT = set("_^}/(\u00b2\u00b3\u221a" + string.ascii_letters + string.digits)
_OPERATOR_LEFT_RE = re.compile(r"(?:[-+*/^\u00d7\u00b7\u00f7\u22c5\u2212\u221a]|\\(?:cdot|times|div|sqrt|pm)"
                               r"|\b(?:ln|log|sin|cos|tan|exp|sqrt))\s*$")
_OPERATOR_RIGHT_RE = re.compile(r"\s*(?:[-+*/^\u00d7\u00b7\u00f7\u22c5\u2212]|\\(?:cdot|times|div|pm|sqrt))")


def answer_candidates(text: str, *, truncated: bool = False) -> list[str]:
    """The raw candidate answers of ``text``, best first (see the module's docstring)."""
    return [raw for raw, _ in _candidates(text, truncated=truncated)]


def _candidates(text: str, *, truncated: bool = False) -> list[tuple[str, bool]]:
    """(candidate, whether a value there that is not a whole number ends the search), best first. A phrase
    that gives a fraction ("in hours the answer is 2.5") does not hide an earlier box; a box does."""
    text = _CHAT_TOKEN_RE.sub(" ", text)
    box, box_at = _last_box(text)
    phrase, phrase_at, label = _last_phrase(text)
    if phrase is not None and _ANY_BOX_RE.search(phrase):
        phrase = None  # "Answer: \\boxed{...}": the box is the answer, its content read as a box
    found: list[tuple[str, bool]] = []
    ordered = [(box_at, box, False), (phrase_at, phrase, True)]
    ordered.sort(key=lambda c: -c[0])  # the one the text ends on first
    for _, candidate, is_phrase in ordered:
        if candidate is not None:
            found.append((candidate, not is_phrase))
            parts = _parts(candidate, phrase=is_phrase, label=label and is_phrase)
            found.extend((part, not is_phrase) for part in parts)
    if found or truncated:  # a box or a phrase that has no value is not an answer
        return found
    ending = _ending(text)
    return [(ending, True)] if ending is not None else []


def find_answer_text(text: str) -> str | None:
    """The best candidate answer in ``text`` (``answer_candidates``' first), or ``None`` if there is none.

    An unclosed or empty box falls back to the previous one; a phrase counts only when a digit
    follows it within its sentence.
    """
    candidates = answer_candidates(text)
    return candidates[0] if candidates else None


def normalize_answer(raw: str) -> int | None:
    """Turn a candidate answer string into an integer, or ``None``: ``answer_value`` when it is whole.

    For example ``$42$``, ``\\text{42}``, ``12,345``, ``1\\,234``, ``42.0``, ``x = 42``,
    ``\\frac{12}{3}``, ``\\frac84``, ``12/3``, ``2^{10}``, ``30^\\circ``, ``40\\%``, ``\\$10``,
    ``1320 km`` and ``(9+1)`` all have an integer value; ``2.5``, ``x+1``, ``(7, 6)``,
    ``x \\geq 5``, ``\\frac{1+\\sqrt{5}}{2}`` and ``x-2y+z-1=0`` have none.
    """
    value = answer_value(raw)
    if value is None or value.denominator != 1:
        return None
    return int(value)


def validate_answer(
    value: int | None,
    *,
    min_answer: int = DEFAULT_MIN_ANSWER,
    max_answer: int = DEFAULT_MAX_ANSWER,
    modulo: int | None = None,
) -> int | None:
    """Reduce ``value`` modulo ``modulo`` (if given), then range-check it.

    The reduction uses Python's ``%``, so a negative value becomes
    non-negative. Returns ``None`` for ``None`` or a value outside
    ``[min_answer, max_answer]``.
    """
    if value is None:
        return None
    if modulo is not None:
        value %= modulo
    if value < min_answer or value > max_answer:
        return None
    return value


def extract_answer(
    text: str,
    *,
    min_answer: int = DEFAULT_MIN_ANSWER,
    max_answer: int = DEFAULT_MAX_ANSWER,
    modulo: int | None = None,
    truncated: bool = False,
) -> int | None:
    """Find, normalize and validate the answer of one completion; ``truncated``: it hit the token limit,
    so only an answer it states (a box, an answer phrase) counts, never its last number."""
    for raw, final in _candidates(text, truncated=truncated):
        value = answer_value(raw)
        if value is None:
            continue
        if value.denominator != 1:
            if final:
                return None  # the sample's answer is not a whole number: not a later, lesser candidate
            continue
        return validate_answer(int(value), min_answer=min_answer, max_answer=max_answer, modulo=modulo)
    return None


def _last_box(text: str) -> tuple[str | None, int]:
    """Content of the last complete, non-empty box in ``text``, and where it starts (-1: none)."""
    box, at = _last_braced_box(text)
    bare = None
    for bare in _BARE_BOX_RE.finditer(text):
        pass
    if bare is not None and bare.start() > at:
        return bare.group(1), bare.start()
    return box, at


def _last_braced_box(text: str) -> tuple[str | None, int]:
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None, -1
    # Fast path: the last box is usually complete; scanning only its tail is
    # cheap compared with matching every brace from the first box.
    content = _group_content(text, starts[-1])
    if content is not None and content.strip():
        return content.strip(), starts[-1]
    # One stack pass pairs every brace, so falling back box by box stays
    # linear even when many boxes are unclosed.
    close_of: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text, starts[0] - 1):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            close_of[stack.pop()] = m.start()
    for start in reversed(starts[:-1]):
        end = close_of.get(start - 1)
        if end is not None and text[start:end].strip():
            return text[start:end].strip(), start
    return None, -1


def _group_content(s: str, start: int) -> str | None:
    """Text from ``start`` (just after a ``{``) to its matching ``}``, or None."""
    depth = 1
    for m in _BRACE_RE.finditer(s, start):
        if m.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return s[start : m.start()]
    return None


def _last_phrase(text: str) -> tuple[str | None, int, bool]:
    """Answer after the last "answer is"-style phrase that is followed by a digit, where it is, and
    whether the phrase is a label ("Final Answer: ...", "Answer: ...") that prose may follow."""
    found, at, label = None, -1, False
    for m in _PHRASE_RE.finditer(text):
        window = text[m.end() : m.end() + PHRASE_WINDOW]
        candidate = _until_sentence_end(window)
        if _DIGIT_RE.search(candidate):
            found, at, label = candidate, m.end(), bool(m.group("label") or m.group("line"))
    return found, at, label


def _parts(candidate: str, *, phrase: bool, label: bool) -> list[str]:
    """Smaller candidates inside one that may not parse whole: after a phrase the number it starts with
    ("the answer is 42 (since 6 * 7)"); after a label, whose prose names the answer ("Final Answer: The
    volume of $ABCDEFGH$ is 120"), the value its prose ends on."""
    parts = []
    if phrase:
        lead = _LEADING_NUMBER_RE.match(candidate)
        if lead is not None:
            parts.append(lead.group(1))
    if label:
        ending = _ending(candidate)
        if ending is not None:
            parts.append(ending)
    return parts


def _ending(text: str) -> str | None:
    """The value ``text`` ends on: the math segment that holds its last number, else that number when it
    stands alone; None when the number is inside an unclosed math segment or an expression."""
    last = _last_number(text)
    if last is None:
        return None
    start, end, number = last
    segment = _math_segment(text, start, end)
    if segment is not None:
        return segment or None  # "": math mode that never closes (cut off), no value known
    return number if _stands_alone(text, start, end) else None


def _last_number(text: str) -> tuple[int, int, str] | None:
    """The last number of ``text`` and where it is; with its thousands separators in math mode (``$1 000$``
    is 1000) or when it is its line's only content."""
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    if last is None:
        return None
    # A separated number that ends where the last plain number ends is the whole number, where spaces separate.
    for m in _MATH_NUMBER_RE.finditer(text, max(0, last.start() - 40), last.end()):
        if m.end() == last.end() and m.start() < last.start() and (
                _own_line(text, m.start(), m.end()) or _math_segment(text, m.start(), m.end()) is not None):
            return m.start(), m.end(), m.group()
    return last.start(), last.end(), last.group()


def _own_line(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    return not text[line_start:start].strip() and not text[end:len(text) if line_end == -1 else line_end].strip(" .")


def _math_segment(text: str, start: int, end: int) -> str | None:
    """The math segment (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) around ``text[start:end]``, with
    its delimiters; "" when that math mode never closes (cut off); None outside math mode."""
    singles = doubles = 0
    opener = -1
    for m in _DOLLARS_RE.finditer(text, 0, start):
        if m.group() == "$$":
            doubles += 1
        else:
            singles += 1
            opener = m.start()
    if doubles % 2:
        close = text.find("$$", end)
        return "" if close == -1 else text[text.rfind("$$", 0, start):close + 2]
    if singles % 2:
        close = _DOLLARS_RE.search(text, end)
        # A "$" that never closes is a price ("she earned $15."), not math mode.
        return None if close is None else text[opener:close.end()]
    for open_mark, close_mark in (("\\(", "\\)"), ("\\[", "\\]")):
        at = text.rfind(open_mark, 0, start)
        if at > text.rfind(close_mark, 0, start):
            close = text.find(close_mark, end)
            return "" if close == -1 else text[at:close + len(close_mark)]
    return None


def _stands_alone(text: str, start: int, end: int) -> bool:
    """Whether the number ``text[start:end]`` is not part of a word or an expression."""
    if start > 0 and text[start - 1] in _GLUED_LEFT:
        return False
    if end < len(text) and text[end] in _GLUED_RIGHT:
        return False
    if _OPERATOR_LEFT_RE.search(text, max(0, start - 12), start):
        return False
    return _OPERATOR_RIGHT_RE.match(text, end) is None


def _until_sentence_end(window: str) -> str:
    window = window.strip()
    # Math mode may contain ". " or ", " of its own; take it whole.
    for opener, closer in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("**", "**")):
        if window.startswith(opener):
            end = window.find(closer, len(opener))
            if end != -1:
                return window[: end + len(closer)]
            break
    end = _SENTENCE_END_RE.search(window)
    return (window[: end.start()] if end else window).strip()
