from __future__ import annotations

import pytest
import torch
from torch import nn

from dreamer.dynamics import ShortcutForcingLoss, sample_tau_step

from .conftest import tiny_batch, tiny_cfg, tiny_model


class Fake(nn.Module):
    """Deterministic pointwise 'model': f = p z + 0.05 tau_idx - 0.1 step_idx; records grad mode per call."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(0.7))
        self.grad_modes: list[bool] = []

    def forward(self, z, tau_idx, step_idx, actions, mask):
        self.grad_modes.append(torch.is_grad_enabled())
        return self.p * z + 0.05 * tau_idx[..., None, None].float() - 0.1 * step_idx[..., None, None].float()


def _setup():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(1, 2, 3, 2, generator=g)
    z0 = torch.randn(1, 2, 3, 2, generator=g)
    acts = torch.zeros(1, 2, 2, 1, dtype=torch.long)
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    # k_max = 8 (log2 = 3).  step 0: tau = 4/8, d = 2^-1 (bootstrap); step 1: tau = 5/8, d = d_min (flow)
    tau_idx = torch.tensor([[4, 5]])
    step_idx = torch.tensor([[1, 3]])
    return z1, z0, acts, mask, tau_idx, step_idx


def _hand(p, z1, z0, detach_teacher=True):
    f = lambda z, ti, si: p * z + 0.05 * ti - 0.1 * si
    pt = p.detach() if detach_teacher else p
    ft = lambda z, ti, si: pt * z + 0.05 * ti - 0.1 * si
    # flow step (t=1): tau = 0.625
    zt1 = 0.375 * z0[0, 1] + 0.625 * z1[0, 1]
    flow = (0.9 * 0.625 + 0.1) * (f(zt1, 5, 3) - z1[0, 1]).pow(2).mean()
    # bootstrap step (t=0): tau = 0.5, d = 0.5, d/2 = 0.25 (step_idx 2), tau + d/2 = 0.75 (tau_idx 6)
    zt0 = 0.5 * z0[0, 0] + 0.5 * z1[0, 0]
    b1 = (ft(zt0, 4, 2) - zt0) / 0.5
    zm = zt0 + b1 * 0.25
    b2 = (ft(zm, 6, 2) - zm) / 0.25
    target = (b1 + b2) / 2
    boot = (0.9 * 0.5 + 0.1) * 0.25 * ((f(zt0, 4, 1) - zt0) / 0.5 - target).pow(2).mean()
    return flow, boot


def test_loss_matches_hand_computation_and_teacher_has_no_grad():
    z1, z0, acts, mask, tau_idx, step_idx = _setup()
    fake = Fake()
    loss_fn = ShortcutForcingLoss(tiny_cfg(rms_normalise=False))
    loss, met = loss_fn(fake, z1, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=step_idx, z0_btnc=z0)
    assert fake.grad_modes == [True, False, False]  # student with grad, two teacher passes without
    p = torch.tensor(0.7, requires_grad=True)
    flow, boot = _hand(p, z1, z0)
    assert met["flow"] == pytest.approx(flow.item(), rel=1e-5)
    assert met["bootstrap"] == pytest.approx(boot.item(), rel=1e-5)
    assert met["total"] == pytest.approx((flow + boot).item() / 2, rel=1e-5)
    assert loss.item() == pytest.approx(met["total"], rel=1e-6)
    loss.backward()
    ((flow + boot) / 2).backward()
    assert fake.p.grad.item() == pytest.approx(p.grad.item(), rel=1e-5)
    q = torch.tensor(0.7, requires_grad=True)  # a non-detached teacher would give another gradient
    sum(_hand(q, z1, z0, detach_teacher=False)).backward()
    assert abs(q.grad.item() / 2 - p.grad.item()) > 1e-3


def test_teacher_target_carries_no_graph():
    z1, _z0, acts, mask, tau_idx, step_idx = _setup()
    loss_fn = ShortcutForcingLoss(tiny_cfg())
    target = loss_fn.teacher_target(Fake(), z1, tau_idx, step_idx, step_idx < 3, acts, mask)
    assert target.grad_fn is None and not target.requires_grad


def test_ramp_weight_flow_only():
    z1, z0, acts, mask, _, _ = _setup()
    loss_fn = ShortcutForcingLoss(tiny_cfg(rms_normalise=False))
    fake = Fake()
    for ti, w in [(0, 0.1), (4, 0.55), (7, 0.9 * 7 / 8 + 0.1)]:
        tau_idx = torch.full((1, 2), ti)
        _, met = loss_fn(fake, z1, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=torch.full((1, 2), 3), z0_btnc=z0)
        tau = ti / 8
        zt = (1 - tau) * z0 + tau * z1
        mse = (0.7 * zt + 0.05 * ti - 0.3 - z1).pow(2).mean()
        assert met["flow"] == pytest.approx(w * mse.item(), rel=1e-5)
        assert met["bootstrap"] == 0.0


@pytest.mark.parametrize("per_term,first", [(False, 1.0), (True, 2.0)])
def test_running_rms_normalisation_and_state(per_term, first):
    z1, z0, acts, mask, tau_idx, step_idx = _setup()
    loss_fn = ShortcutForcingLoss(tiny_cfg(rms_normalise=True, rms_per_term=per_term))
    loss, _met = loss_fn(Fake(), z1, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=step_idx, z0_btnc=z0)
    assert loss.item() == pytest.approx(first, rel=1e-5)  # first update: each normalised value is 1
    sd = loss_fn.state_dict()
    assert set(sd) == {"rms.sq_ema", "rms.count"}
    assert sd["rms.count"].tolist() == ([1, 1] if per_term else [1, 0])
    for _ in range(3):  # same value again: EMA of x^2 stays x^2 after debiasing
        loss, _ = loss_fn(Fake(), z1, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=step_idx, z0_btnc=z0)
    assert loss.item() == pytest.approx(first, rel=1e-5)
    count = loss_fn.rms.count.clone()
    loss_fn.eval()
    loss_fn(Fake(), z1, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=step_idx, z0_btnc=z0)
    assert torch.equal(loss_fn.rms.count, count)  # eval mode does not update
    fresh = ShortcutForcingLoss(tiny_cfg(rms_normalise=True, rms_per_term=per_term))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.rms.sq_ema, loss_fn.rms.sq_ema)


def test_sample_tau_step_spec_distribution():
    cfg = tiny_cfg(bootstrap_fraction=None)  # k_max 8
    tau_idx, step_idx = sample_tau_step(cfg, 400, 10, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(step_idx.flatten(), minlength=4).float() / step_idx.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    unit = 8 * 0.5 ** step_idx.float()  # k_max * d
    assert torch.all(tau_idx % unit == 0) and torch.all(tau_idx <= 8 - unit)
    assert tau_idx[step_idx == 3].unique().numel() == 8  # d_min: tau on {0, 1/8, ..., 7/8}


def test_sample_tau_step_row_fraction():
    cfg = tiny_cfg(bootstrap_fraction=0.25)
    g = torch.Generator().manual_seed(1)
    n_rows = []
    for _ in range(200):
        _, step_idx = sample_tau_step(cfg, 6, 5, generator=g)
        boot_rows = (step_idx < 3).all(1)
        assert torch.equal(boot_rows | (step_idx == 3).all(1), torch.ones(6, dtype=torch.bool))
        n_rows.append(int(boot_rows.sum()))
    assert set(n_rows) <= {1, 2} and sum(n_rows) / 200 == pytest.approx(1.5, abs=0.15)


def test_sample_tau_step_context_fraction():
    """A fraction of positions sits at the sampler's context level (a flow step); 0 draws exactly as before."""
    cfg = tiny_cfg(bootstrap_fraction=0.25, context_noise=0.25)  # k_max 8: context level 6/8
    plain = sample_tau_step(cfg, 64, 10, generator=torch.Generator().manual_seed(3))
    off = sample_tau_step(cfg, 64, 10, generator=torch.Generator().manual_seed(3), context_fraction=0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, off))
    tau_idx, step_idx = sample_tau_step(cfg, 64, 10, generator=torch.Generator().manual_seed(3), context_fraction=0.5)
    ctx = (tau_idx == 6) & (step_idx == 3)
    changed = (tau_idx != plain[0]) | (step_idx != plain[1])
    assert 0.4 < ctx.float().mean() < 0.6 and torch.all(ctx | ~changed)
    cfg_on = tiny_cfg(bootstrap_fraction=0.25, context_noise=0.25, context_fraction=0.5)
    assert all(torch.equal(a, b) for a, b in zip(  # the config's value is the default
        sample_tau_step(cfg_on, 64, 10, generator=torch.Generator().manual_seed(3)), (tau_idx, step_idx)))


def test_short_training_run_reduces_loss():
    torch.manual_seed(0)
    model = tiny_model(bootstrap_fraction=0.5)
    loss_fn = ShortcutForcingLoss(model.cfg)
    z, a, m = tiny_batch(b=4, t=4, seed=1)
    g_eval = torch.Generator().manual_seed(5)
    tau_e = torch.randint(0, 8, (4, 4), generator=g_eval)
    z0_e = torch.randn(z.shape, generator=g_eval)
    step_e = torch.full((4, 4), 3)

    def eval_loss() -> float:
        with torch.no_grad():
            return loss_fn(model, z, a, m, tau_idx_bt=tau_e, step_idx_bt=step_e, z0_btnc=z0_e)[1]["total"]

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss, _met = loss_fn(model, z, a, m, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
