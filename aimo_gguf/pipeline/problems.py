"""Reading problem sets and writing Kaggle submissions.

A problems file is a table with the columns ``id`` and ``problem`` and, when
the answers are known (a validation set), ``answer``.  It may be CSV, Parquet
or JSON Lines.  Every way such a file can be unusable ends in one
:class:`~aimo_gguf.errors.InputError` whose one-line message names the file
and says what to fix; no pandas, pyarrow or json exception reaches the user.

Output files are written atomically (temporary file, fsync, rename), so a run
that is killed half-way never leaves a truncated ``submission.csv`` behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import operator
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from aimo_gguf.errors import AimoError, InputError, OutputError
from aimo_gguf.outputs import refuse_special
from aimo_gguf.utf8 import json_text, unencodable

SAMPLE_PROBLEMS = "sample"
"""Name that stands for the sample problem set shipped inside the package."""
GRADED_PROBLEMS = "graded"
"""Name of the graded set shipped inside the package: 320 word problems in five levels
(scripts/make_graded_set.py), which a 135M-270M model partly solves."""

_BUNDLED = {SAMPLE_PROBLEMS: "sample_problems.jsonl", GRADED_PROBLEMS: "graded_problems.jsonl"}
BUNDLED_SETS = tuple(_BUNDLED)

ID_COLUMN = "id"
PROBLEM_COLUMN = "problem"
ANSWER_COLUMN = "answer"
REQUIRED_COLUMNS = (ID_COLUMN, PROBLEM_COLUMN)

SUBMISSION_HEADER = ("id", "answer")

_CSV_SUFFIXES = frozenset({".csv"})
_PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUPPORTED_SUFFIXES = tuple(sorted(_CSV_SUFFIXES | _PARQUET_SUFFIXES | _JSONL_SUFFIXES))

# Excel and some editors start UTF-8 files with a byte-order mark; decoding with
# utf-8-sig drops it so the first column is "id", not "\ufeffid".
_TEXT_ENCODING = "utf-8-sig"

# Text cells that mean "answer unknown" in addition to an empty cell.
_MISSING_ANSWER_TEXT = frozenset({"", "nan", "na", "n/a", "none", "null"})

# Files we create become readable like any ordinary output file; mkstemp
# alone would leave them owner-only (0600).
_OUTPUT_FILE_MODE = 0o644

# How long a problem id or answer may be when quoted back in an error message.
_MAX_QUOTED_CHARS = 60


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem to solve.

    ``id`` is always text, exactly as in the input ("007" stays "007"), because
    the submission must repeat it verbatim: one UTF-8 cannot encode (a lone
    surrogate, from a JSON "\\ud800") is an InputError.  ``answer`` is the known
    answer when the input has an ``answer`` column and the cell is filled in.
    """

    id: str
    problem: str
    answer: int | None = None

    def __post_init__(self) -> None:
        bad = unencodable(self.id)
        if bad is not None:
            raise InputError(f"id {_quote(self.id)}: it holds {bad!r}, a character UTF-8 cannot encode (a lone "
                             "surrogate), so no submission can repeat it; fix the id")


def sample_problems_path(name: str = SAMPLE_PROBLEMS) -> Path:
    """Return the path of a problem set shipped with the package (``sample`` or ``graded``)."""
    resource = resources.files("aimo_gguf").joinpath("data", _BUNDLED[name])
    # setuptools installs package data as plain files; only an exotic zipped
    # install would give a non-filesystem resource, which readers below cannot open.
    if not isinstance(resource, Path) or not resource.is_file():
        raise AimoError(
            f"the {name} problem set is missing from the installed package ({resource}); "
            "reinstall aimo-gguf"
        )
    return resource


def read_problems(path: str | Path | None) -> list[Problem]:
    """Read a problems file (CSV, Parquet or JSON Lines), keeping its order.

    ``None`` or the name ``"sample"`` reads the sample set bundled with the
    package, ``"graded"`` the graded set.  Columns other than ``id``, ``problem`` and ``answer`` are ignored.

    Raises:
        InputError: the file is missing, unreadable, or its content is invalid.
    """
    if path is None:
        path = SAMPLE_PROBLEMS
    if isinstance(path, str) and path in _BUNDLED:
        path = sample_problems_path(path)
    path = Path(path)

    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = f"unsupported extension '{path.suffix}'" if path.suffix else "no extension"
        raise InputError(
            f"problems file {path} has {shown}; use one of {', '.join(SUPPORTED_SUFFIXES)} "
            f"(or '{SAMPLE_PROBLEMS}' or '{GRADED_PROBLEMS}' for a bundled set)"
        )
    if not path.exists():
        raise InputError(f"problems file not found: {path}; check the path")
    if not path.is_file():
        raise InputError(f"problems file {path} is not a regular file; pass the path of a file")

    if suffix in _CSV_SUFFIXES:
        rows = _read_csv(path)
    elif suffix in _PARQUET_SUFFIXES:
        rows = _read_parquet(path)
    else:
        rows = _read_jsonl(path)
    return _build_problems(path, rows)


def write_submission(path: str | Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write a Kaggle submission CSV (header ``id,answer``) atomically.

    Rows are streamed in the given order; each answer must be an integer
    (``int`` or a NumPy integer).

    Raises:
        OutputError: the file cannot be written (bad folder, no permission, full disk).
        TypeError: an answer is not an integer; that is a bug in the caller.
    """
    with _atomic_text_file(path, "the submission") as handle:
        # "\n" rather than csv's default "\r\n": Kaggle accepts both, and
        # plain newlines diff cleanly against files made anywhere else.
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUBMISSION_HEADER)
        for problem_id, answer in rows:
            # operator.index rejects floats and strings such as "12", so a wrong
            # answer type fails here instead of producing a malformed submission.
            writer.writerow((str(problem_id), operator.index(answer)))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in insertion order) atomically.

    Raises:
        OutputError: the file cannot be written (bad folder, no permission, full disk).
        TypeError, ValueError: ``obj`` is not JSON-serialisable; that is a bug in the caller.
    """
    with _atomic_text_file(path, "the JSON") as handle:
        # allow_nan=False: Infinity and NaN are not JSON; a caller that has them has a bug
        handle.write(json_text(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


# --------------------------------------------------------------------------
# Readers.  Each yields (location, fields) per row, where location names the
# row for error messages ("row 3", "line 7") and fields maps column -> value.
# --------------------------------------------------------------------------

_Row = tuple[str, dict[str, Any]]


def _read_csv(path: Path) -> list[_Row]:
    # Imported here so that importing this module (e.g. only to write a
    # submission) does not pay for pandas.
    import pandas as pd

    try:
        # dtype=str keeps ids like "007" intact; keep_default_na=False keeps ids
        # like "NA" as text, and leaves empty answer cells as "" (unknown).
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=_TEXT_ENCODING)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"problems file {path} is empty; it needs a header row with "
            f"'{ID_COLUMN}' and '{PROBLEM_COLUMN}' and at least one problem"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read problems file {path}: it is not UTF-8 text; save it as UTF-8 CSV") from None
    except (OSError, ValueError) as exc:  # pandas' ParserError is a ValueError
        raise InputError(f"cannot read problems file {path}: {_one_line(exc)}; fix the CSV") from None
    return _frame_rows(path, frame)


def _read_parquet(path: Path) -> list[_Row]:
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(
            f"cannot read problems file {path}: {_one_line(exc)}; is it really a Parquet file?"
        ) from None
    return _frame_rows(path, frame)


def _frame_rows(path: Path, frame: Any) -> list[_Row]:
    columns = [str(column) for column in frame.columns]
    _check_columns(path, columns, where="")
    wanted = [c for c in (ID_COLUMN, PROBLEM_COLUMN, ANSWER_COLUMN) if c in columns]
    records = frame[wanted].to_dict(orient="records")
    # Rows are numbered from 1, counting data rows only: a CSV line number
    # would be wrong as soon as a problem text spans several lines.
    return [(f"row {number}", record) for number, record in enumerate(records, start=1)]


def _read_jsonl(path: Path) -> list[_Row]:
    try:
        text = path.read_text(encoding=_TEXT_ENCODING)
    except UnicodeDecodeError:
        raise InputError(f"cannot read problems file {path}: it is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read problems file {path}: {_one_line(exc)}") from None

    rows: list[_Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) carry no record
        location = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"problems file {path}: {location} is not valid JSON ({exc.msg}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise InputError(
                f"problems file {path}: {location} is a JSON {_json_kind(record)}, not an object; "
                f"each line must look like {{\"{ID_COLUMN}\": ..., \"{PROBLEM_COLUMN}\": ...}}"
            )
        _check_columns(path, list(record), where=f"{location} ")
        rows.append((location, record))
    return rows


def _check_columns(path: Path, found: list[str], where: str) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in found]
    if not missing:
        return
    kind = "field" if where else "column"
    plural = "s" if len(missing) > 1 else ""
    found_text = ", ".join(repr(c) for c in found) if found else "none"
    subject = f"problems file {path}: {where}" if where else f"problems file {path} "
    raise InputError(
        f"{subject}is missing {kind}{plural} "
        f"{', '.join(repr(c) for c in missing)} ({kind}s found: {found_text}); "
        f"it needs '{ID_COLUMN}' and '{PROBLEM_COLUMN}', optionally '{ANSWER_COLUMN}'"
    )


# --------------------------------------------------------------------------
# Validation shared by all formats.
# --------------------------------------------------------------------------


def _build_problems(path: Path, rows: list[_Row]) -> list[Problem]:
    if not rows:
        raise InputError(
            f"problems file {path} contains no problems; add at least one row with "
            f"'{ID_COLUMN}' and '{PROBLEM_COLUMN}'"
        )
    problems: list[Problem] = []
    seen: dict[str, str] = {}  # id -> location of its first occurrence
    for location, record in rows:
        problem_id = _clean_id(path, location, record.get(ID_COLUMN))
        if problem_id in seen:
            raise InputError(
                f"problems file {path}: duplicate id {_quote(problem_id)} "
                f"({seen[problem_id]} and {location}); every id must be unique"
            )
        seen[problem_id] = location

        text = record.get(PROBLEM_COLUMN)
        if _is_missing(text) or (isinstance(text, str) and not text.strip()):
            raise InputError(
                f"problems file {path}: problem {_quote(problem_id)} ({location}) "
                "has empty problem text; fill it in or remove the row"
            )
        if not isinstance(text, str):
            raise InputError(
                f"problems file {path}: problem {_quote(problem_id)} ({location}) "
                f"has problem text of type {type(text).__name__}; it must be text"
            )

        answer = _clean_answer(path, location, problem_id, record.get(ANSWER_COLUMN))
        try:
            problems.append(Problem(id=problem_id, problem=text, answer=answer))
        except InputError as e:
            raise InputError(f"problems file {path}: {location}: {e}") from None
    return problems


def _clean_id(path: Path, location: str, value: Any) -> str:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        raise InputError(
            f"problems file {path}: {location} has an empty id; give every problem a unique id"
        )
    if isinstance(value, str):
        return value  # verbatim: the submission must repeat the id exactly
    # Parquet and JSON can hold numeric ids; Kaggle ids are text, so convert.
    # An integer column with gaps comes back as floats (7.0), hence the second case.
    # A JSON true is no id (it would be written as 1).
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return str(int(value))
    raise InputError(
        f"problems file {path}: {location} has id {_quote(value)} of type "
        f"{type(value).__name__}; ids must be text or whole numbers"
    )


def _clean_answer(path: Path, location: str, problem_id: str, value: Any) -> int | None:
    """Turn an answer cell into an int; empty or NaN means "unknown" (None)."""
    if _is_missing(value):
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None  # True/False is never a meant answer, though bool is an int
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        number = _integral_float(float(value))
    elif isinstance(value, str):
        stripped = value.strip()
        if stripped.lower() in _MISSING_ANSWER_TEXT:
            return None
        try:
            number = int(stripped)
        except ValueError:
            try:
                number = _integral_float(float(stripped))  # "42.0", "1e3"
            except ValueError:
                number = None
    if number is None:
        raise InputError(
            f"problems file {path}: answer {_quote(value)} of problem {_quote(problem_id)} "
            f"({location}) is not an integer; use a whole number or leave it empty"
        )
    return number


def _integral_float(value: float) -> int | None:
    if math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA/NaT: what an empty cell reads back as."""
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    # pd.NA and NaT: compared lazily by type name to avoid importing pandas here.
    return type(value).__name__ in {"NAType", "NaTType"}


def _quote(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 4] + "...'"
    return text


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (pandas' often span several)."""
    # Trailing full stops would clash with the "; what to do" we append.
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


# --------------------------------------------------------------------------
# Atomic writes.
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_text_file(path: str | Path, what: str) -> Iterator[TextIO]:
    """Yield a text handle whose content replaces ``path`` only on success.

    The temporary file lives in the destination folder so that ``os.replace``
    is a same-filesystem rename, which is atomic: readers see either the old
    file or the complete new one.  On any error the temporary file is removed
    and the destination is left untouched.
    """
    path = Path(path)
    refuse_special(path, what, error=OutputError)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_one_line(exc)}") from None

    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, _OUTPUT_FILE_MODE)
        refuse_special(path, what, error=OutputError)  # a FIFO or a device there now is not replaced
        os.replace(temp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp_path.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {_one_line(exc)}") from None
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable; best effort, as not every OS allows it."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
