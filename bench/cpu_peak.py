"""What the CPU benchmarks report beside their rates, without importing `dreamer` (bench_peer.py runs this in the
peer's scratch venv too): the measured matmul peak and the thread settings."""

from __future__ import annotations

import os
import time


def matmul_gflops(n: int = 1024, reps: int = 20, dtype=None) -> float:
    """GFLOP/s of an n x n matmul (float32 unless ``dtype``), after 3 warm-up products."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def threads() -> dict:
    """torch's thread count and the OpenMP variables that set how its threads wait (README, "Performance notes")."""
    import torch

    return {"torch_num_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count()}
