"""Every number a check compares against, in one place (pass ``thresholds=Thresholds(...)`` to change)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Thresholds:
    # every phase
    latent_std_min: float = 1e-6  # batch latents with a smaller overall std are constant: fail
    latent_dead_channel: float = 1e-4  # a channel whose std is below this is dead: warn
    latent_std_range: tuple[float, float] = (0.1, 10.0)  # standardised latents outside this: warn
    memory_frac_warn: float = 0.9  # warn when this fraction of device / system memory is used
    min_learning_steps: int = 100  # learning-dependent checks are judged from this optimiser step on
    # phase 1
    grad_norm_max: float = 100.0
    grad_norm_min: float = 1e-6
    shuffle_ratio_min: float = 1.0  # action-shuffle ratio must be above this once trained
    # phase 2
    bc_chance_margin: float = 0.05  # BC accuracy must beat uniform chance by this much once trained
    collapse_max_prob: float = 0.99  # mean largest action probability above this ...
    collapse_entropy: float = 0.05  # ... together with mean entropy (nats / entry) below this: collapsed
    reward_spread_min: float = 0.01  # std of predicted rewards over the batch
    histogram_max_frac: float = 0.9  # one action class holding this fraction or more
    # phase 3
    min_advantage_count: int = 10  # fewer positive or negative advantages than this: fail
    min_advantage_fraction: float = 0.05  # ... or fewer than this fraction of the (batch, time) pairs
    advantage_zero: float = 1e-8
    imagined_reward_zero: float = 1e-6  # max |imagined reward| below this counts as "always 0"
    entropy_min: float = 0.1  # policy entropy, nats per (sub-step, component) entry
    drift_warn: float = 0.75  # imagined-latent drift (see diagnostics.phase3) above this: warn
    drift_fail: float = 1.5  # ... above this: fail
