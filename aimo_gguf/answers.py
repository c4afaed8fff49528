"""Pull one integer answer out of a finished completion.

Three steps, each usable on its own:

1. ``find_answer_text`` picks the raw candidate string: the last complete
   ``\\boxed{...}`` / ``\\fbox{...}``, else the text after the last
   "final answer is" / "final answer:" / "answer is", else the last number.
2. ``normalize_answer`` turns that string into an ``int`` (or ``None``): it
   understands LaTeX wrappers, thousands separators, exact fractions,
   ``42.0``, ``x = 42`` and small integer powers such as ``2^{10}``.
3. ``validate_answer`` reduces by an optional modulus and range-checks.

``extract_answer`` chains the three. Every scan is linear in the text length:
completions can be ~50k characters and this runs once per finished sample.
"""

from __future__ import annotations

import re
from fractions import Fraction

DEFAULT_MIN_ANSWER = 0
DEFAULT_MAX_ANSWER = 99999

# How far after "answer is" the phrase fallback looks; bounds the work per
# phrase so a long single-line text with many phrases stays linear.
PHRASE_WINDOW = 200

# Largest exponent ``normalize_answer`` evaluates in ``a^b``; anything bigger
# is far outside any answer range and not worth the big-integer work.
MAX_POWER_EXPONENT = 64

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A brace preceded by a backslash is a literal brace (``\{``), not a group.
_BRACE_RE = re.compile(r"(?<!\\)[{}]")

_PHRASE_RE = re.compile(
    # A ``**`` right after the colon closes a bold label ("**Final Answer:** 7");
    # after "is" it would open a bold answer, so it is left to the answer.
    r"final\s+answer\s*(?:\*\*|__)?\s*(?:is\b\s*:?|:\s*(?:\*\*|__)?)"
    r"|answer\s+is\b\s*:?",
    re.IGNORECASE,
)
# Where a phrase's answer stops: a sentence-ending mark before whitespace or
# the end (so ``2.5`` survives), a newline, or ", " (``42, since ...``).
_SENTENCE_END_RE = re.compile(r"[.!?;](?=\s|$)|\n|,\s")
_DIGIT_RE = re.compile(r"\d")

# Thousands-separated form first so ``12,345`` is one number; ``(?!\d)`` stops
# ``12,3456`` from reading as ``12,345``. A minus counts only where it cannot
# be a binary minus (``3-5`` yields 5, not -5).
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)}\]])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
)

_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox|boxed|fbox)\s*\{([^{}]*)\}"
)
# LaTeX spacing and sizing commands that never change a value.
_NOISE_RE = re.compile(r"\\(?:displaystyle|left|right|[!;:]|quad|qquad)(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_ASSIGN_RE = re.compile(r"^\\?[A-Za-z][A-Za-z0-9_{}]*\s*=\s*")
_PLAIN_NUMBER_RE = re.compile(
    r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+|\d+)(?:\.\d+)?"
)
_FRAC_RE = re.compile(r"([+-]?)\s*\\[dt]?frac\s*")
_SHORT_FRAC_RE = re.compile(r"(\d)\s*(\d)")
_SLASH_RE = re.compile(r"(.+?)\s*/\s*(.+)")
# The sign is outside the power, as in ordinary notation: -2^2 is -4.
_POWER_RE = re.compile(r"([+-]?)\s*(\d+)\s*\^\s*(?:\{\s*(\d+)\s*\}|(\d+))")

_SURROUNDS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Unicode and LaTeX (~) non-breaking spaces and the Unicode minus, as ASCII.
_CHAR_TRANSLATION = str.maketrans(
    {"\u00a0": " ", "\u2009": " ", "\u202f": " ", "~": " ", "\u2212": "-"}
)


def find_answer_text(text: str) -> str | None:
    """Return the raw candidate answer in ``text``, or ``None`` if there is none.

    Priority: the last complete ``\\boxed{}``/``\\fbox{}`` (nested braces
    respected; an unclosed or empty box falls back to the previous one), then
    the last "final answer is X" / "final answer: X" / "answer is X" whose X
    contains a digit, then the last number in the text.
    """
    boxed = _last_box(text)
    if boxed is not None:
        return boxed
    phrase = _last_phrase(text)
    if phrase is not None:
        return phrase
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return last.group() if last is not None else None


def normalize_answer(raw: str) -> int | None:
    """Turn a candidate answer string into an integer, or ``None``.

    Understood: surrounding ``$``/``\\(\\)``/``**``, ``\\text{}``-style
    wrappers, thousands separators (``1,234``, ``1{,}234``, ``1\\,234``,
    ``1 234``), a leading ``+`` or ``-``, a trailing period, ``^\\circ``,
    ``x = 42``, trailing zero decimals (``42.0``), exact fractions
    (``\\frac{12}{3}``, ``\\dfrac``, ``\\tfrac``, ``\\frac84``, ``12/3``) and
    integer powers with a non-negative exponent up to ``MAX_POWER_EXPONENT``
    (``2^{10}``, ``2^10``). A value that is not a whole number, or any other
    expression or word, gives ``None``.
    """
    s = _clean(raw)
    value = _parse_value(s)
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
) -> int | None:
    """Find, normalize and validate the answer of one completion."""
    raw = find_answer_text(text)
    if raw is None:
        return None
    return validate_answer(
        normalize_answer(raw), min_answer=min_answer, max_answer=max_answer, modulo=modulo
    )


def _last_box(text: str) -> str | None:
    """Content of the last complete, non-empty box in ``text``."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    # Fast path: the last box is usually complete; scanning only its tail is
    # cheap compared with matching every brace from the first box.
    content = _group_content(text, starts[-1])
    if content is not None and content.strip():
        return content.strip()
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
            return text[start:end].strip()
    return None


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


def _last_phrase(text: str) -> str | None:
    """Answer after the last "answer is"-style phrase that is followed by a digit."""
    found = None
    for m in _PHRASE_RE.finditer(text):
        window = text[m.end() : m.end() + PHRASE_WINDOW]
        candidate = _until_sentence_end(window)
        if _DIGIT_RE.search(candidate):
            found = candidate
    return found


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


def _clean(raw: str) -> str:
    """Strip wrappers, spacing and punctuation that never change the value."""
    s = raw.translate(_CHAR_TRANSLATION)
    s = s.replace("{,}", ",").replace("\\,", " ").replace("\\ ", " ")
    s = _NOISE_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    while True:
        before = s
        # A stray "*" is left when bold markup was cut in half by the finder.
        s = _WRAPPER_RE.sub(r"\1", s).strip().rstrip(".").strip().strip("*").strip()
        for opener, closer in _SURROUNDS:
            if len(s) > len(opener) + len(closer) - 1 and s.startswith(opener) and s.endswith(closer):
                s = s[len(opener) : -len(closer)].strip()
        s = _ASSIGN_RE.sub("", s)
        if s == before:
            return s


def _parse_value(s: str) -> Fraction | None:
    """Exact value of a plain number, fraction or small power; None otherwise."""
    if _PLAIN_NUMBER_RE.fullmatch(s):
        return Fraction(s.replace(",", "").replace(" ", ""))
    frac = _FRAC_RE.match(s)
    if frac:
        parts = _frac_parts(s, frac.end())
        if parts is None:
            return None
        num, den = (_parse_value(p.strip()) for p in parts)
        return _divide(num, den, negate=frac.group(1) == "-")
    slash = _SLASH_RE.fullmatch(s)
    if slash:
        return _divide(_parse_value(slash.group(1)), _parse_value(slash.group(2)))
    power = _POWER_RE.fullmatch(s)
    if power:
        exponent = int(power.group(3) or power.group(4))
        if exponent > MAX_POWER_EXPONENT:
            return None
        value = int(power.group(2)) ** exponent
        return Fraction(-value if power.group(1) == "-" else value)
    return None


def _frac_parts(s: str, i: int) -> tuple[str, str] | None:
    """Numerator and denominator of a ``\\frac`` whose arguments start at ``i``."""
    short = _SHORT_FRAC_RE.fullmatch(s, i)
    if short:
        return short.group(1), short.group(2)
    if not s.startswith("{", i):
        return None
    num = _group_content(s, i + 1)
    if num is None:
        return None
    j = i + len(num) + 2
    while j < len(s) and s[j] == " ":
        j += 1
    if not s.startswith("{", j):
        return None
    den = _group_content(s, j + 1)
    # The fraction must be the whole answer: nothing may follow it.
    if den is None or j + len(den) + 2 != len(s):
        return None
    return num, den


def _divide(num: Fraction | None, den: Fraction | None, *, negate: bool = False) -> Fraction | None:
    if num is None or den is None or den == 0:
        return None
    value = num / den
    return -value if negate else value
