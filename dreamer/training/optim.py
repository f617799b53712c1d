"""The optimizer side of every phase's loop (docs/design.md §9): AdamW with a warm-up and cosine schedule, the step
(backward, per-group clipping, the non-finite guard) and the guard on held-out figures. The loop itself is
:mod:`dreamer.pipeline.runner`."""

from __future__ import annotations

import logging
import math
from collections import Counter

import torch
import torch.distributed as dist

from dreamer.errors import DIVERGED, UserError
from dreamer.training.config import PhaseConfig

log = logging.getLogger(__name__)


class NonFiniteError(UserError, RuntimeError):
    """Too many non-finite losses or gradients (in a row, or from one episode), or non-finite held-out figures."""

    exit_code = DIVERGED


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused when every parameter is a plain float tensor on the CPU or CUDA (one kernel over all of them:
    on 2 CPU threads a step of the 1.4 M-parameter tokenizer takes 3 ms against 20-23 ms for the default per-tensor
    loop; README, "Performance notes"), else the default implementation (e.g. FSDP's DTensors)."""
    groups = list(params)
    flat = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = all(type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in flat)
    return torch.optim.AdamW(groups, fused=fused or None, **kwargs)


def make_optimizer(params, pc: PhaseConfig, lr: float | None = None) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters were handed to the optimizer")
    return adamw(params, lr=lr or pc.lr, weight_decay=pc.weight_decay, betas=(0.9, 0.99))


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
