"""The run journal: one line per finished problem, synced to disk, for ``--resume``.

A run appends each problem's result as soon as it is decided (JSON, written
and fsynced), so a run killed at any point, SIGKILL included, loses at most
the problems that were still running. ``--resume`` reads the journal back and
skips what it holds. The first line records the settings that decide the
answers; resuming with other settings is refused, since the submission would
mix two configurations.

- The journal is locked (``flock``) for the whole run: a second run writing the
  same output stops at once, naming the process that holds it, instead of
  interleaving its lines with the first one's.
- Without ``--resume`` an old journal is replaced only at the first new entry,
  so a run that fails to start leaves it as it was.
- A file is changed only once it is known to be a journal: its first line is
  a journal header (or a header cut short by a kill). Any other file at the
  journal's path is refused, with or without ``--resume``, before the model
  loads. A last line cut short by a kill is dropped, with a warning.
- ``--resume`` takes an entry only as ``append`` writes it: every field of a
  ``ProblemResult`` of its type, the answer in the run's answer range. Any
  other entry is refused, naming its line (the journal was edited or is not
  ours; solving that problem again would hide it).
- A journal that stops accepting writes (a full disk) is given up with one
  warning; the run and its submission go on.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import stat
import sys
import types
import typing
from dataclasses import MISSING, asdict, fields
from functools import lru_cache
from pathlib import Path

from ..config import RunConfig
from ..errors import InputError
from ..utf8 import json_text

JOURNAL_FORMAT = 1
HEADER_PREFIX = b'{"journal": '  # how every journal starts, as json.dumps writes its header
# Settings that change what a problem's answer is (batch size, threads and GPU layers do not).
ANSWER_SETTINGS = ("samples", "max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "system_prompt",
                   "raw_prompt", "stop", "ignore_eos", "min_answer", "max_answer", "modulo", "fallback_answer",
                   "early_stop", "early_stop_votes", "tir", "max_tool_calls", "tool_timeout", "tool_output_chars",
                   "tir_weight", "early_stop_lead", "stop_unanswered", "vote", "vote_floor", "keep_top", "stop_below",
                   "stop_warmup", "confidence_top_k", "group_window", "tail_window", "prompt_style",
                   "reasoning_effort", "think_reserve")


def default_journal(output: str | Path) -> Path:
    """``submission.csv`` -> ``submission.journal.jsonl``, next to the output."""
    output = Path(output)
    return output.with_name(output.stem + ".journal.jsonl")


def fingerprint(config: RunConfig, model_path: str | Path) -> dict:
    from ..gguf.parts import model_bytes

    data = {name: getattr(config, name) for name in ANSWER_SETTINGS}
    path = Path(model_path)
    data["model"] = path.name
    data["model_bytes"] = model_bytes(path) if path.exists() else None  # two files of one name differ here
    return json.loads(json.dumps(data))  # tuples -> lists, as they come back from the file


def _defaults() -> dict:
    """The answer-deciding settings at their RunConfig defaults, as a journal records them."""
    defaults = {f.name: f.default for f in fields(RunConfig) if f.name in ANSWER_SETTINGS}
    return json.loads(json.dumps(defaults))


def _header(line: str | bytes) -> dict | None:
    """A journal's first line as its header (of any format version), or None when it is not one."""
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(header, dict) and type(header.get("journal")) is int and isinstance(header.get("settings"), dict):
        return header
    return None


@lru_cache(maxsize=1)
def _entry_fields() -> tuple[tuple[str, object, bool], ...]:
    """(name, type, required) of each field a journal entry holds: a ProblemResult's but ``index``."""
    from ..solving.solver import ProblemResult

    hints = typing.get_type_hints(ProblemResult)
    return tuple((f.name, hints[f.name], f.default is MISSING) for f in fields(ProblemResult) if f.name != "index")


def entry_fault(record, *, answers: tuple[int, int]) -> str | None:
    """What keeps ``record`` from being a journal entry (a ProblemResult as ``append`` writes it, its answer
    in the range ``answers``), or None. Fields newer than the journal may be missing: they have defaults."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}"
    for name, hint, required in _entry_fields():
        if name not in record:
            if required:
                return f"its field {name!r} is missing"
            continue
        value = record[name]
        if not _fits(value, hint):
            return f"its {name} {value!r} is not {_kind(hint)}"
        if name != "answer" and isinstance(value, (int, float)) and value < 0:
            return f"its {name} {value!r} is negative"
    low, high = answers
    for answer in [record["answer"], *(record.get("mode_answers") or {}).values()]:
        if answer is not None and not low <= answer <= high:
            return f"its answer {answer} is outside the answer range {low}..{high}"
    return None


def _fits(value, hint) -> bool:
    """Whether a JSON value is of the type ``hint`` (bool, int, float, str, None, unions, list[T], dict[K, V])."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    if hint is float:  # JSON writes 1.0 as 1.0, but a float field may hold an int
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is hint or (hint is type(None) and value is None)


def _kind(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_kind(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is dict and typing.get_origin(typing.get_args(hint)[1]) is list:
        return "an object of lists of numbers"  # at_k: per series, the accuracy at each k
    return names.get(hint, "an object of answers")


def lock_holder(fd: int) -> int | None:
    """The process holding a flock on ``fd``'s file, from /proc/locks (Linux); None where unknown."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == inode and parts[4] != str(os.getpid()):
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


class Journal:
    """Appends finished problems to ``path``, holding a lock on it; with ``resume``, first reads it."""

    def __init__(self, path: str | Path, settings: dict, *, resume: bool) -> None:
        self.path = Path(path)
        self.settings = settings
        self.entries: dict[str, dict] = {}
        self._fd: int | None = None
        self._valid = False  # the file holds a journal header we may append after
        self._written = 0
        self._broken = False
        self._created = False
        self._opened = False
        self._open()
        try:
            if resume:
                self._read(settings)
            else:
                self._check_replaceable()
        except BaseException:
            self.close()
            raise

    # --- opening and reading --------------------------------------------------------------------------

    def _open(self) -> None:
        for _ in range(5):  # a run that closes as we open may unlink the file it created: open again
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._created = not self.path.exists()
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                self._fd = None
                self._warn(f"cannot write the journal {self.path} ({e.strerror or e}): going on without it "
                           f"(--resume will not see this run)")
                return
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(self._fd)
                os.close(self._fd)
                self._fd = None
                who = f"process {holder}" if holder else "another run"
                raise InputError(f"the journal {self.path} is in use by {who} (another run writing the same "
                                 f"output?): wait for it, or give this run its own --output or --journal") from None
            except OSError:
                pass  # a file system without locks: go on unlocked
            if self._still_the_path():
                self._opened = True
                return
            os.close(self._fd)
            self._fd = None
        self._warn(f"cannot hold the journal {self.path} (it keeps being replaced): going on without it")

    def _still_the_path(self) -> bool:
        try:
            here, there = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _check_replaceable(self) -> None:
        """Without --resume the file is replaced at the first entry: it must be empty or a journal."""
        if self._fd is None or not stat.S_ISREG(os.fstat(self._fd).st_mode):
            return  # a device (/dev/null, /dev/full) is never truncated: its first write fails, with a warning
        first = os.pread(self._fd, 1 << 16, 0).split(b"\n", 1)
        if first[0] and not (first[0].startswith(HEADER_PREFIX) and (len(first) == 1 or _header(first[0]))):
            raise InputError(f"{self.path} is not an aimo-gguf journal, and a run replaces only its own journal: "
                             f"give --journal another path, or move the file away")

    def _read(self, settings: dict) -> None:
        if self._fd is None:
            raise InputError(f"cannot read the journal {self.path}: run without --resume to start over")
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            raise InputError(f"{self.path} is not an aimo-gguf journal (not a regular file)")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read the journal {self.path}: {e.strerror or e}") from None
        if not data:
            return
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", errors="replace").splitlines()
        if not lines:  # no line finished: only a header cut short by a kill is ours
            if not data.startswith(HEADER_PREFIX):
                raise InputError(f"{self.path} is not an aimo-gguf journal")
            return  # replaced at the first entry
        self._check_header(lines[0], settings)
        answers = (settings["min_answer"], settings["max_answer"])
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(
                    f"{self.path}, line {number}: not JSON: delete the journal or run without --resume") from None
            fault = entry_fault(record, answers=answers)
            if fault is not None:
                raise InputError(f"{self.path}, line {number}: {fault}, not an entry aimo-gguf writes: fix or delete "
                                 f"that line, or run without --resume to start over")
            self.entries[record["id"]] = record
        self._valid = True
        if end < len(data):  # the last write was cut short: drop it, so appends start on a line of their own
            print(f"aimo-gguf: warning: ignoring the unfinished last line of {self.path} "
                  f"(the run was killed while writing it)", file=sys.stderr)
            os.ftruncate(self._fd, end)

    def _check_header(self, line: str, settings: dict) -> None:
        header = _header(line)
        if header is None:
            raise InputError(f"{self.path} is not an aimo-gguf journal")
        if header["journal"] != JOURNAL_FORMAT:
            raise InputError(f"{self.path} is an aimo-gguf journal of format {header['journal']}, and this aimo-gguf "
                             f"reads format {JOURNAL_FORMAT}: run without --resume to start over")
        # A setting newer than the journal was at its default when the journal was written.
        recorded = {**_defaults(), **header["settings"]}
        changed = sorted(k for k in set(settings) | set(recorded) if settings.get(k) != recorded.get(k))
        if changed:
            raise InputError(f"{self.path} was written with other settings ({changed[0]}: "
                             f"{recorded.get(changed[0])!r}, now {settings.get(changed[0])!r}): "
                             f"run without --resume to start over")

    # --- writing --------------------------------------------------------------------------------------

    def append(self, result) -> None:
        """Record a finished problem (a ProblemResult) durably; a failing journal warns once."""
        if self._fd is None or self._broken:
            return
        try:
            if not self._valid:  # a new journal (or an old one without --resume) starts over here
                os.ftruncate(self._fd, 0)
                self._write({"journal": JOURNAL_FORMAT, "settings": self.settings})
                self._valid = True
            entry = asdict(result)
            entry.pop("index", None)
            self._write(entry)  # not kept in memory: ``entries`` is what the journal held when opened
            self._written += 1
        except OSError as e:
            self._broken = True
            self._warn(f"cannot write the journal {self.path} ({e.strerror or e}): going on without it "
                       f"(--resume will not see this run)")

    def _write(self, record: dict) -> None:
        data = (json_text(record) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    @property
    def written(self) -> int:
        """Problems this run added."""
        return self._written

    @property
    def intact(self) -> bool:
        """Every problem this run finished is in the file (it opened, and no write failed)."""
        return self._opened and not self._broken

    def close(self) -> None:
        """Release the lock; a journal this run created and never wrote is removed."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._created and not self._valid and os.fstat(fd).st_size == 0:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _warn(self, message: str) -> None:
        print(f"aimo-gguf: warning: {message}", file=sys.stderr, flush=True)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
