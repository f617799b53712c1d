"""Agent library (docs/design.md §5, §6, §8).

- maths: symlog / symexp, `TwoHot` (encode / loss / decode, float32).
- config: `AgentConfig` (architecture, phase-2 loss weights), `RLConfig` (gamma_env, lam, alpha, beta).
- model: `Agent` = `trunk` (causal transformer, latents (B,T,N,C) -> h (B,T,d)) + `policy`
  (list of D logits (...,S,card_d)) + `reward` / `value` (two-hot, zero-init) + `cont` (Bernoulli).
- policy: distribution helpers on policy logits (log_prob, entropy, kl, sample, mode, max_prob).
- losses: `bc_loss`, `bc_accuracy`, `phase2_loss`.
- rl: `lambda_returns`, `pmpo_loss`, `pmpo_stats`, `value_loss`.
- acting: `ChunkActor` (one decision per chunk in the real env, cache-identical latents), `AgentPolicy`,
  `run_agent_episodes` (the baselines it is compared with live in `dreamer.envs.evaluation`).
"""

from .acting import AgentPolicy, ChunkActor, run_agent_episodes
from .config import AgentConfig, RLConfig
from .losses import BATCH_KEYS, bc_accuracy, bc_loss, check_batch, phase2_loss
from .maths import TwoHot, make_bins, symexp, symlog
from .model import Agent, AgentTrunk, ContinueHead, RewardHead, TwoHotHead, ValueHead
from .policy import PolicyHead, PolicyLogits, entropy, entry_log_probs, kl, log_prob, max_prob, mode, sample
from .rl import lambda_returns, pmpo_loss, pmpo_stats, value_loss

__all__ = [
    "BATCH_KEYS",
    "Agent",
    "AgentConfig",
    "AgentPolicy",
    "AgentTrunk",
    "ChunkActor",
    "ContinueHead",
    "PolicyHead",
    "PolicyLogits",
    "RLConfig",
    "RewardHead",
    "TwoHot",
    "TwoHotHead",
    "ValueHead",
    "bc_accuracy",
    "bc_loss",
    "check_batch",
    "entropy",
    "entry_log_probs",
    "kl",
    "lambda_returns",
    "log_prob",
    "make_bins",
    "max_prob",
    "mode",
    "phase2_loss",
    "pmpo_loss",
    "pmpo_stats",
    "run_agent_episodes",
    "sample",
    "symexp",
    "symlog",
    "value_loss",
]
