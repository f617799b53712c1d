"""dreamer/imagination/pmpo.py: the PMPO loss, advantages and centring against hand computations, the
policy-update gate, its config, and the moved config keys (docs/design.md §6)."""

from __future__ import annotations

import logging

import pytest
import torch

from dreamer.agent import PolicyDist
from dreamer.config import MOVED, from_saved, load
from dreamer.imagination import PMPOConfig, pmpo, pmpo_loss, pmpo_stats, policy_gate
from dreamer.imagination.pmpo import advantages
from dreamer.presets import ConfigError, to_dict


def test_pmpo_hand_mixed():
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    adv = torch.tensor([1.0, -1.0, 0.0, -2.0])  # D+ = {0, 2} (A >= 0), D- = {1, 3}
    kl = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # (1-0.7)/2*(-2-4) - 0.7/2*(-1-3) + 0.3/4*1.0 = -0.9 + 1.4 + 0.075
    assert pmpo_loss(logp, adv, kl, PMPOConfig(alpha=0.7, beta=0.3)).item() == pytest.approx(0.575, rel=1e-6)
    # default alpha 0.5: -1.5 + 1.0 + 0.075
    assert pmpo_loss(logp, adv, kl, PMPOConfig()).item() == pytest.approx(-0.425, rel=1e-6)
    assert pmpo_stats(adv) == pytest.approx(
        {"num_pos": 2.0, "num_neg": 2.0, "frac_pos": 0.5, "adv_mean": -0.5, "adv_abs_mean": 1.0}
    )


def test_pmpo_all_positive_and_all_negative():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    kl = torch.full((2, 2), 0.25)
    pos = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    cfg = PMPOConfig()
    # empty D-: -0.5/4*(-10) + 0.3*0.25
    assert pmpo_loss(logp, pos, kl, cfg).item() == pytest.approx(1.25 + 0.075, rel=1e-6)
    # empty D+: 0.5/4*(-10) + 0.3*0.25
    assert pmpo_loss(logp, -pos - 1, kl, cfg).item() == pytest.approx(-1.25 + 0.075, rel=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        pmpo_loss(logp, pos[0], kl, cfg)


def test_pmpo_gradients_only_through_logp_and_kl():
    logp = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    adv = torch.tensor([0.5, -0.5, 2.0], requires_grad=True)
    kl = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
    pmpo_loss(logp, adv, kl, PMPOConfig(alpha=0.5, beta=0.3)).backward()
    assert adv.grad is None
    # D+ = {0, 2}: -alpha/2 ; D- = {1}: (1-alpha)/1
    assert logp.grad.tolist() == pytest.approx([-0.25, 0.5, -0.25])
    assert kl.grad.tolist() == pytest.approx([0.1, 0.1, 0.1])


def test_advantages_and_centring():
    returns = torch.tensor([[1.0, 2.0], [3.0, 6.0]], requires_grad=True)
    values = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    raw = advantages(returns, values, PMPOConfig(center_advantages=False))
    assert raw.tolist() == [[1.0, 1.0], [2.0, 4.0]] and not raw.requires_grad
    centred = advantages(returns, values, PMPOConfig())  # the mean advantage 2 is subtracted
    assert centred.tolist() == [[-1.0, -1.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="one shape"):
        advantages(returns, values[:, :1], PMPOConfig())


def test_pmpo_objective_is_the_loss_of_the_distributions():
    g = torch.Generator().manual_seed(0)
    dist = PolicyDist([torch.randn(2, 3, 2, 4, generator=g, requires_grad=True), torch.randn(2, 3, 2, 2, generator=g)])
    prior = PolicyDist([torch.randn(2, 3, 2, 4, generator=g), torch.randn(2, 3, 2, 2, generator=g)])
    acts = torch.stack([torch.randint(0, 4, (2, 3, 2), generator=g), torch.randint(0, 2, (2, 3, 2), generator=g)], -1)
    mask = torch.ones(2, 3, 2, dtype=torch.bool)
    returns, values = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    cfg = PMPOConfig(alpha=0.4, beta=0.2)
    out = pmpo(dist, prior, acts, mask, returns, values, cfg)
    logp, kl = dist.log_prob(acts, mask), dist.kl(prior, mask)
    adv = returns - values - (returns - values).mean()
    assert torch.equal(out.log_prob, logp) and torch.equal(out.kl, kl) and torch.allclose(out.advantages, adv)
    assert torch.equal(out.loss, pmpo_loss(logp, out.advantages, kl, cfg))
    out.loss.backward()
    assert dist.logits[0].grad is not None and dist.logits[0].grad.abs().sum() > 0


def test_the_gate_waits_for_the_warmup_and_refuses_one_signed_batches():
    cfg = PMPOConfig(value_warmup=3, min_sign_fraction=0.25)
    mixed = torch.tensor([1.0, -1.0, 2.0, -0.5])  # half and half
    assert not policy_gate(cfg, 0, mixed) and not policy_gate(cfg, 2, mixed)  # the warm-up: the value alone
    assert policy_gate(cfg, 3, mixed) and policy_gate(cfg, 100, mixed)
    assert not policy_gate(cfg, 5, torch.ones(8))  # one sign: nothing to contrast
    assert not policy_gate(cfg, 5, -torch.ones(8))
    one_of_eight = torch.tensor([-1.0] + [1.0] * 7)  # D- holds 1/8 < 0.25
    assert not policy_gate(cfg, 5, one_of_eight)
    assert policy_gate(cfg, 5, torch.tensor([-1.0, -1.0] + [1.0] * 6))  # 2/8 = 0.25 is enough
    assert policy_gate(PMPOConfig(min_sign_fraction=0.0), 0, torch.ones(4))  # no gate, no warm-up
    assert policy_gate(PMPOConfig(min_sign_fraction=0.5), 0, mixed)
    assert not policy_gate(PMPOConfig(min_sign_fraction=0.5), 0, one_of_eight)


@pytest.mark.parametrize("kwargs, named", [
    ({"alpha": 1.5}, r"pmpo.alpha must be in \[0, 1\], got 1.5"),
    ({"beta": -0.1}, "pmpo.beta must be >= 0"),
    ({"value_warmup": -1}, r"pmpo.value_warmup must be >= 0 \(steps\), got -1"),
    ({"min_sign_fraction": 0.6}, r"pmpo.min_sign_fraction must be in \[0, 0.5\]"),
])
def test_config_refuses_out_of_range_values_by_key(kwargs, named):
    with pytest.raises(ValueError, match=named):
        PMPOConfig(**kwargs)
    key, value = next(iter(kwargs.items()))
    with pytest.raises(ConfigError, match=named):
        load(None, [f"pmpo.{key}={value}"])


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_key_is_refused_naming_the_new_one(old, tmp_path):
    new = MOVED[old]
    with pytest.raises(ConfigError, match=rf"'{old}' is now '{new}' \(set in --set {old}=0\.1\); rename"):
        load(None, [f"{old}=0.1"])
    sec, key = old.split(".")
    preset = tmp_path / "old.yaml"
    preset.write_text(f"{sec}:\n  {key}: 0\n")
    with pytest.raises(ConfigError, match=rf"'{old}' is now '{new}' \(set in {preset}\)"):
        load([str(preset)])
    value = "false" if key == "center_advantages" else "0"
    assert str(getattr(load(None, [f"{new}={value}"]).pmpo, key)).lower() in ("0", "0.0", "false")  # the new name


def test_an_old_checkpoint_config_is_translated(caplog):
    old = to_dict(load(None))  # a checkpoint's config dict before the move: PMPO's keys in rl and phase3
    del old["pmpo"]
    old["rl"].update(alpha=0.7, beta=0.1, center_advantages=False)
    old["phase3"].update(value_warmup=9, min_sign_fraction=0.2)
    with caplog.at_level(logging.INFO, logger="dreamer.config"):
        cfg = from_saved(old, ["phase3.steps=5"])
    assert cfg.pmpo == PMPOConfig(alpha=0.7, beta=0.1, center_advantages=False, value_warmup=9, min_sign_fraction=0.2)
    assert cfg.phase3.steps == 5 and cfg.rl.gamma_env == old["rl"]["gamma_env"]
    assert "read the old key rl.alpha = 0.7 as pmpo.alpha" in caplog.text
    assert old["phase3"]["value_warmup"] == 9 and "pmpo" not in old  # the checkpoint's own dict is left as it was
    with pytest.raises(ConfigError, match="'rl.beta' is now 'pmpo.beta'"):
        from_saved(old, ["rl.beta=0.2"])
    assert from_saved(to_dict(cfg)) == cfg  # today's layout passes unchanged
