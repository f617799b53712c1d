"""Shared pieces of a training loop: optimiser and schedule, the non-finite guard, and the
checkpoint payload every phase writes and resumes from (docs/design.md §9)."""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from dreamer.errors import DIVERGED, UserError
from dreamer.presets import to_dict
from dreamer.training import sharding
from dreamer.training.checkpoint import (
    DamagedCheckpointError,
    atomic_save,
    latest_checkpoint,  # noqa: F401  (re-exported: loop.latest_checkpoint)
    load_checkpoint,
    move_aside,
    periodic_checkpoints,
    prune_checkpoints,
    rng_state,
    set_aside,
    set_rng_state,
    strip_compiled_prefix,
)
from dreamer.training.config import PhaseConfig
from dreamer.training.runtime import unwrap

log = logging.getLogger(__name__)


class NonFiniteError(UserError, RuntimeError):
    """Too many non-finite losses or gradients (in a row, or from one episode), or non-finite held-out figures."""

    exit_code = DIVERGED


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint from another tokenizer, latent statistics or action space than the data given."""


class InputMismatchError(CheckpointMismatchError):
    """The run folder was started from other input checkpoints than the ones this command gives."""


def make_optimizer(params, pc: PhaseConfig, lr: float | None = None) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters were handed to the optimizer")
    return torch.optim.AdamW(params, lr=lr or pc.lr, weight_decay=pc.weight_decay, betas=(0.9, 0.99))


def make_scheduler(opt: torch.optim.Optimizer, pc: PhaseConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at ``steps``."""

    def factor(step: int) -> float:
        if step < pc.warmup:
            return (step + 1) / max(1, pc.warmup)
        progress = min(1.0, (step - pc.warmup) / max(1, pc.steps - pc.warmup))
        return pc.min_lr_ratio + (1 - pc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class NonFiniteGuard:
    """Skip a step whose loss or gradient is not finite. Stop (:class:`NonFiniteError`) after ``max_in_row`` in a
    row, or once one episode was in ``max_in_row`` of the skipped batches and in at least half of them: a
    damaged episode shows up again and again, whatever lies between. Either way the message lists the steps
    and the episodes of the skipped batches (the ``provenance`` [(episode, start), …] of each)."""

    def __init__(self, max_in_row: int):
        self.max_in_row, self.in_row, self.total = max_in_row, 0, 0
        self.skipped: list[tuple[int, list]] = []  # (step, provenance) of every skipped step

    @property
    def healthy(self) -> bool:
        """False during a run of non-finite steps: no checkpoint is written then."""
        return self.in_row == 0

    def culprits(self, last: int | None = None) -> Counter:
        """How many of the (``last``) skipped batches each episode was in."""
        counts: Counter = Counter()
        for _, prov in self.skipped[-last:] if last else self.skipped:
            counts.update({_episode(p) for p in prov or []})
        return counts

    def report(self, last: int | None = None) -> str:
        """'steps 3, 9, 12; episodes ep_0 (3 batches), ep_2 (1)' for the (``last``) skipped steps."""
        steps = [s for s, _ in (self.skipped[-last:] if last else self.skipped)]
        shown = ", ".join(str(s) for s in steps[:12]) + (", …" if len(steps) > 12 else "")
        eps = ", ".join(f"{e} ({n})" for e, n in self.culprits(last).most_common(8))
        return f"steps {shown}; episodes (skipped batches each is in): {eps or 'not known'}"

    def check(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, provenance=None) -> bool:
        if torch.isfinite(loss).all() and torch.isfinite(grad_norm).all():
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        self.skipped.append((step, list(provenance or [])))
        log.warning("step %d: non-finite loss %s / grad norm %s; step skipped (%d in a row). Batch: %s",
                    step, float(loss), float(grad_norm), self.in_row, provenance)
        if self.in_row >= self.max_in_row:
            raise NonFiniteError(
                f"{self.in_row} non-finite steps in a row (max_nonfinite={self.max_in_row}) ending at step {step}: "
                f"{self.report(self.in_row)}; the last good checkpoint is left intact")
        worst = self.culprits().most_common(1)
        if worst and worst[0][1] >= self.max_in_row and 2 * worst[0][1] >= self.total:
            raise NonFiniteError(
                f"episode {worst[0][0]} was in {worst[0][1]} of the {self.total} batches skipped as non-finite "
                f"(max_nonfinite={self.max_in_row}): its data is the likely cause. Skipped {self.report()}; the last "
                "good checkpoint is left intact")
        return False

    def finish(self, phase: str) -> None:
        """At the end of a run: one warning naming the skipped steps and their episodes, if any were skipped."""
        if self.total:
            log.warning("%s: %d step(s) were skipped as non-finite: %s", phase, self.total, self.report())


def _episode(pick) -> str:
    """The episode of one provenance entry ((episode, start) or a bare name)."""
    return str(pick[0]) if isinstance(pick, (tuple, list)) and pick else str(pick)


def check_heldout(phase: str, metrics: dict, batches: list[dict], where: str = "", keys=None) -> None:
    """Stop the phase (:class:`NonFiniteError`) when a held-out figure (of ``keys``, default all) is not finite,
    naming the held-out episodes: those whose clips hold non-finite latents, else every episode of ``batches``
    (dicts with ``provenance`` and, when known, ``latents``)."""
    bad = {k: v for k, v in metrics.items() if (keys is None or k in keys) and isinstance(v, (float, int))
           and not math.isfinite(v)}
    if not bad:
        return
    named, seen = [], []
    for b in batches:
        z = b.get("latents")
        for i, pick in enumerate(b.get("provenance") or []):
            seen.append(_episode(pick))
            if z is not None and not torch.isfinite(z[i]).all():
                named.append(_episode(pick))
    eps = sorted(set(named)) or sorted(set(seen))
    why = "their clips hold non-finite latents" if named else "the model's outputs on them are not finite"
    raise NonFiniteError(f"{phase}: held-out figures are not finite ({', '.join(sorted(bad)[:6])}) on held-out "
                         f"episodes {eps} ({why}){where}")


def optimizer_step(opt, sched, loss: torch.Tensor, pc: PhaseConfig, guard: NonFiniteGuard, step: int,
                   provenance=None, average_across_ranks: bool = False) -> tuple[bool, dict[str, float]]:
    """backward, clip each parameter group on its own, guard, step.

    Returns (applied, grad norms before clipping: one per group, by its ``name`` or index, and ``total``).
    ``average_across_ranks`` all-reduces the gradients by hand under torchrun, for parameters trained
    outside a DDP wrapper (the phase-3 heads); a parameter without a gradient is skipped on every rank.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if average_across_ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for g in opt.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(dist.get_world_size())
    clip = pc.grad_clip if pc.grad_clip > 0 else float("inf")
    norms = {str(g.get("name", i)): _local(torch.nn.utils.clip_grad_norm_(g["params"], clip))
             for i, g in enumerate(opt.param_groups)}
    total = torch.stack([n.float() for n in norms.values()]).norm()
    ok = guard.check(step, loss.detach(), total, provenance)
    if ok:
        opt.step()
    else:
        opt.zero_grad(set_to_none=True)
    sched.step()
    return ok, {**{k: float(v) for k, v in norms.items()}, "total": float(total)}


def _local(norm: torch.Tensor) -> torch.Tensor:
    """A norm over FSDP-sharded gradients is a DTensor: its full value (the same on every rank)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def payload(cfg, step: int, models: dict[str, nn.Module], opt=None, sched=None, data_info: dict | None = None,
            extra: dict | None = None) -> dict:
    """Everything a phase needs to resume or hand off (state dicts, config, stats, identity, RNG).

    Under torchrun every rank must call it (the RNG states of all ranks are gathered, and FSDP-sharded
    models are gathered to full state dicts); rank 0's result is the complete one it writes.
    """
    plain = {k: unwrap(m) for k, m in models.items()}
    out = {
        "step": step,
        "config": to_dict(cfg),
        "models": {k: strip_compiled_prefix(sharding.model_state(m)) for k, m in plain.items()},
        "rng": rng_state(),
        **(data_info or {}),
        **(extra or {}),
    }
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ranks: list = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, out["rng"])
        out["rng_ranks"] = ranks  # each rank resumes its own RNG streams
    if opt is not None:
        owner = sharding.owner_of(opt, plain)
        out["optimizer"] = sharding.optimizer_state(owner, opt) if owner is not None else opt.state_dict()
    if sched is not None:
        out["scheduler"] = sched.state_dict()
    return out


def data_info(cache) -> dict:
    """The facts about the data a checkpoint must agree with: tokenizer, statistics, action space."""
    return {
        "tokenizer": cache.tokenizer_identity,
        "latent_stats": cache.stats(),
        "action_space": cache.action_space.to_dict(),
        "chunk_len": cache.chunk_len,
    }


def check_compatible(ckpt: dict, cache, path: str | Path) -> None:
    """Refuse a checkpoint whose tokenizer, latent statistics or action space differ from the cache."""
    mine = data_info(cache)
    for key in ("tokenizer", "action_space", "chunk_len"):
        if ckpt.get(key) != mine[key]:
            raise CheckpointMismatchError(
                f"checkpoint {path}: {key} differs from the latent cache {cache.root}: checkpoint has "
                f"{_brief(ckpt.get(key))}, cache has {_brief(mine[key])}"
            )
    a, b = ckpt.get("latent_stats"), mine["latent_stats"]
    if a is None or any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for k in ("mean", "std") for x, y in zip(a[k], b[k])):
        raise CheckpointMismatchError(
            f"checkpoint {path}: latent statistics differ from the cache {cache.root}: "
            f"checkpoint mean[:3]={_brief(a and a['mean'][:3])}, cache mean[:3]={_brief(b['mean'][:3])}"
        )


def _brief(x) -> str:
    if isinstance(x, dict) and x.get("kind"):
        return f"tokenizer {x['kind']} (layout {x.get('layout_version')}, hash {str(x.get('weights_sha256'))[:12]})"
    if isinstance(x, dict) and "weights_sha256" in x:
        return f"tokenizer weights {x['weights_sha256'][:12]} (pool {x.get('pool')}, resolution {x.get('resolution')})"
    return repr(x)


def save_periodic(rt, prefix: str, state: dict, keep: int) -> Path | None:
    """Rank 0 writes ``<prefix>_step<N>.pt`` atomically (stamped with the run's phase and inputs,
    ``Runtime.stamp``) and prunes older ones."""
    if not rt.is_main:
        return None
    state = {**state, **getattr(rt, "stamp", {})}
    path = atomic_save(state, rt.run_dir / f"{prefix}_step{state['step']}.pt")
    prune_checkpoints(rt.run_dir, prefix, keep)
    return path


def resume(rt, prefix: str, models: dict[str, nn.Module], opt=None, sched=None, cache=None) -> tuple[int, dict | None]:
    """Load the newest periodic checkpoint of this phase that loads, if any: returns (step, checkpoint).

    A damaged checkpoint is reported, moved aside (``<name>.damaged``) and the previous one is tried; an
    unsafe one stops the run. The checkpoint must fit the cache (:func:`check_compatible`) and come from
    the inputs this command gives (:func:`check_inputs`). With ``rt.fresh`` nothing is resumed and the
    phase's earlier files are set aside. The run is then accepted (``Runtime.accept``: config saved).
    """
    if getattr(rt, "fresh", False):
        if getattr(rt, "is_main", True):
            set_aside(rt.run_dir, prefix)
        _barrier(rt)
        _accept(rt)
        return 0, None
    path, ckpt, damaged = None, None, []
    for candidate in periodic_checkpoints(rt.run_dir, prefix):
        try:
            ckpt, path = load_checkpoint(candidate), candidate
            break
        except DamagedCheckpointError as e:
            log.warning("%s; resuming from the previous checkpoint instead", e)
            damaged.append(candidate)
    _barrier(rt)  # every rank has read what it needs before rank 0 moves the damaged files
    if getattr(rt, "is_main", True):
        for p in damaged:
            log.warning("moved the damaged checkpoint %s aside to %s", p, move_aside(p, "damaged").name)
    if ckpt is None:
        if damaged:
            log.warning("no intact %s checkpoint left in %s: starting from step 0", prefix, rt.run_dir)
        _accept(rt)
        return 0, None
    if cache is not None:
        check_compatible(ckpt, cache, path)
    check_inputs(rt, ckpt, path)
    plain = {k: unwrap(m) for k, m in models.items()}
    for k, m in plain.items():
        sharding.load_model_state(m, strip_compiled_prefix(ckpt["models"][k]))
    if opt is not None and "optimizer" in ckpt:
        owner = sharding.owner_of(opt, plain)
        if owner is None:
            opt.load_state_dict(ckpt["optimizer"])
        else:
            sharding.load_optimizer_state(owner, opt, ckpt["optimizer"])
    if sched is not None and "scheduler" in ckpt:
        sched.load_state_dict(ckpt["scheduler"])
    ranks, rank = ckpt.get("rng_ranks"), getattr(rt, "rank", 0)
    set_rng_state(ranks[rank] if ranks and len(ranks) == getattr(rt, "world", 1) else ckpt["rng"])
    log.info("resumed from %s at step %d", path, ckpt["step"])
    _accept(rt)
    return int(ckpt["step"]), ckpt


def check_inputs(rt, ckpt: dict, path: str | Path) -> None:
    """Refuse to resume ``ckpt`` when the run was started from other input checkpoints than ``rt.inputs``
    (compared by the content hash of their models; the paths are named)."""
    now = getattr(rt, "inputs", None) or {}
    if not now:
        return
    was = ckpt.get("inputs")
    source = f"checkpoint {path}"
    if was is None:
        was, source = (rt.recorded_inputs() if hasattr(rt, "recorded_inputs") else None), f"the run folder {rt.run_dir}"
    if was is None:
        log.warning("%s does not record the checkpoints it was started from; cannot check that they are %s", path,
                    ", ".join(v["path"] for v in now.values()))
        return
    for key, given in now.items():
        old = was.get(key)
        if old is None or old.get("sha256") != given["sha256"]:
            started = f"{old['path']} (weights {old['sha256'][:12]})" if old else "no recorded checkpoint"
            raise InputMismatchError(
                f"run folder {rt.run_dir} was started from {key} checkpoint {started}, but this command gives "
                f"{given['path']} (weights {given['sha256'][:12]}); resuming {source} would keep the old models. "
                f"Give the original checkpoint, use another run name (--set run=...), or add --fresh to start "
                f"{getattr(rt, 'phase', 'this phase')} over (its earlier files are moved to {rt.run_dir}/superseded/)")
        if old["path"] != given["path"]:
            log.info("%s checkpoint %s has the same weights as %s, which the run started from", key, given["path"],
                     old["path"])


def _barrier(rt) -> None:
    if hasattr(rt, "barrier"):
        rt.barrier()


def _accept(rt) -> None:
    if hasattr(rt, "accept"):
        rt.accept()
