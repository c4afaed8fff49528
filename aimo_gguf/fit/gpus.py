"""The GPU this process would use, as NVML (the optional ``nvidia-ml-py`` package) sees it.

``-ngl auto`` fills its free memory; ``bench`` samples its memory in use. Where
there is no NVML (a CPU machine, no driver, the package missing) every
answer is None and callers fall back to what the user gave (``--max-memory``).
"""

from __future__ import annotations

import os

_nvml: dict = {}


def nvml_handle():
    """NVML handle of the first visible GPU (``CUDA_VISIBLE_DEVICES``), or None."""
    if "handle" not in _nvml:
        handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
            index = int(visible) if visible.isdigit() else 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            handle = None
        _nvml["handle"] = handle
    return _nvml["handle"]


def gpu_memory() -> tuple[int, int, int] | None:
    """(total, used, free) bytes of the first visible GPU, or None."""
    handle = nvml_handle()
    if handle is None:
        return None
    try:
        import pynvml

        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return int(info.total), int(info.used), int(info.free)
    except Exception:
        return None


def gpu_name() -> str | None:
    handle = nvml_handle()
    if handle is None:
        return None
    try:
        import pynvml

        name = pynvml.nvmlDeviceGetName(handle)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None


def gpu_memories() -> list[tuple[int, int, int]]:
    """(total, used, free) bytes of every visible GPU (``CUDA_VISIBLE_DEVICES``), in llama.cpp's order; []
    without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            indices = list(range(pynvml.nvmlDeviceGetCount()))
        else:
            indices = [int(v) for v in visible.split(",") if v.strip().isdigit()]
        out = []
        for index in indices:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            out.append((int(info.total), int(info.used), int(info.free)))
        return out
    except Exception:
        return []
