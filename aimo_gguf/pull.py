"""``aimo-gguf pull``: one GGUF file from the Hugging Face Hub into ``models/``.

The file is fetched into the shared Hugging Face cache (``HF_HOME``,
``HF_HUB_CACHE``; ``HF_TOKEN`` for gated repos; ``HF_HUB_OFFLINE=1`` serves
from the cache alone), then linked into the models folder (hard link where the
file systems allow it, else an atomic copy), so the cache and ``models/`` never
hold two copies of a multi-gigabyte file when they can share one. A Hub that
does not take a connection within ``HUB_CONNECT_SECONDS`` (no network, a name
that does not resolve) is not retried for half a minute: the cache alone is
asked at once. A repo id or file name that is not one is one line before any
of that.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from .errors import InputError, ModelError
from .gguf.files import check_gguf_file
from .outputs import refuse_special, replace_file, staging_folder

DEFAULT_MODELS_DIR = "models"
HUB_CONNECT_SECONDS = 5.0  # a Hub that does not answer a connection by then is unreachable: the cache alone
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def pull(
    repo: str,
    filename: str,
    *,
    revision: str | None = None,
    models_dir: str | Path = DEFAULT_MODELS_DIR,
    force: bool = False,
) -> Path:
    """Download ``filename`` of Hub repo ``repo`` and return its path in ``models_dir``.

    The first part of a split model (``NAME-00001-of-0000N.gguf``) brings every part, each placed
    beside the first; the path returned is the first part's, which is what ``--model`` takes."""
    from huggingface_hub import hf_hub_download

    from .gguf.parts import is_first_part, part_names

    check_repo_id(repo)
    check_filename(filename)
    if not filename.endswith(".gguf"):
        raise InputError(f"{filename!r} is not a .gguf file: aimo-gguf pulls GGUF files only")
    names = part_names(Path(filename).name)
    if names is not None and not is_first_part(Path(filename).name):
        raise InputError(f"{filename} is a later part of a split model: pull its first part, {names[0]} "
                         "(which brings every part)")
    folder = str(Path(filename).parent) if "/" in filename else ""
    files = [filename] if names is None else [f"{folder}/{n}" if folder else n for n in names]
    targets = [Path(models_dir) / Path(f).name for f in files]
    for target in targets:
        refuse_special(target, "the model")  # a folder, FIFO or device is refused before "already exists"
        if target.exists() and not force:
            raise InputError(f"{target} already exists: delete it or pass --force")
    unreachable = hub_unreachable()  # then the cache alone, at once: not half a minute of retries first
    cached = []
    for i, name in enumerate(files):
        where = f"{repo}/{name}" + (f"@{revision}" if revision else "")
        part = f" (part {i + 1} of {len(files)})" if len(files) > 1 else ""
        source = "the Hugging Face cache" if unreachable is None else f"the local cache ({unreachable})"
        print(f"aimo-gguf: fetching {where}{part} from {source}...", file=sys.stderr)
        with hub_errors(repo, revision, where, filename=name, unreachable=unreachable):
            cached.append(Path(hf_hub_download(repo_id=repo, filename=name, revision=revision,
                                               local_files_only=unreachable is not None)))
    for path in cached:
        check_gguf_file(path)
    _place_all([(path.resolve(), target) for path, target in zip(cached, targets, strict=True)])
    return targets[0]


def check_repo_id(repo: str) -> None:
    """One line unless ``repo`` is a Hub repo id (``namespace/name``), as huggingface-hub's own check says."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        reason = str(e).split(": '")[0].split(". Use `repo_type`")[0].rstrip(".")
        raise InputError(f"{repo!r} is not a Hub repo id ({reason}): give NAMESPACE/NAME, "
                         f"e.g. bartowski/Qwen2.5-Math-7B-Instruct-GGUF") from None


def check_filename(filename: str) -> None:
    """One line unless ``filename`` is a path inside a repo: relative, '/'-separated, no '.' or '..' parts."""
    parts = filename.split("/")
    if not filename or filename.startswith("/") or "\\" in filename or "\0" in filename \
            or any(part in ("", ".", "..") for part in parts):
        raise InputError(f"{filename!r} is not a file of a Hub repo: give its path inside the repo, "
                         f"like Q4_K_M/model-Q4_K_M.gguf (no leading '/', no '.' or '..' parts)")


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached now (a name that does not resolve, a refused or timed-out connection),
    or None: reachable, offline on purpose (HF_HUB_OFFLINE, served from the cache without trying), or behind
    a proxy (which may reach it where a direct connection cannot)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_SECONDS).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"
    return None


@contextmanager
def hub_errors(repo: str, revision: str | None, where: str, *, filename: str | None = None,
               unreachable: str | None = None):
    """Turn huggingface-hub's exceptions into one-line ModelErrors."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise ModelError(f"{repo} is gated: accept its licence on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelError(f"no Hub repository {repo!r} (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelError(f"{repo} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: catch it first
        why = f" ({unreachable})" if unreachable else ""
        raise ModelError(f"cannot reach the Hub{why} and {where} is not in the local cache") from None
    except EntryNotFoundError:
        raise ModelError(f"{repo} has no file {filename!r}") from None
    except OSError as e:
        raise ModelError(f"downloading {where} failed: {e.strerror or e}") from None


def _place_all(pairs: list[tuple[Path, Path]]) -> None:
    """Put each cached file at its target: every one staged first in a private folder beside them (a hard
    link where the file systems allow it, else a copy), then all renamed into place, so a failure leaves
    no part and nothing but a regular file is ever replaced."""
    folder = pairs[0][1].parent
    with staging_folder(folder, "the model") as staging:
        staged = [staging / target.name for _, target in pairs]
        for (source, target), part in zip(pairs, staged, strict=True):
            try:
                os.link(source, part)
            except OSError:  # another file system, or links not allowed: copy
                try:
                    shutil.copyfile(source, part)
                except OSError as e:
                    raise ModelError(f"cannot place {target}: {e.strerror or e}") from None
        for (_, target), part in zip(pairs, staged, strict=True):
            try:
                replace_file(part, target, "the model")
            except OSError as e:
                raise ModelError(f"cannot place {target}: {e.strerror or e}") from None
