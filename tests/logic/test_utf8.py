"""Text UTF-8 cannot encode (lone surrogates) at every place text meets an encoder: never an error.

Issue 20: one ``print(chr(55296))`` in one sample's code ended the whole run (a
``UnicodeEncodeError`` from tokenizing the tool's output), and a JSONL problem
holding ``"\\ud800"`` was a traceback. Each test here is a property over many
such texts: what reads the text (a tokenizer, a stop string, a seed) gets it with
U+FFFD in place of each such code point; what keeps it (journal, traces,
summary) writes a ``\\uXXXX`` escape that reads back exactly.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from aimo_gguf.config import RunConfig
from aimo_gguf.engine.slot import StopMatcher
from aimo_gguf.outputs import TraceWriter
from aimo_gguf.pipeline.journal import Journal, fingerprint
from aimo_gguf.pipeline.problems import write_json_atomic
from aimo_gguf.solving.solver import ProblemResult, sample_seed

# Lone high and low surrogates anywhere, a pair that Python keeps as two code points, the argv form of a
# byte that was not UTF-8 (surrogateescape), next to ASCII, accents, CJK, emoji and control characters.
HOSTILE = [
    "\ud800", "a\ud800", "\ud800b", "x\udfffy", "\ud83d\ude00", "\udcff.gguf", "π\ud800漢😀", "\x00\ud800\n",
    "\\boxed{\udc80}", "\ud800" * 50, "ok", "", "émoji 😀 漢字",
]


def _plain(text: str) -> str:
    """What a reader of ``text`` gets: each code point UTF-8 cannot encode as U+FFFD."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _kept(obj):
    """What a JSON file keeps of ``obj``: exactly it, but that JSON reads an escaped surrogate pair as the
    one character it encodes (as ``json.dumps``' own escapes do)."""
    return json.loads(json.dumps(obj))


@pytest.mark.parametrize("text", HOSTILE)
def test_utf8_never_fails_and_changes_only_what_utf8_cannot_encode(text):
    from aimo_gguf.utf8 import unencodable, utf8

    data = utf8(text)
    expected = _plain(text)
    assert data.decode("utf-8") == expected
    assert (unencodable(text) is None) == (expected == text)
    if expected == text:
        assert data == text.encode("utf-8")  # encodable text is untouched


@pytest.mark.parametrize("text", HOSTILE)
def test_json_text_always_encodes_and_reads_back_exactly(text):
    from aimo_gguf.utf8 import json_text

    obj = {"id": text, text: [text, {"nested": text}], "n": 1, "none": None}
    written = json_text(obj, indent=2)
    written.encode("utf-8")  # no UnicodeEncodeError
    assert json.loads(written) == _kept(obj)
    if _plain(text) == text:
        assert written == json.dumps(obj, ensure_ascii=False, indent=2)  # readable as before


@pytest.mark.parametrize("text", HOSTILE)
def test_a_stop_string_of_any_text_matches_its_utf8_bytes(text):
    matcher = StopMatcher([text])
    if text:
        stop = _plain(text).encode()
        assert matcher.find(bytearray(b"so " + stop), len(stop)) == 3


@pytest.mark.parametrize("problem_id", HOSTILE)
def test_a_seed_for_any_id_and_the_same_seed_as_before_for_encodable_ones(problem_id):
    seed = sample_seed(7, problem_id, 2)
    assert 0 <= seed < 2**32
    if _plain(problem_id) == problem_id:
        digest = hashlib.blake2b(f"7:{problem_id}:2".encode(), digest_size=4).digest()
        assert seed == int.from_bytes(digest, "little")  # journals and reruns keep their seeds


def _result(problem_id: str) -> ProblemResult:
    return ProblemResult(index=0, id=problem_id, answer=1, votes=1, valid=1, samples=1, fallback=False,
                         too_long=False, early_stopped=False, majority=True, correct=None)


@pytest.mark.parametrize("text", HOSTILE)
def test_the_files_a_run_keeps_take_any_text(tmp_path, text):
    """The journal (and --resume reading it), the traces and the summary."""
    config = RunConfig(system_prompt=text or "s", stop=(text,))  # settings from argv land in the header
    settings = fingerprint(config, tmp_path / f"m{text}.gguf")
    journal = tmp_path / "j.jsonl"
    with Journal(journal, settings, resume=False) as j:
        j.append(_result(text or "id"))
        assert j.intact
    with Journal(journal, _kept(settings), resume=True) as j:
        assert list(j.entries) == [_kept(text) or "id"]
    with TraceWriter(tmp_path / "t.jsonl") as traces:
        traces.write({"id": text, "text": text})
        assert not traces.broken
    assert json.loads((tmp_path / "t.jsonl").read_text(encoding="utf-8")) == _kept({"id": text, "text": text})
    write_json_atomic(tmp_path / "s.json", {"model": text, "notes": [text]})
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == _kept({"model": text, "notes": [text]})
