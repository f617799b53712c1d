"""Phase-1 training under DistributedDataParallel in one process (NCCL on a GPU, gloo on the CPU), started by
``torchrun --nproc_per_node 1`` from test_cuda_ddp.py.

Trains the same dynamics model twice from the same weights and batches, once wrapped by
``dreamer.training.runtime.ddp_wrap`` (the wrapper every phase uses under torchrun) and once plain, with the phase
script's loss, bf16 autocast and ``optimizer_step``; then writes the DDP run's checkpoint payload. Prints one
line ``RESULT <json>`` for the test to read.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_fixtures import (
    DynamicsModel,
    NonFiniteGuard,
    ShortcutForcingLoss,
    atomic_save,
    config,
    ddp_wrap,
    load_checkpoint,
    make_batch,
    make_dynamics,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    payload,
    pick_device,
    runtime,
)

STEPS = 3


def train(net, model, loss_fn, rt, pc, batches) -> list[float]:
    opt = make_optimizer(model.parameters(), pc)
    sched = make_scheduler(opt, pc)
    guard = NonFiniteGuard(pc.max_nonfinite)
    losses = []
    for step, batch in enumerate(batches):
        gen = torch.Generator(device=rt.device).manual_seed(100 + step)  # the same labels and noise in both runs
        with rt.autocast(True):
            loss, _ = loss_fn(net, batch["latents"], batch["actions"], batch["action_mask"], generator=gen)
        applied, _ = optimizer_step(opt, sched, loss, pc, guard, step, batch["provenance"])
        assert applied, f"step {step} skipped"
        losses.append(float(loss))
    return losses


def main() -> None:
    device_name, out_dir = sys.argv[1], Path(sys.argv[2])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = pick_device(device_name, local_rank)  # cuda -> cuda:LOCAL_RANK, as runtime.start()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    rt = runtime(device)
    pc = config("phase1.warmup=1").phase1
    model = make_dynamics(device)
    plain = copy.deepcopy(model)
    net = ddp_wrap(model, device)
    batches = [make_batch(device, b=4, t=8, seed=s) for s in range(STEPS)]
    ddp_losses = train(net, model, ShortcutForcingLoss(model.cfg).to(device), rt, pc, batches)
    plain_losses = train(plain, plain, ShortcutForcingLoss(plain.cfg).to(device), rt, pc, batches)
    max_diff = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), plain.parameters()))

    state = payload(config(), STEPS, {"dynamics": net}, extra={"phase": 1})  # unwraps DDP
    path = atomic_save(state, out_dir / "ddp_phase1.pt")
    fresh = DynamicsModel(model.cfg, **model.init_kwargs())
    fresh.load_state_dict(load_checkpoint(path)["models"]["dynamics"])  # plain names, loads on the CPU
    reloaded = all(torch.equal(a.cpu(), b) for a, b in zip(model.parameters(), fresh.parameters()))

    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)
    print("RESULT " + json.dumps({
        "backend": dist.get_backend(), "world": dist.get_world_size(), "device": str(device),
        "wrapped": type(net).__name__, "ddp_losses": ddp_losses, "plain_losses": plain_losses,
        "max_param_diff": max_diff, "all_reduce": float(probe), "reloaded": reloaded,
        "state_keys_plain": not any(k.startswith("module.") for k in state["models"]["dynamics"]),
    }), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
