"""Typed configuration of the agent (phase 2 architecture + losses) and of the λ-returns (phases 2 and 3).

PMPO's own settings (alpha, beta, centring, the value warm-up and the sign gate) live with PMPO:
:class:`dreamer.imagination.pmpo.PMPOConfig`, the ``pmpo:`` section.

Both dataclasses validate themselves on construction (`__post_init__`); YAML sections are turned into
them by the project's config loader (`dreamer.presets.from_dict`, which refuses unknown keys).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


def _require(cond: bool, cls: str, field: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{cls}.{field}: {msg}")


@dataclass
class AgentConfig:
    """Agent architecture and phase-2 loss weights.

    Trunk: causal transformer (pre-RMSNorm, RoPE in time, QK-norm, SwiGLU) over the flattened N*C
    latent of every step. Heads: MLPs with `head_layers` hidden layers of `head_hidden` units.
    """

    # trunk
    d_model: int = 128  # trunk: transformer width
    num_layers: int = 2  # trunk: transformer blocks
    num_heads: int = 4  # trunk: attention heads
    max_time: int = 64  # longest latent history the trunk accepts in one call
    mlp_hidden: int = 512  # SwiGLU hidden width in each trunk block
    dropout: float = 0.0  # trunk: dropout in attention and MLP
    rope_base: float = 10000.0  # trunk: RoPE base period (time axis)
    # heads
    head_hidden: int = 256  # heads: hidden units per layer
    head_layers: int = 1  # heads: hidden layers of the policy, reward, continue and value MLPs
    policy_head: str = "mlp"  # the policy head's kind (dreamer/agent/policy.py POLICY_HEADS): mlp
    # two-hot (docs/design.md §8)
    num_bins: int = 255  # two-hot bins of the reward and value heads (docs/design.md §8)
    bin_low: float = -20.0  # two-hot: lowest bin (symlog space)
    bin_high: float = 20.0  # two-hot: highest bin (symlog space)
    # phase-2 losses
    focal_gamma: float = 0.0  # 0 = plain cross-entropy
    bc_loss_weight: float = 1.0  # phase-2 loss weight of behaviour cloning
    reward_loss_weight: float = 1.0  # phase-2 loss weight of the reward head
    continue_loss_weight: float = 1.0  # phase-2 loss weight of the continue head
    value_loss_weight: float = 1.0  # the behaviour policy's value on the data's λ-returns (phase 3 starts from it)

    def __post_init__(self) -> None:
        c = "AgentConfig"
        for name in ("d_model", "num_layers", "num_heads", "max_time", "mlp_hidden", "head_hidden"):
            v = getattr(self, name)
            _require(isinstance(v, int) and v >= 1, c, name, f"must be a positive int, got {v!r}")
        _require(
            isinstance(self.head_layers, int) and self.head_layers >= 0,
            c, "head_layers", f"must be an int >= 0, got {self.head_layers!r}",
        )
        _require(
            self.d_model % self.num_heads == 0,
            c, "d_model", f"{self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        _require(
            (self.d_model // self.num_heads) % 2 == 0,
            c, "d_model", f"head dim d_model/num_heads={self.d_model // self.num_heads} must be even (RoPE)",
        )
        _require(0.0 <= self.dropout < 1.0, c, "dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.rope_base > 1.0, c, "rope_base", f"must be > 1, got {self.rope_base}")
        _require(
            isinstance(self.num_bins, int) and self.num_bins >= 2,
            c, "num_bins", f"must be an int >= 2, got {self.num_bins!r}",
        )
        _require(
            self.bin_low < self.bin_high,
            c, "bin_low", f"must be < bin_high, got {self.bin_low} >= {self.bin_high}",
        )
        _require(self.focal_gamma >= 0.0, c, "focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        for name in ("bc_loss_weight", "reward_loss_weight", "continue_loss_weight"):
            v = getattr(self, name)
            _require(v >= 0.0, c, name, f"must be >= 0, got {v}")
        from .policy import POLICY_HEADS

        _require(self.policy_head in POLICY_HEADS, c, "policy_head",
                 f"unknown head {self.policy_head!r}; known: {sorted(POLICY_HEADS)}")
        _require(self.value_loss_weight > 0.0, c, "value_loss_weight",
                 f"must be > 0 (phase 3 starts from the value phase 2 fits), got {self.value_loss_weight}")


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RLConfig:
    """The discounts of the TD(λ) returns (docs/design.md §6), the ``rl:`` section: phase 2 fits the behaviour
    policy's value with them, phase 3 the imagined returns that PMPO's advantages come from.

    `gamma_env` is the per-environment-step discount; the per-latent-step discount used in
    `lambda_returns` is `gamma(chunk_len) = gamma_env ** chunk_len`.
    """

    gamma_env: float = 0.997  # discount per environment step (per latent step: gamma_env ** chunk_len)
    lam: float = 0.95  # λ of the TD(λ) returns

    def __post_init__(self) -> None:
        c = "RLConfig"
        _require(0.0 < self.gamma_env <= 1.0, c, "gamma_env", f"must be in (0, 1], got {self.gamma_env}")
        _require(0.0 <= self.lam <= 1.0, c, "lam", f"must be in [0, 1], got {self.lam}")

    def gamma(self, chunk_len: int) -> float:
        """Discount per latent step: gamma_env ** chunk_len."""
        if chunk_len < 1:
            raise ValueError(f"RLConfig.gamma: chunk_len must be >= 1, got {chunk_len}")
        return float(self.gamma_env**chunk_len)


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
