"""The run journal: one line per finished problem, synced to disk, for ``--resume``.

A run appends each problem's result as soon as it is decided (JSON, flushed
and fsynced), so a run killed at any point, SIGKILL included, loses at most
the problems that were still running. ``--resume`` reads the journal back and
skips what it holds. The first line records the settings that decide the
answers; resuming with other settings is refused, since the submission would
mix two configurations. A last line cut short by a kill is ignored, with a
warning.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from .config import RunConfig
from .errors import InputError

JOURNAL_FORMAT = 1
# Settings that change what a problem's answer is (batch size, threads and GPU layers do not).
ANSWER_SETTINGS = ("samples", "max_tokens", "temperature", "top_k", "top_p", "min_p", "seed", "system_prompt",
                   "raw_prompt", "stop", "ignore_eos", "min_answer", "max_answer", "modulo", "fallback_answer",
                   "early_stop", "early_stop_votes", "tir", "max_tool_calls", "tool_timeout", "tool_output_chars",
                   "tir_weight")


def default_journal(output: str | Path) -> Path:
    """``submission.csv`` -> ``submission.journal.jsonl``, next to the output."""
    output = Path(output)
    return output.with_name(output.stem + ".journal.jsonl")


def fingerprint(config: RunConfig, model_path: str | Path) -> dict:
    data = {name: getattr(config, name) for name in ANSWER_SETTINGS}
    path = Path(model_path)
    data["model"] = path.name
    data["model_bytes"] = path.stat().st_size if path.exists() else None  # two files of one name differ here
    return json.loads(json.dumps(data))  # tuples -> lists, as they come back from the file


class Journal:
    """Appends finished problems to ``path``; with ``resume``, first reads what is there."""

    def __init__(self, path: str | Path, settings: dict, *, resume: bool) -> None:
        self.path = Path(path)
        self.settings = settings
        self.entries: dict[str, dict] = {}
        self._cut_tail = False
        self._has_header = False
        self._file = None  # opened at the first entry: a run that fails to start leaves the old journal
        self._broken = False
        if resume and self.path.exists():
            self._read(settings)

    def _open(self) -> None:
        mode = "a" if self._has_header else "w"  # a journal without its header line starts over
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open(mode, encoding="utf-8")
        if mode == "w":
            self._write({"journal": JOURNAL_FORMAT, "settings": self.settings})
            self._has_header = True

    def _read(self, settings: dict) -> None:
        self._cut_tail = False
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read the journal {self.path}: {e.strerror or e}") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):  # no newline at the end: the last write was cut short
            self._cut_tail = True
            with self.path.open("r+b") as f:  # drop it, so appends start on a line of their own
                f.truncate(end)
        lines = data.decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            if number == len(lines) and self._cut_tail:
                print(f"aimo-gguf: warning: ignoring the unfinished last line of {self.path} "
                      f"(the run was killed while writing it)", file=sys.stderr)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(
                    f"{self.path}, line {number}: not JSON: delete the journal or run without --resume") from None
            if number == 1:
                self._has_header = True
                if not isinstance(record, dict) or record.get("journal") != JOURNAL_FORMAT or "settings" not in record:
                    raise InputError(f"{self.path} is not an aimo-gguf journal")
                changed = sorted(k for k in set(settings) | set(record["settings"])
                                 if settings.get(k) != record["settings"].get(k))
                if changed:
                    was = record["settings"].get(changed[0])
                    raise InputError(f"{self.path} was written with other settings ({changed[0]}: {was!r}, now "
                                     f"{settings.get(changed[0])!r}): run without --resume to start over")
                continue
            if isinstance(record, dict) and "id" in record and "answer" in record:
                self.entries[str(record["id"])] = record

    def append(self, result) -> None:
        """Record a finished problem (a ProblemResult) durably.

        A journal that cannot be written (disk full, I/O error) is given up
        with one warning: the run and its submission matter more.
        """
        if self._broken:
            return
        try:
            if self._file is None:
                self._open()
            entry = asdict(result)
            entry.pop("index", None)
            self._write(entry)  # not kept in memory: ``entries`` is what the journal held when opened
        except OSError as e:
            self._broken = True
            print(f"aimo-gguf: warning: cannot write the journal {self.path} ({e.strerror or e}): "
                  f"going on without it (--resume will not see this run)", file=sys.stderr)

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
