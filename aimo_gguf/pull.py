"""``aimo-gguf pull``: one GGUF file from the Hugging Face Hub into ``models/``.

The file is fetched into the shared Hugging Face cache (``HF_HOME``,
``HF_HUB_CACHE``; ``HF_TOKEN`` for gated repos; ``HF_HUB_OFFLINE=1`` serves
from the cache alone), then linked into the models folder (hard link where the
file systems allow it, else an atomic copy), so the cache and ``models/`` never
hold two copies of a multi-gigabyte file when they can share one.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, ModelError
from .models import check_gguf_file
from .outputs import check_writable, replace_file, staging_folder

DEFAULT_MODELS_DIR = "models"


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

    from .gguf_split import is_first_part, part_names

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
        check_writable(target, "the model")  # a folder, FIFO or device is refused before "already exists"
        if target.exists() and not force:
            raise InputError(f"{target} already exists: delete it or pass --force")
    cached = []
    for i, name in enumerate(files):
        where = f"{repo}/{name}" + (f"@{revision}" if revision else "")
        part = f" (part {i + 1} of {len(files)})" if len(files) > 1 else ""
        print(f"aimo-gguf: fetching {where}{part} into the Hugging Face cache...", file=sys.stderr)
        with hub_errors(repo, revision, where, filename=name):
            cached.append(Path(hf_hub_download(repo_id=repo, filename=name, revision=revision)))
    for path in cached:
        check_gguf_file(path)
    _place_all([(path.resolve(), target) for path, target in zip(cached, targets, strict=True)])
    return targets[0]


@contextmanager
def hub_errors(repo: str, revision: str | None, where: str, *, filename: str | None = None):
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
        raise ModelError(f"cannot reach the Hub and {where} is not in the local cache") from None
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
