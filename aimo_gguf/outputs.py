"""The files a run writes: checked before the model loads, and written so a failure loses nothing.

- ``check_distinct``: no output may name a file the run reads (the problems,
  the model) or another output: ``-o problems.csv`` would destroy the input.
- ``check_writable``: every output location is tried (a temporary file made
  and removed in its folder) before hours of solving, so ``-o /proc/x.csv``
  fails in one line at once instead of after the run. A path that names no
  file (``''``, ``out/``) is refused first (``check_file_name``).
- ``TraceWriter``: the ``--traces`` stream. A trace file that stops accepting
  writes (a full disk, ``/dev/full``) is given up with one warning; the run
  and its submission matter more.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from .errors import InputError
from .utf8 import json_text


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode (hard links) or the same resolved path.
    A character device (``/dev/null``, ``/dev/stdout``) is no file of the run's to destroy."""
    try:
        if a.is_char_device() or b.is_char_device():
            return False
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_distinct(paths: Mapping[str, str | Path | None], *, outputs: set[str]) -> None:
    """Raise InputError when two of ``paths`` (label -> path; None = not used) name the same file
    and at least one of them is written (its label is in ``outputs``)."""
    named = [(label, Path(p)) for label, p in paths.items() if p is not None]
    for i, (label_a, a) in enumerate(named):
        for label_b, b in named[i + 1:]:
            if label_a not in outputs and label_b not in outputs:
                continue
            if not same_file(a, b):
                continue
            if label_a not in outputs:
                raise InputError(f"{label_b} {b} is {label_a}: writing it would destroy what the run reads; "
                                 f"choose another {label_b}")
            if label_b not in outputs:
                raise InputError(f"{label_a} {a} is {label_b}: writing it would destroy what the run reads; "
                                 f"choose another {label_a}")
            raise InputError(f"{label_a} and {label_b} name the same file ({a}): give each its own path")


def check_file_name(path: str | Path, what: str) -> Path:
    """``path`` as a file's path; raise InputError when it names none: an empty path, or one ending in '/'
    (or '.', '..'), which names a folder (``Path`` would drop the slash and write a file of the folder's name)."""
    text = os.fspath(path)
    if not text:
        raise InputError(f"cannot write {what}: the path is empty")
    if os.path.basename(text) in ("", ".", ".."):
        raise InputError(f"cannot write {what} to {text}: a path ending in '{text[-1]}' names a folder; "
                         f"give a file's name")
    return Path(text)


def check_writable(path: str | Path, what: str, *, replace: bool = True) -> Path:
    """Fail now, not after a long run, when ``what`` cannot be written to ``path``.

    ``replace``: the file is written whole and renamed over ``path`` (the
    submission, the summary), so ``path`` must be a regular file or absent;
    otherwise it is appended to in place (traces, journal).
    """
    path = check_file_name(path, what)
    if path.is_dir():
        raise InputError(f"cannot write {what} to {path}: it is a folder")
    if replace and path.exists() and not path.is_file():
        raise InputError(f"cannot write {what} to {path}: it is not a regular file")
    try:
        if not replace and path.exists():  # appended to in place: the file itself must take writes
            with path.open("ab"):
                pass
            return path
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".aimo-gguf-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write {what} to {path}: {e.strerror or e}") from None
    return path


def warn(message: str) -> None:
    print(f"aimo-gguf: warning: {message}", file=sys.stderr, flush=True)


class TraceWriter:
    """Streams one JSON line per finished sample to a file (or an open text stream)."""

    def __init__(self, target: str | Path | TextIO, *, append: bool = False) -> None:
        if isinstance(target, (str, Path)):
            self.name = str(target)
            try:
                self._file: TextIO | None = Path(target).open("a" if append else "w", encoding="utf-8")
            except OSError as e:
                raise InputError(f"cannot write traces to {target}: {e.strerror or e}") from None
            self._owned = True
        else:
            self.name = getattr(target, "name", "the traces stream")
            self._file = target
            self._owned = False
        self.broken = False
        self.written = 0

    def write(self, record: dict) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json_text(record) + "\n")
            self._file.flush()
            self.written += 1
        except OSError as e:
            self.broken = True
            warn(f"cannot write the traces to {self.name} ({e.strerror or e}): going on without them")
            self._drop()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                pass
            self._drop()

    def _drop(self) -> None:
        file, self._file = self._file, None
        if self._owned and file is not None:
            try:
                file.close()
            except OSError:
                pass  # what it could not write it cannot flush either: already warned

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
