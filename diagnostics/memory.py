"""Memory in use: CUDA allocator figures on a GPU, the process RSS otherwise (psutil or /proc)."""

from __future__ import annotations

import resource
import sys

import torch

from diagnostics.report import OK, WARN, Check

MiB = 2**20


def _proc_kib(path: str, key: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_memory() -> tuple[float, float | None, float | None]:
    """(RSS MiB, system total MiB, system available MiB); the last two None when unknown."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return psutil.Process().memory_info().rss / MiB, vm.total / MiB, vm.available / MiB
    except ImportError:
        pass
    rss = _proc_kib("/proc/self/status", "VmRSS")
    if rss is None:  # peak RSS; KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak // 1024 if sys.platform == "darwin" else peak
    total, avail = _proc_kib("/proc/meminfo", "MemTotal"), _proc_kib("/proc/meminfo", "MemAvailable")
    return rss / 1024, total / 1024 if total else None, avail / 1024 if avail else None


def check_memory(device: torch.device, warn_frac: float) -> Check:
    if device.type == "cuda":
        alloc = torch.cuda.memory_allocated(device) / MiB
        reserved = torch.cuda.memory_reserved(device) / MiB
        total = torch.cuda.get_device_properties(device).total_memory / MiB
        ok = reserved <= warn_frac * total
        return Check("memory/cuda_mib", OK if ok else WARN, round(alloc, 1),
                     f"reserved {reserved:.0f} of {total:.0f} MiB (< {warn_frac:.0%})",
                     "" if ok else "the GPU is nearly full: lower the batch size or clip length, or enable bf16")
    rss, total, avail = process_memory()
    ok = total is None or avail is None or avail >= (1 - warn_frac) * total
    expected = f"system {total - avail:.0f} of {total:.0f} MiB in use (< {warn_frac:.0%})" if total and avail \
        else "system memory not nearly full"
    return Check("memory/rss_mib", OK if ok else WARN, round(rss, 1), expected,
                 "" if ok else "system memory is nearly exhausted: lower batch size / clip length or stop other jobs")
