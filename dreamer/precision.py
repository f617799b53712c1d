"""bf16 autocast where it pays: on CUDA, and on CPUs with bf16 kernels.

Every ``bf16`` key of the config (``tokenizer.bf16``, ``phase0.bf16`` … ``phase3.bf16``) asks for bf16 autocast with
float32 master weights. On a GPU, and on a CPU with AVX512-BF16 (README, "bf16 and torch.compile on the CPU"), that
is 2-3x faster than float32. On a CPU without oneDNN's bf16 kernels (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``
is False: no AVX512, e.g. AVX2 only) PyTorch computes bf16 the slow way, and the same settings run about 13x
*slower* (``bench/bench_dynamics.py``, the state preset's phase-1 step: 0.66 s in float32 against 8.7 s under bf16
autocast, an AMD EPYC with AVX2). So a preset written for a fast machine does not cost a slow one ten times its
time: there, :func:`use_bf16` runs float32 and says so once per key. (AVX512 without its BF16 extension passes the
check and keeps bf16: not measured here.) ``DREAMER_CPU_BF16=1`` forces bf16 on any CPU (the CPU rehearsal of the
CUDA tests sets it, to exercise the bf16 paths).

The choice changes numbers, not meaning: bf16 results differ from float32 ones by rounding. A latent cache
remembers the ``tokenizer.bf16`` it was asked for, not the precision it ran in, so a cache built on either kind of
CPU is reused on the other.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import nullcontext
from pathlib import Path

import torch

log = logging.getLogger(__name__)
FORCE_ENV = "DREAMER_CPU_BF16"  # "1": bf16 autocast on any CPU
_warned: set[str] = set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512 and up; without the check: AVX512-BF16 / AMX flags)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(requested: bool, device: torch.device | str, key: str) -> bool:
    """Whether the config key ``key`` (``requested``) gets bf16 autocast on ``device``: yes off the CPU, and on a
    CPU with bf16 kernels or ``DREAMER_CPU_BF16=1``; otherwise float32, with one warning per key."""
    if not requested:
        return False
    if torch.device(device).type != "cpu" or os.environ.get(FORCE_ENV) == "1" or cpu_has_native_bf16():
        return True
    if key not in _warned:
        _warned.add(key)
        log.warning("%s=true, but this CPU has no bf16 kernels (no AVX512), where bf16 autocast is about 13x slower "
                    "than float32: running in float32 (set %s=false to silence this, %s=1 to force bf16; "
                    "dreamer/precision.py)", key, key, FORCE_ENV)
    return False


def autocast(requested: bool, device: torch.device | str, key: str):
    """bf16 autocast on ``device`` when :func:`use_bf16` says so, else a context that changes nothing."""
    if not use_bf16(requested, device, key):
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
