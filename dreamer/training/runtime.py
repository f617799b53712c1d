"""What every phase script needs from its surroundings: device, seeds, distributed setup, run
directory (locked to one command, cleaned of leftovers of killed writes, checked writable before
training), the saved config, TensorBoard, and the DDP / torch.compile wrapping (:func:`wrap_model`,
undone by :func:`unwrap`).

A run is *accepted* (:meth:`Runtime.accept`) once every check on what it resumes from has passed; only
then are ``config_<phase>.yaml`` and ``inputs_<phase>.json`` written and TensorBoard opened, so a
refused command leaves the run folder as it found it. :func:`dreamer.training.checkpoint.resume` accepts.

The command line and the run's :class:`dreamer.config.Config` come from :mod:`dreamer.pipeline`; this
module reads only the fields it names (``run_dir``, ``device``, ``seed``, ``threads``).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dreamer.atomic import HOST_TAG, atomic_write_bytes, remove_stale_temps
from dreamer.errors import RUN_FOLDER, ConfigError, UserError, require_dir
from dreamer.precision import autocast
from dreamer.presets import save_config
from dreamer.training.gradmode import ensure_grad_enabled
from dreamer.training.lock import RunLock

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
    writer: object | None = None  # SummaryWriter on rank 0, opened by accept()
    phase: str = ""  # "phase1", …: config_<phase>.yaml, tb/<phase>
    inputs: dict = field(default_factory=dict)  # the checkpoints this run starts from: {name: {path, sha256}}
    fresh: bool = False  # start the phase over, setting its earlier files aside (--fresh)
    lock: RunLock | None = None  # rank 0's hold on the run folder
    accepted: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self, enabled: bool):
        """The phase's ``bf16`` autocast, where it pays on this device (:mod:`dreamer.precision`)."""
        return autocast(enabled, self.device, f"{self.phase or 'phase'}.bf16")

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

    @property
    def stamp(self) -> dict:
        """What every checkpoint of this run carries besides its payload: its phase and its inputs."""
        m = re.fullmatch(r"phase(\d+)", self.phase)
        return {**({"phase": int(m.group(1))} if m else {}), **({"inputs": self.inputs} if self.inputs else {})}

    def recorded_inputs(self) -> dict | None:
        """The inputs this run folder was started with (``inputs_<phase>.json``), if it says."""
        path = self.run_dir / f"inputs_{self.phase}.json"
        return json.loads(path.read_text())["inputs"] if path.is_file() else None

    def accept(self) -> None:
        """Every check passed: rank 0 saves the resolved config and the inputs, and opens TensorBoard."""
        if self.accepted:
            return
        self.accepted = True
        if not self.is_main or not self.phase:
            return
        save_config(self.cfg, self.run_dir / f"config_{self.phase}.yaml")
        if self.inputs:
            atomic_write_bytes(self.run_dir / f"inputs_{self.phase}.json",
                               json.dumps({"phase": self.phase, "inputs": self.inputs}, indent=1).encode())
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tb" / self.phase))

    def release(self) -> None:
        """Flush TensorBoard and let go of the run folder (what :meth:`close` does short of tearing down the
        process group; also what :func:`releases_on_error` does when a phase fails)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        _OPEN[:] = [rt for rt in _OPEN if rt is not self]

    def close(self) -> None:
        self.release()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


_OPEN: list[Runtime] = []  # started and not yet released, in this process


def releases_on_error(main):
    """Decorate a phase script's ``main``: when it raises, every Runtime it started is released (run folder
    unlocked, TensorBoard flushed), so the same process can go on (a test, a notebook) and a second command
    is not refused. A process that ends releases its lock anyway."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        opened = len(_OPEN)
        try:
            return main(*args, **kwargs)
        except BaseException:
            for rt in _OPEN[opened:]:
                rt.release()
            raise

    return run


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU, else the CPU. ``cuda`` without an index is this rank's GPU too (under torchrun
    every rank would otherwise land on GPU 0); ``cuda:N`` is taken as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} asked for, but CUDA is not available; use device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        return torch.device(f"cuda:{local_rank}")
    return dev


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot be used: not a folder, not writable, or too little free space under it."""

    exit_code = RUN_FOLDER


def min_free_mb(run_dir: Path, configured: int | None = None) -> int:
    """The free space a run needs before it trains: ``configured`` (the config's ``min_free_mb``), else three
    times the largest checkpoint already in the run folder (a periodic one, the final one and a temporary
    copy being written), at least 16 MiB."""
    if configured is not None:
        return int(configured)
    sizes = [p.stat().st_size for p in run_dir.glob("*.pt") if p.is_file()] if run_dir.is_dir() else []
    return max(16, -(-3 * max(sizes, default=0) // 2**20))


def check_run_dir(run_dir: Path, need_mb: int | None = None) -> None:
    """Fail before training when the run directory cannot be written or the disk is (nearly) full
    (``need_mb``: the config's ``min_free_mb``; None derives it from the run's checkpoints, :func:`min_free_mb`)."""
    require_dir(run_dir, "run directory", "set checkpoint_root or run to a folder", create=True)
    need_mb = min_free_mb(run_dir, need_mb)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=f".write_probe.{HOST_TAG}-{os.getpid()}-",
                                         suffix=".tmp") as probe:  # the temporary-name pattern of dreamer.atomic
            probe.write(b"x" * 1024)
            probe.flush()
    except OSError as e:
        raise RunFolderError(f"run directory {run_dir} is not writable ({e}); fix permissions or set "
                             "checkpoint_root") from e
    free_mb = shutil.disk_usage(run_dir).free / 2**20
    if free_mb < need_mb:
        raise RunFolderError(f"only {free_mb:.0f} MiB free under {run_dir}; need at least {need_mb} MiB for "
                             "checkpoints (min_free_mb; by default three times the run's largest checkpoint, at "
                             "least 16 MiB)")


def start(cfg, phase: str, inputs: dict | None = None, fresh: bool = False) -> Runtime:
    """Distributed init (torchrun env vars), logging, device, seeds; rank 0 locks the run folder
    (:class:`dreamer.training.lock.RunLock`), checks it is writable and removes the leftovers of killed
    writes. ``inputs``: the checkpoints the phase starts from (:func:`dreamer.pipeline.checkpoints.input_record`),
    checked against the run folder's on resume; ``fresh``: start over instead of resuming. The config is
    saved and TensorBoard opened by :meth:`Runtime.accept`."""
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
    lock = None
    if rank == 0:  # one lock per run, held by rank 0 for all its ranks
        require_dir(run_dir, "run directory", "set checkpoint_root (and run) to a folder", create=True)
        try:
            lock = RunLock.acquire(run_dir, phase)
        except OSError as e:
            raise RunFolderError(f"run directory {run_dir} is not writable ({e}); fix permissions or set "
                               f"checkpoint_root") from e
        try:
            check_run_dir(run_dir, getattr(cfg, "min_free_mb", None))
            remove_stale_temps(run_dir, owned=True)
        except BaseException:
            lock.release()
            raise
    omp = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    log.info("%s: run dir %s, device %s, threads %d%s, command: %s", phase, run_dir, device, torch.get_num_threads(),
             f" ({omp})" if omp else "", " ".join(sys.argv))
    rt = Runtime(cfg=cfg, device=device, rank=rank, world=world, run_dir=run_dir, phase=phase,
                 inputs=dict(inputs or {}), fresh=fresh, lock=lock)
    _OPEN.append(rt)
    return rt


def compiled(fn, device: torch.device, dynamic: bool | None = None, key: str = "compile"):
    """``torch.compile(fn)``, on CUDA or the CPU (where inductor writes C++ kernels, so a C++ compiler must be
    on PATH: refused by name, ``key``, when there is none). ``dynamic=None`` lets the first change of a size
    make that size symbolic (one recompile), ``True`` starts symbolic (a growing history or KV cache)."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++")):
        raise ConfigError(f"{key}=true on the CPU needs a C++ compiler for torch.compile's kernels (none of $CXX, "
                          f"g++, c++ is on PATH): install one (apt-get install g++) or set {key}=false")
    return torch.compile(fn, dynamic=dynamic)


def wrap_model(rt: Runtime, model: torch.nn.Module, compile: bool = False, key: str = "compile") -> torch.nn.Module:
    """torch.compile (when asked; CUDA or the CPU) and DistributedDataParallel (when launched by torchrun and
    the model was not sharded with FSDP, which replaces DDP: dreamer.training.sharding)."""
    from dreamer.training.sharding import is_sharded

    net = compiled(model, rt.device, key=key) if compile else model
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
