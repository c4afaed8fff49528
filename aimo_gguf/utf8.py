"""Text leaving Python as UTF-8, which must never fail.

A Python string can hold code points that UTF-8 cannot encode: lone
surrogates (``\\ud800``). They come from a JSON ``\\ud800`` escape (a problems
file, a sandboxed tool's output: ``print(chr(55296))``) and from command-line
bytes that were not UTF-8 (Python decodes argv with ``surrogateescape``).
``str.encode`` raises on them, and one such character in one sample once ended
a whole run. So every place where text meets an encoder goes through here:

- ``utf8``: what a model reads (tokenizing, stop strings): each such code point
  becomes U+FFFD, as any undecodable byte does;
- ``json_text``: what a file keeps (journal, traces, summary): such a code
  point is written as its ``\\uXXXX`` escape, which reads back exactly.
"""

from __future__ import annotations

import json
import re

_SURROGATE = re.compile("[\ud800-\udfff]")  # the only code points UTF-8 has no encoding for


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a code point UTF-8 cannot encode (a lone surrogate) becomes U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def unencodable(text: str) -> str | None:
    """The first code point of ``text`` that UTF-8 cannot encode, or None."""
    found = _SURROGATE.search(text)
    return found.group() if found else None


def json_text(obj, **options) -> str:
    """``json.dumps(obj, ensure_ascii=False, **options)`` that UTF-8 can always encode: a lone surrogate is
    written as the ``\\uXXXX`` escape ``ensure_ascii`` would give it (JSON's structure is ASCII, so such a
    code point can only be inside a string), and other text stays readable."""
    text = json.dumps(obj, ensure_ascii=False, **options)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
