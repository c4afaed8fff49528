"""The exact value of one candidate answer (a box's content, what follows "the answer is", the math a
text ends on): ``answer_value``.

A candidate is first cleaned of what never changes its value: math-mode delimiters, LaTeX spacing
and wrappers (``\\text{}``, ``\\mathrm{}``, ``\\boxed{}``...), bold markup, a trailing period,
thousands separators (``1,234``, ``1{,}234``, ``1{, }234``, ``1\\,234``, ``32,\\!349``, ``1 234``),
a trailing unit (``40 \\text{ feet}``, ``1320 km``, ``15\\mbox{ cm}^2``), a percent sign, degrees, a
leading currency sign (``\\$10``) and a base subscript whose digits fit the base (``204_5``).

What is left is read as exact arithmetic (``Fraction``): numbers, ``+ - * / ^``, ``\\cdot``,
``\\times``, ``\\div``, ``\\frac`` (with LaTeX's one-digit shorthand ``\\frac84``), ``\\sqrt`` of a
perfect square, a small factorial, parentheses and braces. An equation or ``\\approx`` chain gives
what follows its last sign when everything before it names a quantity (``x``, ``a_n``, ``f(3)``,
``\\angle ABC``, ``m+n``) or is itself arithmetic (``786 + 101 = 887``); ``x-2y+z-1=0`` is an
equation, not a value. Anything else (a variable, a tuple, an interval, an inequality, an
irrational number, words) has no value: ``None``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# The largest power ``answer_value`` evaluates, in bits of its result: 2^{99} (for a --modulo run)
# is cheap, 10^{5000} is not worth the big-integer work for any answer range.
MAX_POWER_BITS = 4096
# Longer candidates are prose, not one value; the bound also keeps the recursive reader shallow.
MAX_EXPRESSION = 300
MAX_FACTORIAL = 100

_SURROUNDS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Unicode and LaTeX (~) non-breaking spaces, the Unicode minus and operators, as ASCII.
_CHAR_TRANSLATION = str.maketrans(
    {"\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2003": " ", "~": " ", "\u2212": "-", "\u00d7": "*",
     "\u22c5": "*", "\u00b7": "*", "\u00f7": "/", "\u2248": "\\approx "}
)
_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textrm|textnormal|textit|mathrm|mathbf|mbox|boxed|fbox)\s*\{([^{}]*)\}"
)
# LaTeX spacing and sizing commands that never change a value (``\!`` is handled with separators first).
_NOISE_RE = re.compile(r"\\(?:displaystyle|left|right|bigl|bigr|Bigl|Bigr|[;:!]|quad|qquad)(?![A-Za-z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
# ``32,\! 349``: the negative space cancels the comma's; ``14 {, }916``: a spaced LaTeX comma group.
_SEPARATOR_RE = re.compile(r",\s*\\!\s*|\s*\{\s*,\s*\}\s*")
# A unit after the number: a wrapped phrase (``\text{ square feet}``, ``\mathrm{cm}``; one letter only with
# a space before it, so ``2\mathrm{e}`` keeps its constant) or one plain word of two letters or more,
# either maybe squared or cubed.
_POWER_SUFFIX = r"(?:\s*\^\s*\{?[23]\}?|[\u00b2\u00b3])?"
_TEXT_UNIT_RE = re.compile(
    r"(?<=[\d}])\s*\\(?:text|textrm|textnormal|textit|mathrm|mbox)\s*\{(?:\s+[A-Za-z][^{}\d$\\]*|[A-Za-z]{2,}"
    r"[^{}\d$\\]*)\}" + _POWER_SUFFIX + r"\s*$"
)
_NOT_UNITS = r"(?!(?:pi|sqrt|ln|log|exp|sin|cos|tan|and|or)\b)"
_WORD_UNIT_RE = re.compile(r"(?<=\d)\s+" + _NOT_UNITS + r"[A-Za-z]{2,}\.?" + _POWER_SUFFIX + r"\s*$")
_PERCENT_RE = re.compile(r"(?<=\d)\s*\\?%\s*$")
_CURRENCY_RE = re.compile(r"^(?:\\\$|\$(?=\s*\d)|€|£|¥)\s*")
_BASE_RE = re.compile(r"^(\d+)\s*_\s*\{?\s*(\d+)\s*\}?$")
_RELATION_RE = re.compile(r"(?<![<>!=\\])=(?!=)|\\approx(?![A-Za-z])")
# A named quantity once its subscripts, call arguments and commands are gone: letters, spaces, |, + and -.
_SUBSCRIPT_RE = re.compile(r"_\s*(?:\{(?:[^{}]|\{[^{}]*\})*\}|\\?\w+)")
_CALL_RE = re.compile(r"(?<=[A-Za-z}])\s*\([^()]*\)")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_NAME_RE = re.compile(r"[A-Za-z\s{}|+\-]*[A-Za-z][A-Za-z\s{}|+\-]*")
_NUMBER_RE = re.compile(
    r"\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d{1,3}(?: \d{3})+(?![\d.])|\d+(?:\.\d+)?|\.\d+"
)
_MULTIPLY = ("*", "\\cdot", "\\times")
_DIVIDE = ("/", "\\div")
_SHORTHAND_ARGUMENT_RE = re.compile(r"\s*(\d)")


def answer_value(raw: str) -> Fraction | None:
    """The exact value of one candidate answer string, or None (see the module's docstring)."""
    return _relation_value(clean(raw))


def clean(raw: str) -> str:
    """``raw`` less everything that never changes its value (delimiters, wrappers, separators, units...)."""
    s = raw.translate(_CHAR_TRANSLATION)
    s = _SEPARATOR_RE.sub(",", s).replace("\\,", " ").replace("\\ ", " ")
    s = _NOISE_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    while True:
        before = s
        s = _TEXT_UNIT_RE.sub("", s)
        # A stray "*" is left when bold markup was cut in half by the finder; a stray "\\" ends a line.
        s = _WRAPPER_RE.sub(r"\1", s).strip().rstrip(".\\").strip().strip("*").strip()
        for opener, closer in _SURROUNDS:
            if len(s) > len(opener) + len(closer) - 1 and s.startswith(opener) and s.endswith(closer):
                s = s[len(opener) : -len(closer)].strip()
        s = _WORD_UNIT_RE.sub("", s)
        s = _PERCENT_RE.sub("", s)
        s = _CURRENCY_RE.sub("", s)
        base = _BASE_RE.match(s)
        if base and 2 <= int(base.group(2)) <= 36 and all(int(d, 36) < int(base.group(2)) for d in base.group(1)):
            s = base.group(1)
        if s == before:
            return s


def _relation_value(s: str) -> Fraction | None:
    """The value of ``s``; of an equation chain, what follows its last sign when every side before it
    names a quantity or is arithmetic."""
    if len(s) > MAX_EXPRESSION:
        return None
    sides = _split_relation(s)
    if len(sides) == 1:
        return _arithmetic(s)
    if not all(_names_quantity(side) or _arithmetic(side) is not None for side in sides[:-1]):
        return None
    last = clean(sides[-1])
    return None if len(_split_relation(last)) > 1 else _arithmetic(last)


def _split_relation(s: str) -> list[str]:
    """``s`` split at its ``=`` and ``\\approx`` signs outside braces."""
    sides, depth, start = [], 0, 0
    for m in re.finditer(r"[{}]|" + _RELATION_RE.pattern, s):
        token = m.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
        elif depth == 0:
            sides.append(s[start:m.start()])
            start = m.end()
    sides.append(s[start:])
    return [side.strip() for side in sides]


def _names_quantity(side: str) -> bool:
    """Whether ``side`` is a name (with subscripts, call arguments, commands), or a sum of names."""
    s = _SUBSCRIPT_RE.sub("", side)
    s = _CALL_RE.sub("", s)
    s = _COMMAND_RE.sub(" ", s)
    return _NAME_RE.fullmatch(s) is not None


def _arithmetic(s: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None when ``s`` is anything else."""
    if not s or not any(c.isdigit() for c in s):
        return None
    reader = _Reader(s)
    try:
        value = reader.expression()
        reader.skip()
        return value if reader.at == len(s) else None
    except _NoValue:
        return None


class _NoValue(Exception):
    """The expression has no exact value (a symbol, a division by zero, a power too large...)."""


class _Reader:
    """A recursive-descent reader over ``s``: expression := term (("+"|"-") term)*,
    term := unary ((* / \\cdot \\times \\div | before "(") unary)*, unary := ("-"|"+") unary | power,
    power := atom ("^" unary-free atom)? "!"?, atom := number | (expr) | {expr} | \\frac a b | \\sqrt a."""

    __slots__ = ("s", "at", "depth")

    def __init__(self, s: str) -> None:
        self.s, self.at, self.depth = s, 0, 0

    def skip(self) -> None:
        while self.at < len(self.s) and self.s[self.at] == " ":
            self.at += 1

    def take(self, *tokens: str) -> str | None:
        self.skip()
        for token in tokens:
            if self.s.startswith(token, self.at) and not (
                    token[0] == "\\" and self.s[self.at + len(token):self.at + len(token) + 1].isalpha()):
                self.at += len(token)
                return token
        return None

    def expression(self) -> Fraction:
        self.depth += 1
        if self.depth > 40:
            raise _NoValue
        value = self.term()
        while (sign := self.take("+", "-")) is not None:
            value = value + self.term() if sign == "+" else value - self.term()
        self.depth -= 1
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while True:
            if self.take(*_MULTIPLY):
                value *= self.unary()
            elif self.take(*_DIVIDE):
                divisor = self.unary()
                if divisor == 0:
                    raise _NoValue
                value /= divisor
            elif self.s.startswith("(", self.at):  # 2(3): the product, as written
                value *= self.unary()
            else:
                return value

    def unary(self) -> Fraction:
        if self.take("-"):
            return -self.unary()
        if self.take("+"):
            return self.unary()
        return self.power()

    def power(self) -> Fraction:
        value = self.atom()
        if self.take("^"):
            exponent = self.atom()
            if exponent.denominator != 1:
                raise _NoValue
            bits = max(abs(value.numerator).bit_length(), abs(value.denominator).bit_length())
            if bits * abs(int(exponent)) > MAX_POWER_BITS or (value == 0 and exponent < 0):
                raise _NoValue
            value **= int(exponent)
        if self.take("!"):
            if value.denominator != 1 or not 0 <= value <= MAX_FACTORIAL:
                raise _NoValue
            result = 1
            for k in range(2, int(value) + 1):
                result *= k
            value = Fraction(result)
        return value

    def atom(self) -> Fraction:
        self.skip()
        if self.take("("):
            return self._closed(")")
        if self.take("{"):
            return self._closed("}")
        if self.take("\\frac", "\\dfrac", "\\tfrac", "\\cfrac"):
            numerator, denominator = self._argument(), self._argument()
            if denominator == 0:
                raise _NoValue
            return numerator / denominator
        if self.take("\\sqrt"):
            return _exact_root(self._argument())
        number = _NUMBER_RE.match(self.s, self.at)
        if number is None:
            raise _NoValue
        self.at = number.end()
        return Fraction(number.group().replace(",", "").replace(" ", ""))

    def _closed(self, closer: str) -> Fraction:
        value = self.expression()
        if not self.take(closer):
            raise _NoValue
        return value

    def _argument(self) -> Fraction:
        """One argument of ``\\frac`` or ``\\sqrt``: a ``{group}`` or, in LaTeX's shorthand, one digit."""
        if self.take("{"):
            return self._closed("}")
        digit = _SHORTHAND_ARGUMENT_RE.match(self.s, self.at)
        if digit is None:
            raise _NoValue
        self.at = digit.end()
        return Fraction(int(digit.group(1)))


def _exact_root(value: Fraction) -> Fraction:
    """The square root of ``value`` when it is rational, else no value."""
    if value < 0:
        raise _NoValue
    roots = []
    for part in (value.numerator, value.denominator):
        root = math.isqrt(part)
        if root * root != part:
            raise _NoValue
        roots.append(root)
    return Fraction(roots[0], roots[1])

