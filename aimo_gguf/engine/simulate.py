"""What llama.cpp itself would reserve for a configuration, without allocating it: the measured part of
the memory estimate (``aimo_gguf.fit.memory.measure``)."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import llama_cpp

from . import llama

_BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|output|compute) buffer size =\s+([\d.]+) MiB")


def simulate_buffers(path: str | Path, *, n_gpu_layers: int, n_seq_max: int, n_ctx: int, n_batch: int,
                     n_ubatch: int, n_outputs_max: int, threads: int, flash_attn: str, kv_type: str,
                     kv_unified: bool) -> dict[str, dict[str, int]] | None:
    """What llama.cpp itself reserves for a configuration, without allocating it.

    The model is loaded with ``no_alloc`` (metadata only, allocations simulated)
    and a context created over it; the compute and output buffers it would
    allocate are read from the sizes it logs, per buffer type (``CPU``,
    ``CUDA0``, ``CUDA_Host``...). The heap the load itself takes (the
    vocabulary, graph metadata) is measured too where glibc can tell. Weights
    and KV cache are not in these logs under ``no_alloc``: the caller counts
    them from the header. None when this llama.cpp cannot simulate.
    """
    params = llama_cpp.llama_model_default_params()
    if not hasattr(params, "no_alloc") or not hasattr(params, "load_mode"):
        return None
    params.no_alloc = True
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # the memory-fit pass maps nothing
    params.n_gpu_layers = n_gpu_layers
    heap_before = _heap_bytes()
    model = ctx = None
    with llama.captured_log() as lines:
        try:
            model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
            if not model:
                return None
            heap = _heap_bytes() - heap_before if heap_before is not None else None
            cparams = llama.context_params(n_seq_max=n_seq_max, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                           n_outputs_max=n_outputs_max, threads=threads, flash_attn=flash_attn,
                                           kv_type=kv_type, kv_unified=kv_unified)
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            if not ctx:
                return None
        finally:
            if ctx:
                llama_cpp.llama_free(ctx)
            if model:
                llama_cpp.llama_model_free(model)
    found: dict[str, dict[str, int]] = {"compute": {}, "output": {}, "host_heap": {}}
    for line in "".join(lines).splitlines():
        m = _BUFFER_LINE.search(line)
        if m and m.group(2) in ("compute", "output"):
            found[m.group(2)][m.group(1)] = found[m.group(2)].get(m.group(1), 0) + int(float(m.group(3)) * 2**20)
    if heap is not None:
        found["host_heap"]["CPU"] = max(0, heap)
    return found


def _heap_bytes() -> int | None:
    """Bytes glibc's malloc has handed out (mallinfo2), or None elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    info.restype = MallInfo2
    got = info()
    return int(got.uordblks + got.hblkhd)
