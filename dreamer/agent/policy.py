"""Chunked MultiDiscrete policy head and its distribution helpers.

Logits format ("policy logits"): a Python list of D tensors, one per action component d, of shape
(..., S, card_d) — leading dims are usually (B, T) in training and (B,) in a rollout step. Actions are
int64 (..., S, D); the sub-step mask is bool (..., S) (True = valid; None = all valid). All sums
below run over valid sub-steps and all components; maths is done in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .layers import MLP

PolicyLogits = list[Tensor]


def _check(logits: Sequence[Tensor], actions: Tensor | None, mask: Tensor | None, fn: str) -> None:
    if len(logits) == 0:
        raise ValueError(f"policy.{fn}: logits is an empty list (need one tensor per component)")
    lead = logits[0].shape[:-1]  # (..., S)
    for d, lg in enumerate(logits):
        if lg.shape[:-1] != lead:
            raise ValueError(f"policy.{fn}: logits[{d}] shape {tuple(lg.shape)} != leading {tuple(lead)}")
    if actions is not None and (actions.shape[:-1] != lead or actions.shape[-1] != len(logits)):
        raise ValueError(
            f"policy.{fn}: actions shape {tuple(actions.shape)} != {(*lead, len(logits))} expected"
        )
    if mask is not None and mask.shape != lead:
        raise ValueError(f"policy.{fn}: mask shape {tuple(mask.shape)} != {tuple(lead)} expected")


def _weights(mask: Tensor | None, like: Tensor) -> Tensor:
    """Float (..., S) weights (like is (..., S)): 1 for valid sub-steps, 0 for masked ones."""
    if mask is None:
        return torch.ones(like.shape, dtype=torch.float32, device=like.device)
    return mask.to(device=like.device, dtype=torch.float32)


def entry_log_probs(logits: Sequence[Tensor], actions: Tensor, mask: Tensor | None = None) -> Tensor:
    """log pi of each chosen action, (..., S, D) float32. Masked entries use action 0 (value unused)."""
    _check(logits, actions, mask, "entry_log_probs")
    if mask is not None:
        actions = torch.where(mask.unsqueeze(-1), actions, torch.zeros_like(actions))
    out = [
        torch.log_softmax(lg.float(), -1).gather(-1, actions[..., d : d + 1]).squeeze(-1)
        for d, lg in enumerate(logits)
    ]
    return torch.stack(out, dim=-1)


def log_prob(logits: Sequence[Tensor], actions: Tensor, mask: Tensor | None = None) -> Tensor:
    """log pi(chunk) = sum over valid sub-steps and components. Returns (...)."""
    lp = entry_log_probs(logits, actions, mask).sum(-1)  # (..., S)
    return (lp * _weights(mask, lp)).sum(-1)


def entropy(logits: Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Entropy of the chunk distribution (sum over valid sub-steps and components). Returns (...)."""
    _check(logits, None, mask, "entropy")
    ent = 0.0
    for lg in logits:
        logp = torch.log_softmax(lg.float(), -1)
        ent = ent - (logp.exp() * logp).sum(-1)  # (..., S)
    return (ent * _weights(mask, ent)).sum(-1)


def kl(logits_p: Sequence[Tensor], logits_q: Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Analytic KL(p || q) per component and sub-step, summed over valid ones. Returns (...)."""
    _check(logits_p, None, mask, "kl")
    _check(logits_q, None, mask, "kl")
    if len(logits_p) != len(logits_q):
        raise ValueError(f"policy.kl: {len(logits_p)} vs {len(logits_q)} components")
    total = 0.0
    for lp_, lq_ in zip(logits_p, logits_q, strict=True):
        if lp_.shape != lq_.shape:
            raise ValueError(f"policy.kl: shapes {tuple(lp_.shape)} vs {tuple(lq_.shape)} differ")
        logp = torch.log_softmax(lp_.float(), -1)
        logq = torch.log_softmax(lq_.float(), -1)
        total = total + (logp.exp() * (logp - logq)).sum(-1)  # (..., S)
    return (total * _weights(mask, total)).sum(-1)


@torch.no_grad()
def sample(logits: Sequence[Tensor], generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
    """Sample every sub-step and component independently. Returns int64 (..., S, D).

    ``generator`` may be one generator, or one per row of the leading batch dim (each row then draws from
    its own stream, as it would alone: episodes acted together sample what they would sample apart)."""
    _check(logits, None, None, "sample")
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != logits[0].shape[0]:
            raise ValueError(f"policy.sample: {len(gens)} generators for a batch of {logits[0].shape[0]}")
        return torch.stack([sample([lg[i] for lg in logits], g) for i, g in enumerate(gens)])
    out = []
    for lg in logits:
        probs = torch.softmax(lg.float(), -1)
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        out.append(flat.view(probs.shape[:-1]))
    return torch.stack(out, dim=-1)


def mode(logits: Sequence[Tensor]) -> Tensor:
    """Most likely action of every sub-step and component (greedy). Returns int64 (..., S, D)."""
    _check(logits, None, None, "mode")
    return torch.stack([lg.argmax(-1) for lg in logits], dim=-1)


def max_prob(logits: Sequence[Tensor]) -> Tensor:
    """Probability of the most likely class, per sub-step and component. Returns (..., S, D)."""
    _check(logits, None, None, "max_prob")
    return torch.stack([torch.softmax(lg.float(), -1).amax(-1) for lg in logits], dim=-1)


class PolicyHead(nn.Module):
    """h (..., d) -> policy logits: list of D tensors (..., S, card_d).

    One MLP outputs S * sum(cards) logits. The output layer is scaled down at init (x0.1), so the
    initial policy is close to uniform. Distribution helpers are exposed as static methods.
    """

    def __init__(
        self, d_in: int, action_cards: Sequence[int], chunk_len: int, hidden: int = 256, layers: int = 1
    ) -> None:
        super().__init__()
        cards = [int(c) for c in action_cards]
        if not cards or any(c < 2 for c in cards):
            raise ValueError(f"PolicyHead: action_cards must be non-empty ints >= 2, got {list(action_cards)}")
        if chunk_len < 1:
            raise ValueError(f"PolicyHead: chunk_len must be >= 1, got {chunk_len}")
        self.action_cards = cards
        self.chunk_len = int(chunk_len)
        self.mlp = MLP(d_in, hidden, self.chunk_len * sum(cards), layers)
        with torch.no_grad():
            self.mlp.out.weight.mul_(0.1)
            self.mlp.out.bias.zero_()

    def forward(self, h: Tensor) -> PolicyLogits:
        flat = self.mlp(h).view(*h.shape[:-1], self.chunk_len, sum(self.action_cards))
        return list(flat.split(self.action_cards, dim=-1))

    log_prob = staticmethod(log_prob)
    entry_log_probs = staticmethod(entry_log_probs)
    entropy = staticmethod(entropy)
    kl = staticmethod(kl)
    sample = staticmethod(sample)
    mode = staticmethod(mode)
    max_prob = staticmethod(max_prob)
