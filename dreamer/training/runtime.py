"""What every phase script needs from its surroundings: device, seeds, distributed setup, run
directory (checked writable before training), TensorBoard, and the DDP / torch.compile wrapping
(:func:`wrap_model`, undone by :func:`unwrap`).

The command line and the run's :class:`dreamer.config.Config` come from :mod:`dreamer.pipeline`; this
module reads only the fields it names (``run_dir``, ``device``, ``seed``, ``threads``).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dreamer.presets import save_config
from dreamer.training.gradmode import ensure_grad_enabled

log = logging.getLogger(__name__)


def setup_logging(rank: int = 0) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@dataclass
class Runtime:
    cfg: Any  # the run's dreamer.config.Config
    device: torch.device
    rank: int = 0
    world: int = 1
    run_dir: Path = field(default_factory=Path)
    writer: object | None = None  # SummaryWriter on rank 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self, enabled: bool):
        if not enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a decision only rank 0 can take, such as stopping)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU, else the CPU. ``cuda`` without an index is this rank's GPU too (under torchrun
    every rank would otherwise land on GPU 0); ``cuda:N`` is taken as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} asked for, but CUDA is not available; use device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        return torch.device(f"cuda:{local_rank}")
    return dev


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_run_dir(run_dir: Path, min_free_mb: int = 200) -> None:
    """Fail before training when the run directory cannot be written or the disk is (nearly) full."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_probe"
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as e:
        raise RuntimeError(f"run directory {run_dir} is not writable ({e}); fix permissions or set checkpoint_root") from e
    free_mb = shutil.disk_usage(run_dir).free / 2**20
    if free_mb < min_free_mb:
        raise RuntimeError(f"only {free_mb:.0f} MiB free under {run_dir}; need at least {min_free_mb} MiB for checkpoints")


def start(cfg, phase: str) -> Runtime:
    """Distributed init (torchrun env vars), logging, device, seeds, run dir, config.yaml, TensorBoard."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    setup_logging(rank)
    ensure_grad_enabled(f"start of {phase}")
    device = pick_device(cfg.device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("distributed: rank %d of %d (%s)", rank, world, backend)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + rank)
    run_dir = cfg.run_dir
    writer = None
    if rank == 0:
        check_run_dir(run_dir)
        save_config(cfg, run_dir / f"config_{phase}.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb" / phase))
    log.info("%s: run dir %s, device %s, threads %d, command: %s", phase, run_dir, device,
             torch.get_num_threads(), " ".join(sys.argv))
    return Runtime(cfg=cfg, device=device, rank=rank, world=world, run_dir=run_dir, writer=writer)


def wrap_model(rt: Runtime, model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
    """torch.compile (CUDA only, when asked) and DistributedDataParallel (when launched by torchrun and
    the model was not sharded with FSDP, which replaces DDP: dreamer.training.sharding)."""
    from dreamer.training.sharding import is_sharded

    net = model
    if compile:
        if rt.device.type == "cuda":
            net = torch.compile(net)
        else:
            log.warning("compile=true ignored on %s (torch.compile is used on CUDA only)", rt.device)
    if rt.distributed and not is_sharded(model):
        net = ddp_wrap(net, rt.device)
    return net


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def ddp_wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel as every phase uses it (needs an initialised process group).

    No buffer sync in forward: buffers here are constants (RoPE tables), and a loss may call the model a
    different number of times per rank (shortcut teacher passes), which must not need a collective. torch 2.13
    renamed that switch from ``broadcast_buffers`` to ``forward_sync_buffers``; older versions only know the first.
    """
    from torch.nn.parallel import DistributedDataParallel

    known = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}
    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(net, device_ids=ids, **no_sync)
