"""The files a run writes: checked before the model loads, and written so a failure loses nothing.

- ``check_distinct``: no output may name a file the run reads (the problems,
  the model) or another output: ``-o problems.csv`` would destroy the input.
- ``check_writable``: every output location is tried (a temporary file made
  and removed in its folder) before hours of solving, so ``-o /proc/x.csv``
  fails in one line at once instead of after the run.
- ``refuse_special``: no command writes into, or replaces, anything that is
  not a regular file: a folder, a FIFO (which would hang the writer), a device
  (``/dev/full``, ``/dev/null``), a socket, or a link to one. Every command
  checks its outputs with it before its work and again at the last moment:
  ``open_regular`` opens a file without blocking and checks what it opened,
  ``replace_file`` and ``staged_file`` check the target before the rename.
- ``check_file_name``: a path that names no file (``''``, ``out/``) is refused first.
- ``TraceWriter``: the ``--traces`` stream. A trace file that stops accepting
  writes (a full disk) is given up with one warning; the run and its
  submission matter more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from .errors import AimoError, InputError
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


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a file")


def refuse_special(path: str | Path, what: str, *, error: type[AimoError] = InputError) -> None:
    """Raise ``error`` when ``path`` exists and is not a regular file (followed through links): writing
    into it would hang (a FIFO), vanish (/dev/null), fail (/dev/full) or replace what is not ours to replace."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"cannot write {what} to {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise error(f"cannot write {what} to {path}: it is {_kind(mode)}, not a regular file")


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
    """Fail now, not after a long run, when ``what`` cannot be written to ``path``: it is not a regular
    file (``refuse_special``), or its folder takes no file.

    ``replace``: the file is written whole and renamed over ``path`` (the
    submission, the summary); otherwise it is appended to in place (traces, journal).
    """
    path = check_file_name(path, what)
    refuse_special(path, what)
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


def open_regular(path: str | Path, what: str, *, append: bool = False) -> TextIO:
    """``path`` opened for writing text (truncated, or appended to), refusing anything but a regular
    file: opened without blocking (a FIFO without a reader would hang ``open``), then checked."""
    refuse_special(path, what)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise InputError(f"cannot write {what} to {path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # it became something else since the check
            raise InputError(f"cannot write {what} to {path}: it is {_kind(mode)}, not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if not append:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "a" if append else "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def replace_file(staged: str | Path, target: str | Path, what: str) -> None:
    """Rename the finished ``staged`` over ``target``, unless ``target`` has become something other than a
    regular file meanwhile (then InputError; removing ``staged`` is the caller's)."""
    refuse_special(target, what)
    os.replace(staged, target)


@contextlib.contextmanager
def staged_file(path: str | Path, what: str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write ``what`` to; renamed over ``path`` when the block
    succeeds (``replace_file``), removed whatever happens. An OSError is one line."""
    path = Path(path)
    refuse_special(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
    except OSError as e:
        raise InputError(f"cannot write {what} to {path}: {e.strerror or e}") from None
    staged = Path(name)
    try:
        yield staged
        os.chmod(staged, 0o644)
        replace_file(staged, path, what)
    except OSError as e:
        raise InputError(f"cannot write {what} to {path}: {e.strerror or e}") from None
    finally:
        staged.unlink(missing_ok=True)


@contextlib.contextmanager
def staging_folder(folder: str | Path, what: str) -> Iterator[Path]:
    """A private folder inside ``folder`` (on its file system, so a rename out of it is atomic) where
    the files of ``what`` are written before ``replace_file`` puts them in place; removed with what is left."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".aimo-gguf-staging-"))
    except OSError as e:
        raise InputError(f"cannot write {what} to {folder}: {e.strerror or e}") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def warn(message: str) -> None:
    print(f"aimo-gguf: warning: {message}", file=sys.stderr, flush=True)


class TraceWriter:
    """Streams one JSON line per finished sample to a file (or an open text stream)."""

    def __init__(self, target: str | Path | TextIO, *, append: bool = False) -> None:
        if isinstance(target, (str, Path)):
            self.name = str(target)
            self._file: TextIO | None = open_regular(target, "the traces", append=append)
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
