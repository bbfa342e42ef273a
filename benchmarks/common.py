"""Helpers shared by the benchmark scripts: peak memory, device synchronisation, the environment line.

Peak memory on the CPU is the process's resident set: Linux keeps its high-water mark (``VmHWM`` in
``/proc/self/status``), and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS, so the peak of
one section can be measured on its own (``resource.getrusage`` reports a high-water mark that never resets, and
``tracemalloc`` does not see PyTorch's allocations). Where ``/proc`` cannot be written the section's peak falls
back to the growth of ``ru_maxrss``, which is only a lower bound. On CUDA it is ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``.
"""

from __future__ import annotations

import gc
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["PeakMemory", "synchronize", "resolve_device", "environment", "median", "time_call"]

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _ru_maxrss_bytes() -> int:
    # kilobytes on Linux, bytes on macOS
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


class PeakMemory:
    """Context manager measuring the peak memory of a section of code.

    Attributes (after the ``with`` block):
        peak_mib: the peak during the section: resident set size on the CPU, allocated tensor memory on CUDA.
        delta_mib: ``peak_mib`` minus the value when the section started (what the section added).
        method: how it was measured (``VmHWM``, ``ru_maxrss`` or ``cuda.max_memory_allocated``).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.peak_mib = float("nan")
        self.delta_mib = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda.max_memory_allocated"
        elif _reset_rss_peak() and _status_kib("VmHWM") is not None:
            self._start = (_status_kib("VmRSS") or 0) * 1024
            self.method = "VmHWM"
        else:
            self._start = _ru_maxrss_bytes()
            self.method = "ru_maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.method.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "VmHWM":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _ru_maxrss_bytes()
        self.peak_mib = peak / MIB
        self.delta_mib = max(peak - self._start, 0) / MIB


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine (use --device cpu).")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock times are complete (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and the hardware, for the header line and the JSON output."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of ``fn()`` in seconds, synchronising the device before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start
