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
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['clip_length'\] in section 'data'; did you mean "
                                          r"'clip_len' for 'clip_length'\?; valid keys: .*clip_len.* \(set in --set "
                                          r"data.clip_length=3\)"):
        load(None, ["data.clip_length=3"])
    with pytest.raises(ConfigError, match="unknown config key") as e:
        load(None, ["nonsense=1"])
    assert "did you mean" not in str(e.value)


def test_a_bad_key_in_a_preset_names_the_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"phase1": {"stpes": 5}}))
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({"include": ["base.yaml"], "run": "x"}))
    with pytest.raises(ConfigError, match=rf"did you mean 'steps' for 'stpes'\?.*\(set in {top}\)"):
        load([str(top)])  # the include resolves into the file given
    base.write_text(yaml.safe_dump({"phase1": {"steps": "many"}}))
    with pytest.raises(ConfigError, match=rf"'phase1.steps': expected int, got 'many' \(set in {top}\)"):
        load([str(top)])
    base.write_text(yaml.safe_dump({"phase1": {"steps": 5}}))
    with pytest.raises(ConfigError, match=r"expected int, got 'x' \(set in --set phase2.steps=x\)"):
        load([str(top)], ["phase2.steps=x"])


def test_the_config_reference_lists_every_key():
    """docs/config.md is generated from the config dataclasses (python -m dreamer.config > docs/config.md): a key
    added, removed, retyped or redocumented without regenerating it fails here."""
    from dreamer.config import reference_markdown
    from dreamer.presets import reference

    doc = Path("docs/config.md").read_text()
    rows = reference(Config)
    missing = [k for k, *_ in rows if f"| `{k}` |" not in doc]
    assert not missing, f"docs/config.md lacks {missing}: run python -m dreamer.config > docs/config.md"
    assert doc == reference_markdown(), "docs/config.md is stale: run python -m dreamer.config > docs/config.md"
    assert all(meaning for *_, meaning in rows), [k for k, *_, m in rows if not m]  # every key says what it does


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
    ("pmpo.value_warmup=-3", "pmpo.value_warmup must be >= 0"),
    ("phase3.value_lr=0", "phase3.value_lr must be > 0"),
    ("phase3.eval_episodes=-2", "phase3.eval_episodes"),
    ("phase3.sample_steps=3", r"phase3.sample_steps must be 0 \(the world model's\) or a power of two, got 3"),
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
