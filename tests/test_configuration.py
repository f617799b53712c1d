from pathlib import Path

import pytest
import yaml

from dreamer.config import Config, load
from dreamer.presets import ConfigError


def test_presets_load():
    for name in ("crafter_tiny",):
        cfg = load([f"configs/{name}.yaml"])
        assert isinstance(cfg, Config) and cfg.run == name
    for path in sorted(Path("configs").glob("*.yaml")):  # every preset passes validation, alone or on the tiny base
        load([str(path)] if path.name != "test.yaml" else ["configs/crafter_tiny.yaml", str(path)])


def test_stacking_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"run": "a", "data": {"clip_len": 8}, "phase1": {"steps": 5}}))
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({"include": ["base.yaml"], "phase1": {"steps": 7}}))
    cfg = load([str(top)], ["data.clip_len=32", "tokenizer.pretrained=null", "phase1.lr=0.01"])
    assert cfg.run == "a" and cfg.phase1.steps == 7 and cfg.data.clip_len == 32
    assert cfg.tokenizer.pretrained is None and cfg.phase1.lr == 0.01
    # YAML 1.1 reads 5e-4 (no dot) as a string: a float key takes it as the number it is
    assert load(None, ["phase0.lr=5e-4"]).phase0.lr == 5e-4


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['clip_length'\] in section 'data'; valid keys: .*clip_len"):
        load(None, ["data.clip_length=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load(None, ["nonsense=1"])


def test_bad_types_and_values():
    with pytest.raises(ConfigError, match="phase1.steps.*expected int"):
        load(None, ["phase1.steps=many"])
    with pytest.raises(ConfigError, match="phase1.lr.*expected float"):
        load(None, ["phase1.lr=fast"])
    with pytest.raises(ConfigError, match="pool"):
        load(None, ["tokenizer.pool=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load(None, ["phase1.steps"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load(["configs/nope.yaml"])


@pytest.mark.parametrize("assignment, named", [
    ("phase1.warmup=-5", r"phase1.warmup must be an int >= 0 \(steps\), got -5"),
    ("phase3.warmup=-1", "phase3.warmup"),
    ("phase2.keep_checkpoints=0", "phase2.keep_checkpoints must be an int >= 1"),
    ("phase1.max_nonfinite=0", "phase1.max_nonfinite"),
    ("phase1.min_lr_ratio=1.5", r"phase1.min_lr_ratio must be in \[0, 1\]"),
    ("phase2.weight_decay=-0.1", "phase2.weight_decay must be >= 0"),
    ("phase1.grad_clip=-1", "phase1.grad_clip must be >= 0"),
    ("phase1.lr=.nan", "phase1.lr must be > 0, got nan"),
    ("phase0.lr=.inf", "phase0.lr"),
    ("phase1.eval_batches=0", "phase1.eval_batches"),
    ("phase1.eval_context=16", r"phase1.eval_context=16 must be < the phase-1 clip length 16"),
    ("phase2.eval_episodes=-1", "phase2.eval_episodes must be >= 0"),
    ("phase3.horizon=0", "phase3.horizon must be >= 1"),
    ("phase3.context=0", "phase3.context"),
    ("phase3.value_warmup=-3", "phase3.value_warmup must be >= 0"),
    ("phase3.value_lr=0", "phase3.value_lr must be > 0"),
    ("phase3.eval_episodes=-2", "phase3.eval_episodes"),
    ("eval.max_steps=0", "eval.max_steps must be >= 1"),
    ("eval.seed=-1", "eval.seed must be >= 0"),
    ("tokenizer.resolution=0", "tokenizer.resolution must be a positive multiple of 8"),
    ("threads=-1", "threads must be >= 0"),
    ("run=../elsewhere", "run must name a folder under checkpoint_root"),
    ("run=''", "run must name a folder"),
])
def test_out_of_range_values_are_refused_by_name(assignment, named):
    with pytest.raises(ConfigError, match=named):
        load(None, [assignment])
