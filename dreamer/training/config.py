"""Per-phase training settings (optimiser, schedule, logging, checkpoints)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _check(cond: bool, section: str, key: str, value, want: str) -> None:
    if not cond:
        raise ValueError(f"{section}.{key} must be {want}, got {value!r}")


@dataclass
class PhaseConfig:
    steps: int = 1000  # training steps
    batch_size: int = 16  # clips per batch (per rank)
    lr: float = 3e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # the cosine schedule ends at min_lr_ratio * lr
    grad_clip: float = 1.0  # clip each parameter group's gradient norm to this (0 = no clipping)
    log_every: int = 10  # TensorBoard scalars every this many steps
    eval_every: int = 250  # held-out figures / real-env evaluation
    ckpt_every: int = 250  # periodic checkpoint <phase>_step<N>.pt (atomic)
    keep_checkpoints: int = 2  # periodic checkpoints kept (the oldest are pruned)
    # bf16 autocast, fp32 master weights (CUDA, or CPUs with bf16 kernels: elsewhere float32, dreamer/precision.py;
    # CPU attention stays fp32)
    bf16: bool = False
    # torch.compile the trained model (phase 3: the trunk and the KV-cached dynamics step), on CUDA or the CPU (a C++
    # compiler on PATH); compiling takes 20-60 s on 2 CPU cores, so it pays on runs of a few hundred steps
    compile: bool = False
    fsdp: bool = False  # under torchrun: shard the model with FSDP2 instead of DDP (dreamer/training/sharding.py)
    diagnose: bool = True  # run diagnose_phase() before training and stop on a failure
    max_nonfinite: int = 5  # stop after this many non-finite losses/gradients in a row

    def __post_init__(self):
        sec = type(self).__name__.removesuffix("Config").lower()  # phase1, ... (PhaseConfig: "phase")
        for name in ("steps", "batch_size", "log_every", "eval_every", "ckpt_every", "keep_checkpoints",
                     "max_nonfinite"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, sec, name, v, "an int >= 1")
        _check(isinstance(self.warmup, int) and self.warmup >= 0, sec, "warmup", self.warmup, "an int >= 0 (steps)")
        _check(math.isfinite(self.lr) and self.lr > 0, sec, "lr", self.lr, "> 0")
        _check(math.isfinite(self.weight_decay) and self.weight_decay >= 0, sec, "weight_decay", self.weight_decay,
               ">= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, sec, "min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(math.isfinite(self.grad_clip) and self.grad_clip >= 0, sec, "grad_clip", self.grad_clip,
               ">= 0 (0 = no clipping)")


@dataclass
class Phase0Config(PhaseConfig):
    clip_frames: int = 9  # frames per training clip (1 + S*k)
    out_dir: str = ""  # where the fitted tokenizer is saved (default <run dir>/tokenizer)
    # Weights to fine-tune from (local dir or hub id). "" = tokenizer.pretrained when it is set and is
    # not this phase's own output (out_dir), else a fresh tokenizer.preset with random weights.
    init_from: str = ""
    perceptual_weight: float = 0.0  # weight of the structural term (1 - SSIM) added to the MSE
    # Two terms that keep small sprites, added to the MSE (docs/tokenizer.md; measured: no difference, so 0 = off).
    # This one weighs the mean absolute error.
    l1_weight: float = 0.0
    peak_weight: float = 0.0  # weight of each frame's worst pixel's squared error (colours averaged), frames averaged
    eval_clips: int = 16  # held-out clips for the reconstruction PSNR
    # Stop once `patience` held-out evaluations in a row gained less than `min_delta` dB over the best before
    # them (0 = always run all `steps`); the tokenizer is then saved from the step it stopped at.
    patience: int = 0
    min_delta: float = 0.1  # see patience
    # Weight of the auxiliary behaviour loss: an ActionHead predicts each latent step's action chunk from the
    # pooled latent, so the fitted latents carry what the agent must decide (0 = reconstruction only).
    action_weight: float = 0.0
    # Weight of the auxiliary state loss (dreamer/tokenizer/state_head.py): a StateHead predicts the Crafter state
    # of each latent's frame (the 9 x 7 view cells' ids, the inventory counts, the facing) from the pooled latent, so
    # the fitted latents keep the sprites. Needs episodes with the state extras; 0 = off (MineRL, VPT).
    state_weight: float = 0.0
    # The state loss's view cells weight each semantic id by (its share of the training episodes' cells)^-power,
    # normalised to a weighted mean of 1: 0 = unweighted; 0.5 = inverse square root, so a cow (0.44% of the cells) counts
    # about 10x grass (45%) (docs/tokenizer.md). Only with state_weight > 0.
    state_class_power: float = 0.0
    # At the end, the held-out state probe (diagnostics.probe.tokenizer_probe) on every probe_stride-th latent of the
    # episodes, when they record Crafter's state: the fitted latents beside the token-grid colours and the state
    # encoder (docs/tokenizer.md). 0 = skip.
    probe_stride: int = 4
    gradient_checkpointing: bool = False  # trade compute for activation memory (large presets on a GPU)

    def __post_init__(self):
        super().__post_init__()
        if self.clip_frames < 2:
            raise ValueError(f"clip_frames must be 1 + S*k with k >= 1, got {self.clip_frames}")
        if self.fsdp:
            raise ValueError("phase0.fsdp is not supported: the tokenizer (at most ~106M parameters, cv8x8x8) fits one "
                             "device; under torchrun phase 0 uses DDP. Use phase0.gradient_checkpointing to save memory")
        for name in ("patience", "min_delta", "action_weight", "state_weight", "state_class_power", "probe_stride",
                     "l1_weight", "peak_weight"):
            _check(getattr(self, name) >= 0, "phase0", name, getattr(self, name), ">= 0")
        if not self.perceptual_weight >= 0 or self.eval_clips < 1:
            raise ValueError(f"perceptual_weight must be >= 0 and eval_clips >= 1, got {self.perceptual_weight}, "
                             f"{self.eval_clips}")


@dataclass
class Phase1Config(PhaseConfig):
    eval_batches: int = 4  # held-out batches for the quality figures
    eval_context: int = 4  # context latent steps for open-loop evaluation
    clip_len: int = 0  # latent steps per dynamics training clip; 0 = data.clip_len (the agent's history)

    def __post_init__(self):
        super().__post_init__()
        for name in ("eval_batches", "eval_context"):
            _check(getattr(self, name) >= 1, "phase1", name, getattr(self, name), ">= 1")
        _check(self.clip_len == 0 or self.clip_len >= 2, "phase1", "clip_len", self.clip_len, "0 (data.clip_len) or >= 2")


@dataclass
class Phase2Config(PhaseConfig):
    eval_episodes: int = 10  # real-env episodes for BC and random policies at the end (0 = skip)
    eval_baselines: bool = True  # the final evaluation also plays the random and the frame-blind policies
    # Also keep the weights of the lowest held-out BC NLL (checked every eval_every steps) as phase2_best.pt:
    # on the fitted latents it tracked the real-env return across one run's checkpoints; on the state latents it
    # does not (lowest NLL at step 250: 3.80 against the final's 6.37; docs/agent.md). The final checkpoint,
    # its evaluation and the handoff stay the last step's; phase 3 starts from the best when given it.
    keep_best: bool = False
    # Real-env curve: every env_eval_every steps the BC policy plays env_eval_episodes episodes (seeds eval.seed + i),
    # logged as TensorBoard curves env/bc/* that end at the final evaluation's figures; 0 = the end only.
    env_eval_every: int = 0
    env_eval_episodes: int = 4  # episodes of each point of the curve

    def __post_init__(self):
        super().__post_init__()
        _check(self.eval_episodes >= 0, "phase2", "eval_episodes", self.eval_episodes, ">= 0 (0 = skip)")
        _check(self.env_eval_every >= 0, "phase2", "env_eval_every", self.env_eval_every, ">= 0 (0 = the end only)")
        _check(self.env_eval_episodes >= 1, "phase2", "env_eval_episodes", self.env_eval_episodes, ">= 1")


@dataclass
class Phase3Config(PhaseConfig):
    horizon: int = 16  # imagined latent steps per rollout
    context: int = 4  # context latent steps sampled from the cache
    value_lr: float = 3e-4  # learning rate of the value head (the policy's is lr)
    eval_episodes: int = 10  # real-env episodes at the end (and periodically if eval_every < steps)
    eval_baselines: bool = True  # the final evaluation also plays the random and the phase-2 (BC) policies
    exploit_episodes: int = 4  # episodes of the imagined-against-real return check (0 = skip)
    # K sampling steps per imagined latent (training, the exploitation check, the videos); 0 = the world model's own
    # dynamics.sample_steps. A sampler setting, not a weight: 1 jumps from noise to the expected latent in one pass
    # (on the state latents 0.78x copy-last at h 8 against K = 4's 0.91x, docs/agent.md).
    sample_steps: int = 0
    # PMPO's settings (the value warm-up and the sign gate included) are the pmpo section (dreamer/imagination/pmpo.py)

    def __post_init__(self):
        super().__post_init__()
        for name in ("horizon", "context"):
            _check(getattr(self, name) >= 1, "phase3", name, getattr(self, name), ">= 1")
        _check(math.isfinite(self.value_lr) and self.value_lr > 0, "phase3", "value_lr", self.value_lr, "> 0")
        _check(self.eval_episodes >= 0, "phase3", "eval_episodes", self.eval_episodes, ">= 0 (0 = skip)")
        _check(self.exploit_episodes >= 0, "phase3", "exploit_episodes", self.exploit_episodes, ">= 0 (0 = skip)")
        _check(self.sample_steps >= 0 and self.sample_steps & (self.sample_steps - 1) == 0, "phase3", "sample_steps",
               self.sample_steps, "0 (the world model's) or a power of two")


@dataclass
class EvalConfig:
    seed: int = 10_000  # episode i of an evaluation uses seed + i, for every policy compared
    max_steps: int = 500  # env steps per evaluation episode
    greedy: bool = False  # agents take their most likely action instead of sampling
    reset_workers: int = 1  # processes that reset the evaluation envs (Crafter builds each world in ~1 s)

    def __post_init__(self):
        _check(self.seed >= 0, "eval", "seed", self.seed, ">= 0 (episode i is reset with seed + i)")
        _check(self.max_steps >= 1, "eval", "max_steps", self.max_steps, ">= 1")
        _check(self.reset_workers >= 1, "eval", "reset_workers", self.reset_workers, ">= 1")
