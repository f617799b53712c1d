"""A one-process NCCL DDP run of phase 1 (torchrun --nproc_per_node 1): the process group comes up on the GPU,
DistributedDataParallel built as every phase builds it reduces the gradients of the shortcut loss (student and
no-grad teacher passes) through NCCL, training equals the unwrapped model's, and the checkpoint is plain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_fixtures import CUDA, free_port

pytestmark = CUDA

WORKER = Path(__file__).resolve().parent / "ddp_phase1_worker.py"
ROOT = Path(__file__).resolve().parents[2]


def test_one_process_ddp_phase1(device, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")  # one process on one machine: the loopback interface is enough
    env.setdefault("NCCL_DEBUG", "WARN")  # NCCL says why when it fails
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}",
           str(WORKER), device.type, str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-5000:]}"
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    r = json.loads(line[len("RESULT "):])
    assert r["backend"] == ("nccl" if device.type == "cuda" else "gloo") and r["world"] == 1
    assert r["wrapped"] == "DistributedDataParallel" and r["all_reduce"] == 1.0
    assert r["device"] == str(device)
    assert r["ddp_losses"] == pytest.approx(r["plain_losses"], rel=1e-5, abs=1e-6)
    assert r["max_param_diff"] < 1e-5, r
    assert r["reloaded"] and r["state_keys_plain"]
