"""Agent library (docs/design.md §5, §6, §8).

- maths: symlog / symexp, `TwoHot` (encode / loss / decode, float32).
- config: `AgentConfig` (architecture, the policy head's kind, phase-2 loss weights), `RLConfig` (gamma_env, lam
  of the λ-returns).
- model: `Agent` = `trunk` (causal transformer, latents (B,T,N,C) -> h (B,T,d)) + `policy`
  (h -> `PolicyDist`) + `reward` / `value` (two-hot, zero-init) + `cont` (Bernoulli).
- policy: `PolicyDist`, the distribution over an action chunk (log_prob, entry_log_probs, entropy, kl, sample,
  mode, max_prob), and the policy heads (`POLICY_HEADS`, chosen by `agent.policy_head`).
- losses: `bc_loss`, `bc_accuracy`, `phase2_loss`.
- rl: `lambda_returns`, `value_loss` (PMPO is `dreamer.imagination.pmpo`).
- acting: `ChunkActor` (one decision per chunk in the real env, cache-identical latents), `AgentPolicy` (one env,
  step by step), `AgentBatchPolicy` (the policy of the episode runner `dreamer.envs.runner.run_episodes`, which
  plays the baselines too).
"""

from .acting import AgentBatchPolicy, AgentPolicy, ChunkActor
from .config import AgentConfig, RLConfig
from .losses import BATCH_KEYS, bc_accuracy, bc_loss, check_batch, phase2_loss
from .maths import TwoHot, make_bins, symexp, symlog
from .model import Agent, AgentTrunk, ContinueHead, RewardHead, TwoHotHead, ValueHead
from .policy import POLICY_HEADS, PolicyDist, PolicyHead, make_policy_head
from .rl import lambda_returns, value_loss

__all__ = [
    "BATCH_KEYS",
    "POLICY_HEADS",
    "Agent",
    "AgentBatchPolicy",
    "AgentConfig",
    "AgentPolicy",
    "AgentTrunk",
    "ChunkActor",
    "ContinueHead",
    "PolicyDist",
    "PolicyHead",
    "RLConfig",
    "RewardHead",
    "TwoHot",
    "TwoHotHead",
    "ValueHead",
    "bc_accuracy",
    "bc_loss",
    "check_batch",
    "lambda_returns",
    "make_bins",
    "make_policy_head",
    "phase2_loss",
    "symexp",
    "symlog",
    "value_loss",
]
