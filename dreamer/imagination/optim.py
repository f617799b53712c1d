"""Phase-3 optimiser: the policy head and the value head, each its own parameter group and learning rate.

The two losses touch disjoint heads, so one backward of their sum gives each head exactly its own
gradient; each group is clipped on its own, so a large value gradient never shrinks the policy step.
Under torchrun the heads' gradients are averaged across ranks by hand (no DDP wrapper: the heads are
called on imagined features, not through a module's forward).
"""

from __future__ import annotations

import torch

from dreamer.agent.model import Agent
from dreamer.training.config import Phase3Config
from dreamer.training.optim import NonFiniteGuard, adamw, optimizer_step

GROUPS = ("policy", "value")


def make_phase3_optimizer(agent: Agent, pc: Phase3Config) -> torch.optim.AdamW:
    """AdamW over two groups: policy head (lr = pc.lr) and value head (lr = pc.value_lr)."""
    groups = [
        {"name": "policy", "params": [p for p in agent.policy.parameters() if p.requires_grad], "lr": pc.lr},
        {"name": "value", "params": [p for p in agent.value.parameters() if p.requires_grad], "lr": pc.value_lr},
    ]
    for g in groups:
        if not g["params"]:
            raise ValueError(f"phase 3: the {g['name']} head has no trainable parameters")
    return adamw(groups, weight_decay=pc.weight_decay, betas=(0.9, 0.99))


def grouped_step(opt: torch.optim.Optimizer, sched, loss: torch.Tensor, pc: Phase3Config, guard: NonFiniteGuard,
                 step: int, provenance=None) -> tuple[bool, dict[str, float]]:
    """The shared optimizer step with per-group clipping and gradients averaged across ranks by hand."""
    return optimizer_step(opt, sched, loss, pc, guard, step, provenance, average_across_ranks=True)
