"""Per-rank memory of the trained state, DDP against FSDP, for the phase-1 dynamics model.

Launches itself under torchrun (gloo on CPU, or NCCL with --device cuda), trains a few shortcut-forcing
steps each way on random latents and prints one JSON object: per rank, the bytes of parameters,
gradients and AdamW state held locally, the seconds per step, and the largest weight difference
between the two runs (they start from the same weights and draw the same batches).

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python bench/bench_fsdp.py [--nproc 2] [--d-model 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = getattr(t, "_local_tensor", t)  # a DTensor's shard on this rank
        total += t.numel() * t.element_size()
    return total


def worker(a) -> None:
    import torch.distributed as dist

    from dreamer.dynamics import DynamicsConfig, DynamicsModel, ShortcutForcingLoss
    from dreamer.training import sharding
    from dreamer.training.config import Phase1Config
    from dreamer.training.optim import NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step
    from dreamer.training.runtime import Runtime, wrap_model

    device = torch.device(a.device if a.device == "cpu" else f"cuda:{os.environ['LOCAL_RANK']}")
    dist.init_process_group("gloo" if device.type == "cpu" else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = DynamicsConfig(d_model=a.d_model, num_layers=a.layers, num_heads=4, num_kv_heads=2, max_time=16)
    pc = Phase1Config(steps=a.steps, batch_size=a.batch, warmup=1)
    rt = Runtime(cfg=None, device=device, rank=rank, world=world)
    out, weights = {}, {}
    for mode in ("ddp", "fsdp"):
        torch.manual_seed(0)
        model = DynamicsModel(cfg, 16, 16, [17], 8).to(device)
        loss_fn = ShortcutForcingLoss(cfg).to(device)
        loss_fn.same_calls_on_every_rank = sharding.shard(rt, model, mode == "fsdp", forward_methods=("forward_into",))
        net = wrap_model(rt, model)
        opt, guard = make_optimizer(model.parameters(), pc), NonFiniteGuard(5)
        sched = make_scheduler(opt, pc)
        gen = torch.Generator().manual_seed(100 + rank)
        t0 = None
        for step in range(a.steps):
            if step == 1:
                t0 = time.perf_counter()
            z = torch.randn(a.batch, 16, 16, 16, generator=gen).to(device)
            acts = torch.randint(0, 17, (a.batch, 16, 8, 1), generator=gen).to(device)
            loss, _ = loss_fn(net, z, acts, torch.ones(a.batch, 16, 8, dtype=torch.bool, device=device))
            optimizer_step(opt, sched, loss, pc, guard, step)
        seconds = (time.perf_counter() - t0) / max(1, a.steps - 1)
        params = list(model.parameters())
        state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
        mine = {"params_MB": local_bytes(params) / 2**20, "optimizer_MB": local_bytes(state) / 2**20,
                "seconds_per_step": seconds}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        weights[mode] = sharding.model_state(model)
        out[mode] = {"ranks": gathered, "parameters_M": sum(p.numel() for p in weights[mode].values()) / 1e6
                     if rank == 0 else None}
    if rank == 0:
        diff = max((weights["ddp"][k] - weights["fsdp"][k]).abs().max().item() for k in weights["ddp"])
        print(json.dumps({"world": world, "device": device.type, "d_model": a.d_model, "layers": a.layers,
                          "batch_per_rank": a.batch, "steps": a.steps, "threads": torch.get_num_threads(),
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), **out,
                          "max_weight_difference": diff}, indent=1))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={a.nproc}", "--master_port=29541",
           __file__, "--worker", *sys.argv[1:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sys.exit(subprocess.call(cmd, cwd=ROOT, env=env))


if __name__ == "__main__":
    main()
