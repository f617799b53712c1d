"""Agent modules (docs/design.md §5): causal trunk, policy / reward / continue / value heads, and `Agent`.

The policy head is the kind ``cfg.policy_head`` names (:data:`dreamer.agent.policy.POLICY_HEADS`); it returns a
:class:`dreamer.agent.policy.PolicyDist`.

Shapes: latents_btnc float (B, T, N, C) standardised; h_btd (B, T, d_model). Heads accept any
leading dims (..., d).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dreamer.transformer import RMSNorm, rope_tables

from .config import AgentConfig
from .layers import MLP, NORM_EPS, CausalBlock
from .maths import TwoHot
from .policy import make_policy_head

logger = logging.getLogger(__name__)


class AgentTrunk(nn.Module):
    """Causal transformer over the latent history: forward(latents_btnc) -> h_btd.

    Each step's N*C latent is flattened and projected to d_model; attention is causal in time, so
    h_t depends on latents <= t only. Positions (RoPE) are relative to the start of the window given,
    so sliding windows of at most `max_time` steps behave the same everywhere in an episode.
    """

    def __init__(self, cfg: AgentConfig, num_tokens: int, latent_dim: int) -> None:
        super().__init__()
        if num_tokens < 1 or latent_dim < 1:
            raise ValueError(f"AgentTrunk: num_tokens={num_tokens}, latent_dim={latent_dim} must be >= 1")
        self.num_tokens, self.latent_dim = int(num_tokens), int(latent_dim)
        self.d_model, self.max_time = cfg.d_model, cfg.max_time
        self.head_dim, self.rope_base = cfg.d_model // cfg.num_heads, cfg.rope_base
        self.in_proj = nn.Linear(self.num_tokens * self.latent_dim, cfg.d_model)
        self.in_norm = RMSNorm(cfg.d_model, NORM_EPS)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.d_model, cfg.num_heads, cfg.mlp_hidden, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.out_norm = RMSNorm(cfg.d_model, NORM_EPS)

    def forward(self, latents_btnc: Tensor) -> Tensor:
        if latents_btnc.dim() != 4 or latents_btnc.shape[2:] != (self.num_tokens, self.latent_dim):
            raise ValueError(
                f"AgentTrunk: latents must be (B, T, {self.num_tokens}, {self.latent_dim}), "
                f"got {tuple(latents_btnc.shape)}"
            )
        b, t = latents_btnc.shape[:2]
        if t > self.max_time:
            raise ValueError(
                f"AgentTrunk: T={t} exceeds max_time={self.max_time}; pass the last {self.max_time} "
                "latents (or raise AgentConfig.max_time)"
            )
        x = self.in_norm(self.in_proj(latents_btnc.reshape(b, t, -1)))
        cos, sin = rope_tables(t, self.head_dim, self.rope_base, x.device)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.out_norm(x)


class TwoHotHead(nn.Module):
    """h (..., d) -> two-hot logits (..., num_bins); the output layer is zero-initialised, so the
    initial prediction is exactly 0. `predict(h)` decodes to a scalar (...); `loss(logits, y)` is the
    per-element two-hot cross-entropy (...)."""

    def __init__(self, d_in: int, hidden: int, layers: int, num_bins: int, low: float, high: float) -> None:
        super().__init__()
        self.mlp = MLP(d_in, hidden, num_bins, layers)
        nn.init.zeros_(self.mlp.out.weight)
        nn.init.zeros_(self.mlp.out.bias)
        self.twohot = TwoHot(num_bins, low, high)

    def forward(self, h: Tensor) -> Tensor:
        return self.mlp(h)

    def predict(self, h: Tensor) -> Tensor:
        return self.twohot.decode(self(h))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.twohot.loss(logits, target)


class RewardHead(TwoHotHead):
    """Predicts rewards[t], the reward received on ENTERING latent t, from h_t."""


class ValueHead(TwoHotHead):
    """Predicts the lambda-return from h_t. Created in phase 2 (untrained), trained in phase 3."""


class ContinueHead(nn.Module):
    """h (..., d) -> Bernoulli logit (...) of continues[t] (1 = latent t is not terminal)."""

    def __init__(self, d_in: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.mlp = MLP(d_in, hidden, 1, layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.mlp(h).squeeze(-1)

    def predict(self, h: Tensor) -> Tensor:
        """Probability of continuing, (...)."""
        return torch.sigmoid(self(h).float())


class Agent(nn.Module):
    """Trunk + heads. Attributes: `trunk`, `policy`, `reward`, `cont` (continue), `value`.

    `forward(latents_btnc)` returns the trunk features h_btd; apply heads to them.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        num_tokens: int,
        latent_dim: int,
        action_cards: Sequence[int],
        chunk_len: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_tokens, self.latent_dim = int(num_tokens), int(latent_dim)
        self.action_cards = [int(c) for c in action_cards]
        self.chunk_len = int(chunk_len)
        d, hid, nl = cfg.d_model, cfg.head_hidden, cfg.head_layers
        self.trunk = AgentTrunk(cfg, num_tokens, latent_dim)
        self.policy = make_policy_head(cfg.policy_head, d, self.action_cards, self.chunk_len, hid, nl)
        self.reward = RewardHead(d, hid, nl, cfg.num_bins, cfg.bin_low, cfg.bin_high)
        self.cont = ContinueHead(d, hid, nl)
        self.value = ValueHead(d, hid, nl, cfg.num_bins, cfg.bin_low, cfg.bin_high)
        logger.info(
            "Agent: %.2fM params (N=%d, C=%d, cards=%s, S=%d)",
            sum(p.numel() for p in self.parameters()) / 1e6,
            self.num_tokens, self.latent_dim, self.action_cards, self.chunk_len,
        )

    def forward(self, latents_btnc: Tensor) -> Tensor:
        return self.trunk(latents_btnc)

    @torch.no_grad()
    def act(
        self, latents_btnc: Tensor, greedy: bool = False,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Inference only: the action chunk (B, S, D) int64 for the LAST step of the history.

        Only the last `max_time` latents are used (sliding window). greedy=True takes the mode,
        otherwise samples (with `generator`, on the latents' device: one, or one per batch row).
        """
        h_bd = self.trunk(latents_btnc[:, -self.trunk.max_time :])[:, -1]
        dist = self.policy(h_bd)
        return dist.mode() if greedy else dist.sample(generator)

    @property
    def spec(self) -> dict[str, Any]:
        """Constructor arguments besides cfg (store in checkpoints; compare with `check_spec`)."""
        return {
            "num_tokens": self.num_tokens,
            "latent_dim": self.latent_dim,
            "action_cards": list(self.action_cards),
            "chunk_len": self.chunk_len,
        }

    def check_spec(self, other: dict[str, Any], where: str = "checkpoint") -> None:
        """Raise naming both values if `other` (e.g. a checkpoint's spec) differs from this agent."""
        for key, mine in self.spec.items():
            theirs = other.get(key)
            if isinstance(theirs, tuple):
                theirs = list(theirs)
            if theirs != mine:
                raise ValueError(f"{where}: agent {key} is {theirs!r} but this run has {mine!r}")

    def freeze_for_phase3(self) -> nn.Module:
        """Freeze trunk, reward and continue heads (requires_grad=False) and return pi_prior, a frozen
        deep copy of the current policy head in eval mode. Policy and value heads stay trainable."""
        for m in (self.trunk, self.reward, self.cont):
            m.requires_grad_(False)
        prior = copy.deepcopy(self.policy).requires_grad_(False).eval()
        return prior

    def phase3_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in phase 3: policy head then value head."""
        return list(self.policy.parameters()) + list(self.value.parameters())


def eval_modes(module: nn.Module) -> dict[nn.Module, bool]:
    """Put every submodule of ``module`` in eval mode (dropout off, as when an agent acts or is judged); returns each
    one's mode before, for :func:`restore_modes`."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    return modes


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Give each module of :func:`eval_modes` its own mode back, one by one: ``module.train()`` would wake a phase-3
    agent's frozen trunk and heads, which phase 3 keeps in eval mode."""
    for m, mode in modes.items():
        m.training = mode
