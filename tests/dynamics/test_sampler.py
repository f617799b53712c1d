from __future__ import annotations

import math

import pytest
import torch

from dreamer.dynamics import Rollout, ShortcutForcingLoss, context_tau_idx, heldout_metrics, rollout, shortcut_sample

from .conftest import CARDS, C, N, S, tiny_batch, tiny_model


def test_schedule_constant_prediction_and_labels():
    calls = []
    target = torch.full((2, 3), 0.37)

    def predict(z, tau_idx, step_idx):
        calls.append((tau_idx, step_idx))
        return target

    out = shortcut_sample(predict, torch.randn(2, 3), k_max=64, sample_steps=4)
    assert torch.allclose(out, target, atol=1e-6)
    assert calls == [(0, 2), (16, 2), (32, 2), (48, 2)]  # tau = 0, 1/4, 1/2, 3/4 ; d = 1/4


@pytest.mark.parametrize("k", [1, 2, 8])
def test_schedule_ends_at_last_clean_prediction(k):
    preds = []

    def predict(z, tau_idx, step_idx):  # depends on the state: z1_hat = 2 z + tau
        preds.append(2 * z + tau_idx / 8)
        return preds[-1]

    out = shortcut_sample(predict, torch.randn(5), k_max=8, sample_steps=k)
    assert len(preds) == k and torch.allclose(out, preds[-1], atol=1e-6)


def test_schedule_hand_computation():
    z0 = torch.tensor([1.0, -2.0])
    # K=2: z1 = z0 + (2 z0 - z0)/(1 - 0) * 0.5 = 1.5 z0;  z2 = z1 + (2 z1 - z1)/(1 - 0.5) * 0.5 = 2 z1 = 3 z0
    out = shortcut_sample(lambda z, t, s: 2 * z, z0, k_max=8, sample_steps=2)
    assert torch.allclose(out, 3 * z0)
    with pytest.raises(ValueError, match="sample_steps"):
        shortcut_sample(lambda z, t, s: z, z0, k_max=8, sample_steps=3)


def test_context_level_on_grid():
    assert context_tau_idx(64, 0.1) == 58
    assert context_tau_idx(8, 0.1) == 7


@pytest.mark.parametrize("action_free,routing", [(False, False), (True, False), (False, True), (True, True),
                                                 (False, "gate"), (True, "gate")])
def test_cached_rollout_equals_uncached(action_free, routing):
    model = tiny_model(num_kv_heads=1, action_routing=bool(routing), routing_gate=routing == "gate")
    if routing:
        torch.nn.init.normal_(model.routing, std=0.1)
    if routing == "gate":
        torch.nn.init.normal_(model.gate_w, std=1.0)
    z, a, m = tiny_batch(b=3, t=8, seed=2)
    m[:] = True
    fut = None if action_free else a[:, 3:7]
    fm = None if action_free else m[:, 3:7]
    ca, cm = (None, None) if action_free else (a[:, :4], m[:, :4])
    outs = []
    for cached in (True, False):
        g = torch.Generator().manual_seed(7)
        outs.append(rollout(model, z[:, :4], ca, cm, fut, fm, horizon=4, use_kv_cache=cached, generator=g))
    assert outs[0].shape == (3, 4, N, C)
    assert torch.allclose(outs[0], outs[1], atol=1e-5), (outs[0] - outs[1]).abs().max()
    assert not outs[0].requires_grad


def test_rollout_uses_actions_and_steps():
    model = tiny_model()
    z, a, m = tiny_batch(b=2, t=6, seed=3)
    m[:] = True
    ro = Rollout(model, z[:, :3], a[:, :3], m[:, :3], generator=torch.Generator().manual_seed(0))
    z_a = ro.step(a[:, 2], m[:, 2])
    assert z_a.shape == (2, N, C) and ro.length == 4
    other = (a[:, 2] + 1) % torch.tensor(CARDS)
    ro2 = Rollout(model, z[:, :3], a[:, :3], m[:, :3], generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(ro2.step(other, m[:, 2]), z_a, atol=1e-5)
    ro.step(None)  # no action
    assert ro.history_btnc.shape == (2, 5, N, C)
    assert torch.equal(ro.history_btnc[:, :3], z[:, :3])


def test_rollout_length_limit():
    model = tiny_model()  # max_time 16
    z = torch.randn(1, 15, N, C)
    ro = Rollout(model, z)
    ro.step(torch.zeros(1, S, len(CARDS), dtype=torch.long))
    with pytest.raises(ValueError, match="max_time"):
        ro.step()
    with pytest.raises(ValueError, match="horizon"):
        rollout(model, z[:, :2])


def test_heldout_metrics_keys():
    model = tiny_model()
    z, a, m = tiny_batch(b=2, t=6)
    out = heldout_metrics(model, ShortcutForcingLoss(model.cfg), {"latents": z, "actions": a, "action_mask": m},
                          context_len=3, horizons=(1, 2, 4), generator=torch.Generator().manual_seed(0))
    for key in ("loss_true", "loss_shuffled", "action_shuffle_ratio", "open_loop_mse_h1", "copy_last_mse_h2",
                "one_step_mse"):
        assert math.isfinite(out[key]), key
    assert "open_loop_mse_h4" not in out  # only 3 steps after the context
    assert out["copy_last_mse_h1"] == pytest.approx((z[:, 2] - z[:, 3]).pow(2).mean().item(), rel=1e-6)
