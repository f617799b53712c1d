"""Phase 3 (docs/design.md §6): imagination rollouts in the frozen world model and the PMPO / TD(lambda) losses.

Public API:
    Imagined, imagine, recompute_features            -- rollouts (rollout.py)
    phase3_terms, phase3_losses, Phase3Terms         -- PMPO + value losses (losses.py)
    PMPOConfig, pmpo, PMPOTerms, pmpo_loss, pmpo_stats, policy_gate
                                                     -- PMPO, all of it: config, advantages (pmpo.advantages),
                                                        loss, figures, the policy-update gate (pmpo.py)
    rollout_metrics, latent_drift, correlation       -- their metrics (losses.py)
    make_phase3_optimizer, grouped_step              -- policy / value parameter groups (optim.py)
"""

from .losses import (
    NONZERO_REWARD,
    Phase3Terms,
    correlation,
    drift_steps,
    latent_drift,
    phase3_losses,
    phase3_terms,
    rollout_metrics,
)
from .optim import grouped_step, make_phase3_optimizer
from .pmpo import PMPOConfig, PMPOTerms, pmpo, pmpo_loss, pmpo_stats, policy_gate
from .rollout import Imagined, imagine, recompute_features

__all__ = [
    "NONZERO_REWARD",
    "Imagined",
    "PMPOConfig",
    "PMPOTerms",
    "Phase3Terms",
    "correlation",
    "drift_steps",
    "grouped_step",
    "imagine",
    "latent_drift",
    "make_phase3_optimizer",
    "phase3_losses",
    "phase3_terms",
    "pmpo",
    "pmpo_loss",
    "pmpo_stats",
    "policy_gate",
    "recompute_features",
    "rollout_metrics",
]
