"""Pull one integer answer out of a finished completion.

Three steps, each usable on its own:

1. ``answer_candidates`` lists the raw candidate strings, best first: the
   answer the text ends on (the later of its last complete ``\\boxed{...}`` /
   ``\\fbox{...}`` and its last "final answer is" / "final answer:" / "answer
   is" / "Answer:" phrase), then the other of the two; a candidate that is an
   expression ending in ``= N`` also offers what follows its last ``=``, a
   phrase the number it starts with ("the answer is 42 (since 6 * 7)"), and a
   label ("Final Answer: The largest $n$ is 34") the last number of its
   prose. A phrase whose value is not a whole number gives way to the box. Only a
   text with neither a box nor a phrase falls back to its last number (or
   the math expression it ends on). ``find_answer_text`` is the first.
2. ``normalize_answer`` turns a string into an ``int`` (or ``None``): it
   understands LaTeX wrappers, thousands separators, exact fractions
   (``\\frac3{4}`` shorthand included), ``42.0``, ``x = 42`` and small integer
   powers such as ``2^{10}``.
3. ``validate_answer`` reduces by an optional modulus and range-checks.

``extract_answer`` takes the first candidate that has a value (a value that is
not a whole number ends the search: the sample answered something else), and
validates it. Chat tokens such as ``<|im_end|>`` are dropped first. Every scan is linear in the text length:
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
_EQUALS_RE = re.compile(r"(?<![<>!=])=(?!=)")
_LEADING_NUMBER_RE = re.compile(r"\$?\s*(-?\d[\d,]*(?:\.\d+)?)\$?(?=[\s.,;:!?)]|$)")
_MATH_SEGMENT_RE = re.compile(r"\$[^$]+\$")
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
# inside ``$...$``, where a space between digits is a thousands separator, not two numbers.
_MATH_NUMBER_RE = re.compile(
    r"(?:(?<![\w)}\]])-)?\d{1,3}(?:(?:,|\\,|\{,\}|\\ |~| )\d{3})+(?!\d)(?:\.\d+)?"
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


def answer_candidates(text: str) -> list[str]:
    """The raw candidate answers of ``text``, best first (see the module's docstring)."""
    return [raw for raw, _ in _candidates(text)]


def _candidates(text: str) -> list[tuple[str, bool]]:
    """(candidate, whether a value there that is not a whole number ends the search), best first. A phrase
    that gives a fraction ("in hours the answer is 2.5") does not hide an earlier box; a box does."""
    text = _CHAT_TOKEN_RE.sub(" ", text)
    box, box_at = _last_box(text)
    phrase, phrase_at, label = _last_phrase(text)
    found: list[tuple[str, bool]] = []
    ordered = [(box_at, box, False), (phrase_at, phrase, True)]
    ordered.sort(key=lambda c: -c[0])  # the one the text ends on first
    for _, candidate, is_phrase in ordered:
        if candidate is not None:
            found.append((candidate, not is_phrase))
            found.extend((part, not is_phrase) for part in _parts(candidate, phrase=is_phrase, label=label))
    last = None if found else _last_number(text)  # a box or a phrase that has no value is not an answer
    if last is not None:
        # The text ends on a number in math mode: the whole expression first (``$\\frac3{4}$`` is not 4).
        segment = None
        for segment in _MATH_SEGMENT_RE.finditer(text, max(0, len(text) - PHRASE_WINDOW)):
            pass
        if segment is not None and last in segment.group() and not _NUMBER_RE.search(text, segment.end()):
            found.append((segment.group(), True))
        found.append((last, True))
    return found


def find_answer_text(text: str) -> str | None:
    """The best candidate answer in ``text`` (``answer_candidates``' first), or ``None`` if there is none.

    An unclosed or empty box falls back to the previous one; a phrase counts only when a digit
    follows it within its sentence.
    """
    candidates = answer_candidates(text)
    return candidates[0] if candidates else None


def answer_value(raw: str) -> Fraction | None:
    """The exact value of one candidate string (``normalize_answer`` before the whole-number check)."""
    return _parse_value(_clean(raw))


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
    for raw, final in _candidates(text):
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
    """Smaller candidates inside one that may not parse whole: what follows its last ``=`` (``2 * 2 = 4``);
    after a phrase the number it starts with ("the answer is 42 (since 6 * 7)"); after a label, whose
    prose names the answer ("Final Answer: The volume of $ABCDEFGH$ is 120"), its last math segment and
    its last number."""
    parts = []
    equals = None
    for equals in _EQUALS_RE.finditer(candidate):
        pass
    if equals is not None:
        tail = candidate[equals.end():].strip()
        if tail:
            parts.append(tail if not tail.endswith("$") or "$" in tail[:-1] else tail[:-1])
    if phrase:
        lead = _LEADING_NUMBER_RE.match(candidate)
        if lead is not None:
            parts.append(lead.group(1))
    if label:
        segment = None
        for segment in _MATH_SEGMENT_RE.finditer(candidate):
            pass
        if segment is not None:
            parts.append(segment.group())
        last = _last_number(candidate)
        if last is not None:
            parts.append(last)
    return parts


def _last_number(text: str) -> str | None:
    """The last number of ``text``; in math mode with its thousands separators (``$1 000$`` is 1000)."""
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    if last is None:
        return None
    # A separated number that ends where the last plain number ends, inside math mode, is the whole number.
    start = max(0, last.start() - 40)
    for m in _MATH_NUMBER_RE.finditer(text, start, last.end()):
        if m.end() == last.end() and m.start() < last.start() and _in_math(text, m.start()):
            return m.group()
    return last.group()


def _in_math(text: str, i: int) -> bool:
    """Whether position ``i`` is inside ``$...$`` or ``\\(...\\)`` (unescaped dollars counted before it)."""
    dollars = len(re.findall(r"(?<!\\)\$", text[:i]))
    if dollars % 2:
        return True
    return text.rfind("\\(", 0, i) > text.rfind("\\)", 0, i)


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
    """Numerator and denominator of a ``\\frac`` whose arguments start at ``i``: each a ``{group}`` or,
    in LaTeX's shorthand, one digit (``\\frac84``, ``\\frac3{4}``, ``\\frac{3}4``)."""
    short = _SHORT_FRAC_RE.fullmatch(s, i)
    if short:
        return short.group(1), short.group(2)
    num, j = _frac_argument(s, i)
    if num is None:
        return None
    den, end = _frac_argument(s, j)
    # The fraction must be the whole answer: nothing may follow it.
    if den is None or end != len(s):
        return None
    return num, den


def _frac_argument(s: str, i: int) -> tuple[str | None, int]:
    """One argument of a ``\\frac`` at ``i`` (spaces skipped), and where the next one starts."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i].isdigit():
        return s[i], i + 1
    if not s.startswith("{", i):
        return None, i
    content = _group_content(s, i + 1)
    if content is None:
        return None, i
    return content, i + len(content) + 2


def _divide(num: Fraction | None, den: Fraction | None, *, negate: bool = False) -> Fraction | None:
    if num is None or den is None or den == 0:
        return None
    value = num / den
    return -value if negate else value
