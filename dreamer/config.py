"""The resolved configuration of a run: one typed dataclass per component (DIAMOND style).

Presets in ``configs/`` stack (``include:``) and ``--set key=value`` overrides any leaf; see
:mod:`dreamer.presets` for the rules. Every phase saves the resolved config in its run directory.

Keys that moved (:data:`MOVED`) are refused by their old name, naming the new one; a checkpoint's saved config
(``ckpt["config"]``, written before a move) is read with :func:`from_saved`, which moves them and logs it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dreamer.agent.config import AgentConfig, RLConfig
from dreamer.data.config import DataConfig
from dreamer.dynamics.config import DynamicsConfig
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.imagination.pmpo import PMPOConfig
from dreamer.presets import ConfigError, apply_override, from_dict, load_config, reference, refuse_moved
from dreamer.tokenizer.config import TokenizerConfig
from dreamer.training.config import EvalConfig, Phase0Config, Phase1Config, Phase2Config, Phase3Config

log = logging.getLogger(__name__)

# Keys that moved to another section, {old: new}: PMPO's settings became the pmpo section (issue #26).
MOVED = {
    "rl.alpha": "pmpo.alpha",
    "rl.beta": "pmpo.beta",
    "rl.center_advantages": "pmpo.center_advantages",
    "phase3.value_warmup": "pmpo.value_warmup",
    "phase3.min_sign_fraction": "pmpo.min_sign_fraction",
}


@dataclass
class Config:
    run: str = "crafter_tiny"  # run name: checkpoints/<run>/ holds checkpoints, logs and config.yaml
    seed: int = 0  # seeds Python, NumPy and torch (each rank adds its rank)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_root: str = "checkpoints"  # run folders live in <checkpoint_root>/<run>/
    threads: int = 0  # torch intra-op threads (0 = PyTorch's default)
    min_free_mb: int | None = None  # free disk a run needs before it trains; null: 3x its largest checkpoint, >= 16
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    pmpo: PMPOConfig = field(default_factory=PMPOConfig)
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
            raise ValueError(f"min_free_mb must be >= 0 or null (derived from the run's checkpoints), got "
                             f"{self.min_free_mb}")
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
    """The run's config from the presets ``paths`` (stacked) and the ``--set`` ``overrides``."""
    return load_config(Config, paths, overrides, moved=MOVED)


def upgrade_saved(data: dict, where: str = "checkpoint") -> dict:
    """A saved config dict (``ckpt["config"]``) in today's layout: each key of :data:`MOVED` found under its
    old name is moved to its new one (the new one wins when both are there), with a log line. A copy."""
    data = copy.deepcopy(data)
    for old, new in MOVED.items():
        (sec, key), (new_sec, new_key) = old.split("."), new.split(".")
        section = data.get(sec)
        if not isinstance(section, dict) or key not in section:
            continue
        value = section.pop(key)
        target = data.setdefault(new_sec, {})
        if new_key in target:
            log.info("%s config: dropped the old key %s (%r): %s is set", where, old, value, new)
        else:
            target[new_key] = value
            log.info("%s config: read the old key %s = %r as %s", where, old, value, new)
    return data


def from_saved(data: dict, overrides: Sequence[str] = (), where: str = "checkpoint") -> Config:
    """The :class:`Config` of a saved config dict (``ckpt["config"]``, any layout since issue #26:
    :func:`upgrade_saved`), with ``--set`` ``overrides`` on top (an old key among them is refused)."""
    data = upgrade_saved(data, where)
    sources = []
    for o in overrides:
        data = apply_override(data, o)
        sources.append((f"--set {o}", apply_override({}, o)))
    refuse_moved(data, MOVED, sources)
    return from_dict(Config, data)


def reference_markdown() -> str:
    """docs/config.md: every key of :class:`Config`, its type, default and meaning (the comment on its field),
    one table per section. ``python -m dreamer.config > docs/config.md`` regenerates it; a test keeps it in sync."""
    rows = reference(Config)
    out = ["# Config reference", "",
           "Every key of a run's config (`dreamer/config.py` and the dataclasses it holds): its type, default and",
           "meaning. Presets in `configs/` set some of them (`include:` stacks presets), `--set key=value` any one;",
           "the resolved config is saved in the run folder as `config_<phase>.yaml`. An unknown key is refused in",
           "one line naming it, its close matches and where it was set. Generated by `python -m dreamer.config >",
           "docs/config.md` from the comments on the fields; `tests/test_configuration.py` fails when it is stale.", ""]
    sections: dict[str, list] = {}
    for key, tp, default, meaning in rows:
        sections.setdefault(key.split(".")[0] if "." in key else "", []).append((key, tp, default, meaning))
    for name, items in sections.items():
        title = f"`{name}`" if name else "Top level"
        out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{k}` | {_cell(t)} | `{d}` | {_cell(m)} |" for k, t, d, m in items]
        out.append("")
    out += ["## Moved keys", "",
            "Refused under their old name (the error names the new one); a checkpoint's saved config is read with",
            "them moved (`dreamer.config.from_saved`, logged).", "", "| old key | new key |", "|---|---|"]
    out += [f"| `{old}` | `{new}` |" for old, new in MOVED.items()]
    out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    print(reference_markdown(), end="")


__all__ = ["MOVED", "Config", "ConfigError", "from_saved", "load", "upgrade_saved"]
