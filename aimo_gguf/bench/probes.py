"""Memory probes for one bench row: the process's peak RSS, and the GPU's through NVML.

On Linux each row resets the kernel's peak-RSS counter of this process
(``/proc/self/clear_refs``), so that its peak is its own; elsewhere RSS is
sampled. The GPU peak comes from NVML (the optional ``nvidia-ml-py`` package)
on a GPU build; without it the column stays empty.
"""

from __future__ import annotations

import os
import platform
import re
import time

from .. import __version__
from ..fit.gpus import gpu_memory, gpu_name, nvml_handle
from ..pipeline.summary import rss_mb

PROBE_INTERVAL = 0.05  # seconds between RSS / device-memory samples inside one row


def _read_vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"^VmHWM:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
        return int(m.group(1)) / 1024 if m else None
    except OSError:
        return None


def _reset_vm_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _read_vm_hwm_mb() is not None
    except OSError:
        return False


class RssProbe:
    """Peak resident memory during one row, fresh for each row.

    On Linux the kernel's high-water mark is reset at the start of the row;
    elsewhere RSS is sampled (every PROBE_INTERVAL at most) and the maximum kept.
    """

    def __init__(self) -> None:
        self.before = rss_mb()  # before the model is loaded
        self.exact = _reset_vm_hwm()
        self.sampled = self.before
        self._last = 0.0

    def sample(self, now: float | None = None) -> None:
        if self.exact:
            return
        now = time.perf_counter() if now is None else now
        if now - self._last >= PROBE_INTERVAL:
            self._last = now
            self.sampled = max(self.sampled, rss_mb())

    def peak(self) -> float:
        self._last = 0.0
        self.sampled = max(self.sampled, rss_mb())
        hwm = _read_vm_hwm_mb() if self.exact else None
        return max(self.sampled, hwm or 0.0)


class GpuProbe:
    """Peak memory in use on the GPU during one row, sampled through NVML (pynvml)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.peak_bytes = 0
        self._last = 0.0
        self.sample(force=True)
        self.before_bytes = self.peak_bytes  # in use before the row loaded anything

    @classmethod
    def open(cls, enabled: bool) -> GpuProbe | None:
        handle = nvml_handle() if enabled else None
        return cls(handle) if handle is not None else None

    def sample(self, now: float | None = None, *, force: bool = False) -> None:
        now = time.perf_counter() if now is None else now
        if not force and now - self._last < PROBE_INTERVAL:
            return
        self._last = now
        try:
            import pynvml

            self.peak_bytes = max(self.peak_bytes, int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used))
        except Exception:
            pass

    def peak_mb(self) -> float | None:
        self.sample(force=True)
        return self.peak_bytes / 2**20 if self.peak_bytes else None

    def growth_mb(self) -> float | None:
        """The peak minus what was in use when the probe opened: what the row itself took."""
        peak = self.peak_mb()
        return None if peak is None else peak - self.before_bytes / 2**20


def gpu_info(enabled: bool) -> dict:
    memory = gpu_memory() if enabled else None
    if memory is None:
        return {"gpu": None, "gpu_memory_total_mib": None}
    return {"gpu": gpu_name(), "gpu_memory_total_mib": round(memory[0] / 2**20, 1)}


def machine_info(gpu_build: bool) -> dict:
    """Where the numbers were measured."""
    import psutil

    from ..engine.backends import binding_version

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_total_mib": round(psutil.virtual_memory().total / 2**20, 1),
        "python": platform.python_version(),
        "llama_cpp_python": binding_version(),
        "aimo_gguf": __version__,
        "gpu_offload_supported": gpu_build,
        **gpu_info(gpu_build),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
