import pytest
import yaml

from dreamer.config import Config, load
from dreamer.presets import ConfigError


def test_presets_load():
    for name in ("crafter_tiny",):
        cfg = load([f"configs/{name}.yaml"])
        assert isinstance(cfg, Config) and cfg.run == name


def test_stacking_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"run": "a", "data": {"clip_len": 8}, "phase1": {"steps": 5}}))
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({"include": ["base.yaml"], "phase1": {"steps": 7}}))
    cfg = load([str(top)], ["data.clip_len=32", "tokenizer.pretrained=null", "phase1.lr=0.01"])
    assert cfg.run == "a" and cfg.phase1.steps == 7 and cfg.data.clip_len == 32
    assert cfg.tokenizer.pretrained is None and cfg.phase1.lr == 0.01


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['clip_length'\] in section 'data'; valid keys: .*clip_len"):
        load(None, ["data.clip_length=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load(None, ["nonsense=1"])


def test_bad_types_and_values():
    with pytest.raises(ConfigError, match="phase1.steps.*expected int"):
        load(None, ["phase1.steps=many"])
    with pytest.raises(ConfigError, match="pool"):
        load(None, ["tokenizer.pool=0"])
    with pytest.raises(ConfigError, match="key=value"):
        load(None, ["phase1.steps"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load(["configs/nope.yaml"])
