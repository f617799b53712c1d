"""The resolved configuration of a run: one typed dataclass per component (DIAMOND style).

Presets in ``configs/`` stack (``include:``) and ``--set key=value`` overrides any leaf; see
:mod:`dreamer.presets` for the rules. Every phase saves the resolved config in its run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dreamer.agent.config import AgentConfig, RLConfig
from dreamer.data.config import DataConfig
from dreamer.dynamics.config import DynamicsConfig
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.presets import ConfigError, load_config
from dreamer.tokenizer.config import TokenizerConfig
from dreamer.training.config import EvalConfig, Phase0Config, Phase1Config, Phase2Config, Phase3Config


@dataclass
class Config:
    run: str = "crafter_tiny"  # run name: checkpoints/<run>/ holds checkpoints, logs and config.yaml
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_root: str = "checkpoints"
    threads: int = 0  # torch intra-op threads (0 = PyTorch's default)
    min_free_mb: int | None = None  # free disk a run needs before it trains; null: 3x its largest checkpoint, >= 16
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    phase0: Phase0Config = field(default_factory=Phase0Config)
    phase1: Phase1Config = field(default_factory=Phase1Config)
    phase2: Phase2Config = field(default_factory=Phase2Config)
    phase3: Phase3Config = field(default_factory=Phase3Config)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if not self.run.strip() or ".." in Path(self.run).parts or Path(self.run).is_absolute():
            raise ValueError(f"run must name a folder under checkpoint_root (no '..', not absolute), got {self.run!r}")
        if not self.checkpoint_root.strip():
            raise ValueError("checkpoint_root must not be empty")
        if self.min_free_mb is not None and self.min_free_mb < 0:
            raise ValueError(f"min_free_mb must be >= 0 or null (derived from the run's checkpoints), got {self.min_free_mb}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = PyTorch's default), got {self.threads}")
        clip_len = self.phase1.clip_len or self.data.clip_len  # the clips phase 1 evaluates on
        if self.phase1.eval_context >= clip_len:  # both from this config (dynamics may come from a checkpoint)
            raise ValueError(f"phase1.eval_context={self.phase1.eval_context} must be < the phase-1 clip length "
                             f"{clip_len} (phase1.clip_len or data.clip_len): the held-out rollout predicts the rest "
                             "of each clip")

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoint_root) / self.run


def load(paths: list[str] | None = None, overrides: list[str] | None = None) -> Config:
    return load_config(Config, paths, overrides)


__all__ = ["Config", "ConfigError", "load"]
