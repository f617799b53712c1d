"""Phase-1 dynamics model with shortcut forcing (docs/design.md §4).

Public API:
    DynamicsConfig                         -- hyper-parameters (config.py)
    DynamicsModel, KVCache                 -- block-causal transformer, x-prediction (model.py)
    ShortcutForcingLoss, RunningRMS, sample_tau_step   -- training objective (shortcut.py)
    shortcut_sample, Rollout, rollout, context_tau_idx -- inference (sampler.py)
    heldout_metrics, verdict               -- held-out quality vs baselines, in one plain line (evaluate.py)
"""

from .config import DynamicsConfig
from .evaluate import heldout_metrics, verdict
from .model import DynamicsModel, KVCache
from .sampler import Rollout, context_tau_idx, rollout, shortcut_sample
from .shortcut import RunningRMS, ShortcutForcingLoss, sample_tau_step

__all__ = [
    "DynamicsConfig",
    "DynamicsModel",
    "KVCache",
    "Rollout",
    "RunningRMS",
    "ShortcutForcingLoss",
    "context_tau_idx",
    "heldout_metrics",
    "rollout",
    "sample_tau_step",
    "shortcut_sample",
    "verdict",
]
