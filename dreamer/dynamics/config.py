"""Configuration of the phase-1 dynamics model (docs/design.md §4).

`DynamicsConfig` holds every hyper-parameter of the model, the shortcut-forcing loss and the sampler.
Defaults are CPU-sized for a demo.  `__post_init__` validates the values and raises `ValueError`
naming the offending field.

Signal-level / step-size grid (shared by the model, the loss and the sampler):
  * signal level tau = tau_idx / k_max, tau_idx in {0, ..., k_max}; tau=0 pure noise, tau=1 clean.
  * step size Δ = 2**-step_idx, step_idx in {0, ..., log2(k_max)}; Δ_min = 1/k_max (step_idx = log2 k_max).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def _is_pow2(x: int) -> bool:
    return isinstance(x, int) and x >= 1 and (x & (x - 1)) == 0


@dataclass
class DynamicsConfig:
    # --- transformer ---------------------------------------------------------------------------
    d_model: int = 128  # transformer width
    num_layers: int = 4  # transformer blocks (space and time layers)
    num_heads: int = 4  # attention heads
    num_kv_heads: int = 2  # grouped-query attention; == num_heads disables it
    num_registers: int = 4  # register tokens per step
    time_every: int = 2  # layer i is a causal time layer iff (i + 1) % time_every == 0, else space-only
    mlp_ratio: float = 8.0 / 3.0  # SwiGLU hidden width = mlp_ratio * d_model, rounded up to a multiple of 8
    qk_norm: bool = True  # RMS-normalise queries and keys
    # Action routing (docs/design.md §4, "What phase 1 needs"): each step's latent tokens also receive the previous
    # step's token embeddings mixed by an N x N map chosen by the action chunk that leads into the step (one learned
    # map per action value, summed over the chunk's valid sub-steps and components). It lets an action MOVE content
    # between tokens (a step in Crafter scrolls the view), which the attention layers alone do not learn on a CPU
    # budget. False = the paper's design (and that of checkpoints saved before the option existed).
    action_routing: bool = False
    routing_scale: float = 10.0  # maps are stored divided by this (zero init), so Adam moves them this much faster
    # "zero": every map starts at 0 (the routed term is learned from nothing); "identity": a full chunk's maps sum to
    # the identity at init, so every step starts out receiving the previous step's tokens in place (copy-last).
    routing_init: str = "zero"
    # What the maps move: "shared" = the previous step's token embeddings (the Linear C -> d that also embeds the
    # current step's noisy input: both land, summed, in the same C-dim subspace); "own" = a second Linear C -> d of the
    # previous step. "own" gains on the synthetic scroll task, not on Crafter's latents (docs/design.md §4).
    routing_input: str = "shared"
    # A gate on the routed term, one per step: routed = g R(a) e + (1 - g) e, with e the previous step's routed
    # embeddings and g = sigmoid of a few features of each token of e (an MLP of its embedding and slot) weighed by one
    # weight per (action value, token, feature). An action does not always take effect (a move into a tree turns the
    # player but leaves the view in place); the gate reads that where it is decided and keeps the view, instead of the
    # model blending the two futures token by token (docs/design.md §4). False = no gate (older checkpoints).
    routing_gate: bool = False
    max_time: int = 64  # max latent steps in one sequence (RoPE table size, KV-cache capacity)
    # --- shortcut forcing ----------------------------------------------------------------------
    k_max: int = 64  # Δ_min = 1/k_max; power of two
    sample_steps: int = 4  # K sampling steps per generated latent (Δ = 1/K); power of two <= k_max
    context_noise: float = 0.1  # context corruption at sampling time: ~ (1-c) z + c eps (snapped to grid)
    rms_normalise: bool = True  # divide the loss by a running RMS estimate (docs/design.md §4)
    # True: each term by its own RMS (flow/rms_f + boot/rms_b).  Measured unstable (bootstrap collapses to
    # the identity map, see shortcut.py), so the default normalises the combined loss by one shared RMS.
    rms_per_term: bool = False
    rms_decay: float = 0.99  # decay of the running RMS that divides the loss terms
    # Fraction of batch ROWS (whole sequences) trained with bootstrap steps (Δ > Δ_min); the other rows
    # use Δ = Δ_min (flow term) at every step.  Inside a bootstrap row, every step draws
    # j ~ U{0, ..., log2(k_max) - 1}.  The row count is drawn with stochastic rounding, so its
    # expectation is exactly bootstrap_fraction * B.  Rows are split so the (2 extra) teacher passes only
    # run on bootstrap rows.  0.25 follows the paper's practice of spending a minority of the batch on
    # the bootstrap target.  None = the distribution of docs/design.md §4: every (row, step) draws
    # j ~ U{0, ..., log2 k_max} independently, Δ = 2**-j (so P(Δ = Δ_min) = 1/(log2 k_max + 1)).
    bootstrap_fraction: float | None = 0.25
    # Fraction of (row, step) positions trained at the sampler's context level instead of their drawn signal level:
    # tau = the grid level nearest 1 - context_noise, a flow step (Δ_min), as every context latent looks when the model
    # generates (sampler.py). With independent levels alone a step's predecessor is half noise on average, whereas
    # at generation time it is nearly clean; this shows the model the contexts it will be given (docs/design.md §4,
    # "What phase 1 needs"). 0 = the independent levels of diffusion forcing alone. Held-out figures always draw
    # without it, so they stay comparable across settings.
    context_fraction: float = 0.0

    def __post_init__(self) -> None:
        def bad(field: str, msg: str) -> ValueError:
            return ValueError(f"DynamicsConfig.{field}={getattr(self, field)!r}: {msg}")

        for f in ("d_model", "num_layers", "num_heads", "num_kv_heads", "max_time", "k_max", "sample_steps"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(f, "must be a positive integer")
        if not isinstance(self.num_registers, int) or self.num_registers < 0:
            raise bad("num_registers", "must be an integer >= 0")
        if self.d_model % self.num_heads:
            raise bad("d_model", f"must be divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise bad("num_heads", "head dim d_model/num_heads must be even (RoPE)")
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise bad("num_kv_heads", f"must divide num_heads={self.num_heads} (grouped-query attention)")
        if not isinstance(self.time_every, int) or self.time_every < 2:
            raise bad("time_every", "must be an integer >= 2 (time_every=1 leaves no space layer, so tokens "
                      "of one step could never exchange information)")
        if self.num_layers < self.time_every:
            raise bad("num_layers", f"must be >= time_every={self.time_every}, else there is no time layer")
        if not self.mlp_ratio > 0:
            raise bad("mlp_ratio", "must be > 0")
        if not _is_pow2(self.k_max) or self.k_max < 2:
            raise bad("k_max", "must be a power of two >= 2 (Δ_min = 1/k_max, Δ = 2^-j)")
        if not _is_pow2(self.sample_steps) or self.sample_steps > self.k_max:
            raise bad("sample_steps", f"must be a power of two <= k_max={self.k_max}")
        if not 0.0 <= self.context_noise < 1.0:
            raise bad("context_noise", "must be in [0, 1)")
        if not self.routing_scale > 0:
            raise bad("routing_scale", "must be > 0")
        if self.routing_init not in ("zero", "identity"):
            raise bad("routing_init", "must be 'zero' or 'identity'")
        if self.routing_input not in ("shared", "own"):
            raise bad("routing_input", "must be 'shared' or 'own'")
        if self.routing_gate and not self.action_routing:
            raise bad("routing_gate", "needs action_routing: true (it gates the routed term)")
        for f in ("qk_norm", "rms_normalise", "rms_per_term", "action_routing", "routing_gate"):
            if not isinstance(getattr(self, f), bool):
                raise bad(f, "must be a bool")
        if not 0.0 < self.rms_decay < 1.0:
            raise bad("rms_decay", "must be in (0, 1)")
        if not 0.0 <= self.context_fraction < 1.0:
            raise bad("context_fraction", "must be in [0, 1)")
        if self.bootstrap_fraction is not None and not 0.0 <= self.bootstrap_fraction <= 1.0:
            raise bad("bootstrap_fraction", "must be None or in [0, 1]")

    # --- derived quantities --------------------------------------------------------------------
    @property
    def num_step_sizes(self) -> int:
        """Number of step-size indices: j in {0..log2 k_max}."""
        return int(math.log2(self.k_max)) + 1

    @property
    def min_step_idx(self) -> int:
        """step_idx of Δ_min = 1/k_max."""
        return self.num_step_sizes - 1

    @property
    def mlp_hidden(self) -> int:
        h = math.ceil(self.mlp_ratio * self.d_model)
        return (h + 7) // 8 * 8

    def is_time_layer(self, i: int) -> bool:
        return (i + 1) % self.time_every == 0

    def to_dict(self) -> dict:
        return asdict(self)
