"""What llama.cpp can hold, checked before a load.

A context of a billion tokens was allocated until the kernel killed the run,
its 32-bit total wrapped in the message; 512 sequences failed inside
llama.cpp; 10,000 threads aborted in libgomp. Each limit is llama.cpp's own
(from the binding where it exposes it, else the constant of the vendored
source, named below) or the model's trained context (from the GGUF header),
and each excess is one line naming the option.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError

# ggml.h's GGML_MAX_N_THREADS: ggml's CPU threadpool and its CPU masks hold at most this many threads
# (the binding does not expose it; 512 in the llama.cpp of llama-cpp-python 0.3.36).
MAX_THREADS = 512
# llama_context_params.n_ctx is a uint32_t: the KV cells of all sequences together.
MAX_TOTAL_CTX = 2**32 - 1
CTX_PAD = 256  # llama.cpp rounds each sequence's context up to a multiple of this (llama-context.cpp)


def default_threads() -> int:
    """Physical cores where psutil can tell, else all logical CPUs."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:
        return os.cpu_count() or 1


def max_sequences() -> int:
    """The most sequences llama.cpp decodes together (LLAMA_MAX_SEQ, from the binding)."""
    # Imported here: RunConfig imports the limits, and importing it must not load llama.cpp.
    from . import llama

    return llama.max_sequences()


def check_batch_size(batch_size: int, *, flag: str = "--batch-size") -> None:
    """One line when llama.cpp cannot decode ``batch_size`` sequences together."""
    most = max_sequences()
    if batch_size > most:
        raise InputError(f"{flag} {batch_size}: llama.cpp decodes at most {most} sequences together "
                         f"(LLAMA_MAX_SEQ)")


def check_threads(threads: int | None) -> None:
    """One line when ggml cannot run ``threads`` threads (None: the default, always fine)."""
    if threads is not None and threads > MAX_THREADS:
        raise InputError(f"--threads {threads}: ggml runs at most {MAX_THREADS} threads (GGML_MAX_N_THREADS)")


def trained_context(model: str | Path) -> int | None:
    """The context the model was trained for (``<arch>.context_length``), or None when the header does not say."""
    from ..gguf.header import read_header

    try:
        fields = read_header(model).fields
    except Exception:  # no header to read (the fakes of the tests): nothing to check against
        return None
    return context_length(fields)


def context_length(fields: dict) -> int | None:
    """``<arch>.context_length`` of a header's fields, or None when it does not say."""
    try:
        value = int(fields[f"{fields['general.architecture']}.context_length"])
    except Exception:  # no such key: nothing to check against
        return None
    return value if value > 0 else None


def check_tensor_split(shares: Sequence[float] | None, *, visible: int | None = None) -> None:
    """One line when ``--tensor-split`` has more shares than llama.cpp's device array holds, or than the
    ``visible`` GPUs (NVML's count; None: not known)."""
    if shares is None:
        return
    from . import llama

    most = llama.max_devices()
    if len(shares) > most:
        raise InputError(f"--tensor-split has {len(shares)} shares: this llama.cpp build drives at most "
                         f"{most} devices")
    if visible is not None and len(shares) > visible:
        raise InputError(f"--tensor-split has {len(shares)} shares, and {visible} GPU(s) are visible")


def check_context(model: str | Path, *, ctx: int, batch_size: int, what: str | None = None,
                  n_ctx_train: int | None = None) -> None:
    """One line when one sequence's ``ctx`` is longer than the model was trained for, or when the context of
    ``batch_size`` sequences is more KV cells than llama.cpp counts. ``what`` names where ``ctx`` came from
    (default ``--ctx N``); ``n_ctx_train``, the trained context where the caller has read the header
    (0: it does not say), else it is read here."""
    what = what or f"--ctx {ctx}"
    trained = trained_context(model) if n_ctx_train is None else (n_ctx_train or None)
    if trained is not None and ctx > trained:
        raise InputError(f"{what} is longer than {Path(model).name} was trained for ({trained} tokens): "
                         f"lower --ctx or --max-tokens")
    padded = -(-ctx // CTX_PAD) * CTX_PAD
    if padded * batch_size > MAX_TOTAL_CTX:
        raise InputError(f"{what} x {batch_size} sequences is {padded * batch_size} KV cells, more than the "
                         f"{MAX_TOTAL_CTX} llama.cpp counts: lower --ctx, --max-tokens or --batch-size")


def check_limits(model: str | Path, *, ctx: int, batch_size: int, threads: int | None,
                 what: str | None = None, n_ctx_train: int | None = None) -> None:
    """Every limit above but the split's, before a load."""
    check_threads(threads)
    check_batch_size(batch_size)
    check_context(model, ctx=ctx, batch_size=batch_size, what=what, n_ctx_train=n_ctx_train)
