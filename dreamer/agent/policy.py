"""The policy's distribution over an action chunk (:class:`PolicyDist`) and the heads that produce it.

A policy head maps trunk features h (..., d) to a :class:`PolicyDist`: for each of the S sub-steps of a chunk
and each of the D action components, an independent categorical over that component's card_d actions. The
distribution holds D logit tensors (..., S, card_d); leading dims are usually (B, T) in training and (B,) in a
rollout step. Every consumer (BC, held-out figures, acting, imagination, PMPO, diagnostics, the viewer) calls its
methods; nothing outside this module reads the logits' layout. Actions are int64 (..., S, D); the sub-step mask
is bool (..., S) (True = valid; None = all valid). Sums run over valid sub-steps and all components; the maths is
done in float32 (log_softmax of the logits cast to float32).

Heads are chosen by ``agent.policy_head`` from :data:`POLICY_HEADS`; a head is an ``nn.Module`` built as
``cls(d_in, action_cards, chunk_len, hidden, layers)`` whose ``forward(h)`` returns a :class:`PolicyDist`. To try
another head, add its class here (or in another module of ``dreamer/agent/``) to :data:`POLICY_HEADS` and set
the config field. :class:`PolicyDist` is a dataclass (FSDP2 walks dataclasses to hook the outputs' backward) and a
registered pytree node (DDP, ``torch.compile``), so the wrappers see the logits inside it when a wrapped module
(the agent's head under FSDP, phase 0's compiled objective) returns one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

from .layers import MLP

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(eq=False, repr=False)
class PolicyDist:
    """Independent categoricals over one action chunk: ``logits`` is a tuple of D tensors (..., S, card_d).

    ``log_prob`` / ``entry_log_probs`` / ``entropy`` / ``kl`` carry gradient into the logits; ``sample`` does
    not. ``dist[i]`` indexes the leading dims (never S or the classes) and returns a :class:`PolicyDist`.
    """

    logits: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        self.logits = tuple(self.logits)
        if not self.logits:
            raise ValueError("PolicyDist: no logits (need one tensor (..., S, card) per action component)")
        lead = self.logits[0].shape[:-1]
        if len(lead) < 1:
            raise ValueError(f"PolicyDist: logits[0] shape {tuple(self.logits[0].shape)} has no sub-step dim S")
        for d, lg in enumerate(self.logits):
            if lg.shape[:-1] != lead:
                raise ValueError(f"PolicyDist: logits[{d}] shape {tuple(lg.shape)} != leading {tuple(lead)}")

    # ---- shape ---------------------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        """The leading dims and S: (..., S)."""
        return self.logits[0].shape[:-1]

    @property
    def cards(self) -> list[int]:
        """Actions per component, [card_0, ..., card_{D-1}]."""
        return [int(lg.shape[-1]) for lg in self.logits]

    def __getitem__(self, index) -> PolicyDist:
        out = PolicyDist([lg[index] for lg in self.logits])
        if out.shape[-1:] != self.shape[-1:]:
            raise IndexError(f"PolicyDist[{index!r}]: index the leading dims {tuple(self.shape[:-1])} only")
        return out

    def __repr__(self) -> str:
        return f"PolicyDist(shape={tuple(self.shape)}, cards={self.cards})"

    # ---- densities -------------------------------------------------------------------------------------------
    def entry_log_probs(self, actions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log pi of each chosen action, (..., S, D) float32. Masked entries use action 0 (value unused)."""
        self._check("entry_log_probs", actions, mask)
        if mask is not None:
            actions = torch.where(mask.unsqueeze(-1), actions, torch.zeros_like(actions))
        out = [
            torch.log_softmax(lg.float(), -1).gather(-1, actions[..., d : d + 1]).squeeze(-1)
            for d, lg in enumerate(self.logits)
        ]
        return torch.stack(out, dim=-1)

    def log_prob(self, actions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log pi(chunk) = sum over valid sub-steps and components. Returns (...)."""
        lp = self.entry_log_probs(actions, mask).sum(-1)  # (..., S)
        return (lp * _weights(mask, lp)).sum(-1)

    def entropy(self, mask: Tensor | None = None) -> Tensor:
        """Entropy of the chunk distribution (sum over valid sub-steps and components). Returns (...)."""
        self._check("entropy", None, mask)
        ent = 0.0
        for lg in self.logits:
            logp = torch.log_softmax(lg.float(), -1)
            ent = ent - (logp.exp() * logp).sum(-1)  # (..., S)
        return (ent * _weights(mask, ent)).sum(-1)

    def kl(self, other: PolicyDist, mask: Tensor | None = None) -> Tensor:
        """Analytic KL(self || other) per component and sub-step, summed over valid ones. Returns (...)."""
        self._check("kl", None, mask)
        if len(self.logits) != len(other.logits):
            raise ValueError(f"PolicyDist.kl: {len(self.logits)} vs {len(other.logits)} components")
        total = 0.0
        for lp_, lq_ in zip(self.logits, other.logits, strict=True):
            if lp_.shape != lq_.shape:
                raise ValueError(f"PolicyDist.kl: shapes {tuple(lp_.shape)} vs {tuple(lq_.shape)} differ")
            logp = torch.log_softmax(lp_.float(), -1)
            logq = torch.log_softmax(lq_.float(), -1)
            total = total + (logp.exp() * (logp - logq)).sum(-1)  # (..., S)
        return (total * _weights(mask, total)).sum(-1)

    def max_prob(self) -> Tensor:
        """Probability of the most likely class, per sub-step and component. Returns (..., S, D)."""
        return torch.stack([torch.softmax(lg.float(), -1).amax(-1) for lg in self.logits], dim=-1)

    # ---- actions -----------------------------------------------------------------------------------------------
    def mode(self) -> Tensor:
        """Most likely action of every sub-step and component (greedy). Returns int64 (..., S, D)."""
        return torch.stack([lg.argmax(-1) for lg in self.logits], dim=-1)

    @torch.no_grad()
    def sample(self, generator: Generators = None) -> Tensor:
        """Sample every sub-step and component independently. Returns int64 (..., S, D).

        ``generator`` may be one generator, or one per row of the leading batch dim (each row then draws from
        its own stream, as it would alone: episodes acted together sample what they would sample apart)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            gens = list(generator)
            if len(gens) != self.shape[0]:
                raise ValueError(f"PolicyDist.sample: {len(gens)} generators for a batch of {self.shape[0]}")
            return torch.stack([self[i].sample(g) for i, g in enumerate(gens)])
        out = []
        for lg in self.logits:
            probs = torch.softmax(lg.float(), -1)
            flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            out.append(flat.view(probs.shape[:-1]))
        return torch.stack(out, dim=-1)

    def _check(self, fn: str, actions: Tensor | None, mask: Tensor | None) -> None:
        lead = self.shape
        if actions is not None and (actions.shape[:-1] != lead or actions.shape[-1] != len(self.logits)):
            raise ValueError(
                f"PolicyDist.{fn}: actions shape {tuple(actions.shape)} != {(*lead, len(self.logits))} expected"
            )
        if mask is not None and mask.shape != lead:
            raise ValueError(f"PolicyDist.{fn}: mask shape {tuple(mask.shape)} != {tuple(lead)} expected")


def _weights(mask: Tensor | None, like: Tensor) -> Tensor:
    """Float (..., S) weights (like is (..., S)): 1 for valid sub-steps, 0 for masked ones."""
    if mask is None:
        return torch.ones(like.shape, dtype=torch.float32, device=like.device)
    return mask.to(device=like.device, dtype=torch.float32)


def _unflatten(values, _context) -> PolicyDist:
    dist = PolicyDist.__new__(PolicyDist)  # no shape checks: pytree maps may put anything in the leaves
    dist.logits = tuple(values)
    return dist


pytree.register_pytree_node(PolicyDist, lambda d: (list(d.logits), None), _unflatten,
                            serialized_type_name="dreamer.agent.policy.PolicyDist")


class PolicyHead(nn.Module):
    """``agent.policy_head: mlp``. h (..., d) -> :class:`PolicyDist` over (..., S) chunks.

    One MLP outputs S * sum(cards) logits, split per component. The output layer is scaled down at init
    (x0.1), so the initial policy is close to uniform.
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

    def forward(self, h: Tensor) -> PolicyDist:
        flat = self.mlp(h).view(*h.shape[:-1], self.chunk_len, sum(self.action_cards))
        return PolicyDist(flat.split(self.action_cards, dim=-1))


# agent.policy_head -> the head's class: cls(d_in, action_cards, chunk_len, hidden, layers), forward(h) -> PolicyDist
POLICY_HEADS: dict[str, type[nn.Module]] = {"mlp": PolicyHead}


def make_policy_head(kind: str, d_in: int, action_cards: Sequence[int], chunk_len: int, hidden: int,
                     layers: int) -> nn.Module:
    """The policy head named ``kind`` (``agent.policy_head``), from :data:`POLICY_HEADS`."""
    if kind not in POLICY_HEADS:
        raise ValueError(f"agent.policy_head: unknown head {kind!r}; known: {sorted(POLICY_HEADS)}")
    return POLICY_HEADS[kind](d_in, action_cards, chunk_len, hidden, layers)
