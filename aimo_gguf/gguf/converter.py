"""llama.cpp's ``convert_hf_to_gguf.py``: where it is, fetching it once, and running it.

The converter of the llama.cpp that the installed llama-cpp-python was built
from comes from that version's sdist (fetched with pip into aimo-gguf's cache,
only the script, its package and gguf-py extracted), unless ``LLAMA_CPP_DIR``
names a checkout.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from pathlib import Path

from ..errors import InputError, ModelError

CONVERTER = "convert_hf_to_gguf.py"
# Needed next to the converter script (newer llama.cpp splits it into a package).
CONVERTER_PARTS = (CONVERTER, "conversion", "gguf-py", "LICENSE")


def find_converter(llama_cpp_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """The folder holding ``convert_hf_to_gguf.py``: ``llama_cpp_dir`` (or ``LLAMA_CPP_DIR``),
    else the one extracted from llama-cpp-python's sdist into the cache, fetched with pip
    the first time."""
    llama_cpp_dir = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if llama_cpp_dir:
        folder = Path(llama_cpp_dir)
        if not (folder / CONVERTER).is_file():
            raise InputError(f"{folder} has no {CONVERTER}: LLAMA_CPP_DIR must name a llama.cpp checkout")
        return folder
    from ..engine.backends import binding_version

    version = binding_version()
    folder = cache_dir() / f"llama.cpp-{version}"
    if (folder / CONVERTER).is_file():
        return folder
    if progress:
        print(f"aimo-gguf: fetching llama.cpp's converter from the llama-cpp-python {version} sdist (once)...", file=sys.stderr, flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="aimo-gguf-sdist-") as tmp:
            return _fetch_converter(version, tmp, folder)
    except (OSError, tarfile.TarError) as e:
        raise ModelError(f"cannot set up llama.cpp's converter in {folder} ({e}): "
                         f"set AIMO_GGUF_CACHE to a writable folder or LLAMA_CPP_DIR to a checkout") from None


def _fetch_converter(version: str, tmp: str, folder: Path) -> Path:
    """Download the sdist with pip (its index, cache and --find-links settings) and extract it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={version}", "-d", tmp, "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not archives:
        last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
        raise ModelError(f"cannot fetch the llama-cpp-python {version} sdist ({last}): "
                         f"set LLAMA_CPP_DIR to a llama.cpp checkout of the same version")
    return extract_converter(archives[0], folder)


def extract_converter(sdist: str | Path, folder: str | Path) -> Path:
    """Extract the converter (script, its package, gguf-py) of a llama-cpp-python sdist into ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder.parent))
    try:
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and parts[3] in CONVERTER_PARTS:
                    members.append((Path(*parts[3:]), m))
            if not any(str(name) == CONVERTER for name, _ in members):
                raise ModelError(f"{sdist} carries no vendor/llama.cpp/{CONVERTER}")
            _extract(tar, members, staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is not
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _extract(tar: tarfile.TarFile, members: list[tuple[Path, tarfile.TarInfo]], into: Path) -> None:
    """Write regular files and folders only, each inside ``into``: what ``extractall(filter="data")``
    allows, without the ``filter`` argument that Python 3.10.0-3.10.11 lack."""
    for name, member in members:
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            continue  # links, devices and paths that climb out are never needed and never written
        target = into / name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        with source, target.open("wb") as out:
            shutil.copyfileobj(source, out)
        target.chmod(0o755 if member.mode & 0o111 else 0o644)


def cache_dir() -> Path:
    """aimo-gguf's cache: ``$AIMO_GGUF_CACHE``, else ``$XDG_CACHE_HOME/aimo-gguf`` (``~/.cache/aimo-gguf``)."""
    if os.environ.get("AIMO_GGUF_CACHE"):
        return Path(os.environ["AIMO_GGUF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aimo-gguf"


def supported_architectures(converter: Path) -> frozenset[str]:
    """The Hugging Face ``architectures`` names this converter handles (text models)."""
    done = subprocess.run([sys.executable, str(converter / CONVERTER), "--print-supported-models"],
                          capture_output=True, text=True, env=_converter_env())
    names, section = set(), None
    for line in (done.stdout + done.stderr).splitlines():
        line = line.strip()
        if line.endswith("models:"):
            section = line.split()[0]
        elif line.startswith("- ") and section == "TEXT":
            names.add(line[2:].strip())
    if not names:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{converter / CONVERTER} cannot list its architectures: {last}")
    return frozenset(names)


def run_converter(converter: Path, model_dir: Path, out: Path, outtype: str) -> None:
    """Run ``convert_hf_to_gguf.py`` on ``model_dir`` into ``out``; its last error line on failure."""
    cmd = [sys.executable, str(converter / CONVERTER), str(model_dir), "--outtype", outtype, "--outfile", str(out)]
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          env=_converter_env()) as proc:
        for line in proc.stdout:
            tail.append(line.rstrip())
    if proc.returncode != 0 or not out.is_file():
        message = _converter_error(list(tail))
        if "No space left" in message or shutil.disk_usage(out.parent).free < 64 * 2**20:
            raise OSError(errno.ENOSPC, message)  # numpy says only "N requested and M written"
        raise ModelError(f"convert_hf_to_gguf.py failed on {model_dir}: {message}")


def _converter_env() -> dict:
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, of its own version
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _converter_error(lines: list[str]) -> str:
    for line in reversed(lines):
        m = re.match(r"^(?:[A-Za-z_.]*(?:Error|Exception)|ERROR:[\w.-]+):\s*(.+)$", line)
        if m:
            return m.group(1).strip()
    return next((line for line in reversed(lines) if line.strip()), "it printed nothing")
