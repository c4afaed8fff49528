"""Helpers the test tiers share: what a one-line error looks like, a hang guard, the convert script, a
legacy importance matrix."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERT_SCRIPT = ROOT / "scripts" / "convert.sh"


def assert_one_line_error(result, *fragments: str) -> str:
    """A CliRunner result: exit 2, a SystemExit (no traceback), nothing on stdout, and one
    ``Error: ...`` line on stderr holding every fragment. Returns the line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert result.stdout == ""
    return line


def table_rows(table: str) -> list[list[str]]:
    """The body rows of a markdown table (header and separator dropped)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[1].startswith("|---"), table
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """A finished subprocess: exit 2, no traceback, exactly one ``Error:`` line on stderr. Returns it."""
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def clean_env(**extra: str) -> dict:
    """This process's environment without AIMO_GGUF_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMO_GGUF_")}
    env.update(extra)
    return env


def run_convert_script(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """scripts/convert.sh with this interpreter."""
    env = clean_env(PYTHON=sys.executable, **(env_extra or {}))
    return subprocess.run([str(CONVERT_SCRIPT), *map(str, args)], capture_output=True, text=True, env=env)


@contextmanager
def time_limit(seconds: int, what: str):
    """Fail (not hang) when the block runs longer than ``seconds``: a regression test of a hang."""
    def expire(signum, frame):
        raise AssertionError(f"{what} did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def gpu_offload_supported() -> bool:
    from aimo_gguf.engine.llama import supports_gpu_offload

    return supports_gpu_offload()


def make_hub_cache(root: Path, repo_id: str, files: dict[str, bytes], commit: str, monkeypatch) -> Path:
    """A Hugging Face cache at ``root`` holding ``repo_id`` at ``commit`` with ``files``, used offline."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / sha).write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../" * (name.count("/") + 2) + f"blobs/{sha}", link)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


# Two problems the CLI tests run (tests/cli/conftest.py writes them beside a model that is never loaded).
PROBLEMS = "id,problem\na,What is 1 + 1?\nb,What is 2 + 2?\n"


def write_legacy_imatrix(path: str | Path, entries: dict, *, ncall: int = 1, chunks: int = 0,
                         dataset: str = "") -> None:
    """Write ``entries`` (name -> mean squared activations) in llama-imatrix's legacy ``.dat`` layout, whose
    values are sums over ``ncall`` calls."""
    import numpy as np

    out = [struct.pack("<i", len(entries))]
    for name, values in entries.items():
        raw = name.encode()
        v = np.asarray(values, dtype="<f4") * ncall
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, v.size), v.tobytes()]
    out.append(struct.pack("<i", chunks))
    raw = dataset.encode()
    out += [struct.pack("<i", len(raw)), raw]
    Path(path).write_bytes(b"".join(out))
