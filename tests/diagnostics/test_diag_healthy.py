"""A healthy setup of each phase passes every check, and the audit leaves no trace behind."""

from __future__ import annotations

import pytest
import torch
from diag_fixtures import imagine, make_batch, phase1_setup, phase2_setup, phase3_setup

from diagnostics import OK, diagnose_phase

ALLOWED_WARN = {"memory/rss_mib"}  # a busy shared machine may be short of memory; nothing else may warn


def assert_healthy(report) -> None:
    assert not report.failed, report.table()
    assert set(report.warned_names()) <= ALLOWED_WARN, report.table()


def test_phase1_healthy(tiny_tokenizer):
    models, opt = phase1_setup(tiny_tokenizer)
    report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt)
    assert_healthy(report)
    names = {c.name for c in report.checks}
    for expected in ("grad_mode", "device/dynamics", "requires_grad/dynamics", "requires_grad/tokenizer",
                     "tokenizer/output_shape", "batch/action_alignment", "batch/latent_spread", "memory/rss_mib",
                     "grad_audit/trainable_grads", "grad_audit/optimizer", "phase1/grad_norm",
                     "phase1/action_shuffle_ratio"):
        assert expected in names
    assert report.get("tokenizer/output_shape").value == "1x3x16x16"  # T = S + 2 = 10 frames -> T_lat = 3


def test_phase2_healthy(tiny_tokenizer):
    models, opt = phase2_setup(tiny_tokenizer)
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt)
    assert_healthy(report)
    assert report.get("requires_grad/agent.value").status == OK  # idle in phase 2
    assert report.get("grad_audit/loss_source").value == "real"


def test_phase3_healthy(tiny_tokenizer):
    models, opt = phase3_setup(tiny_tokenizer)
    batch = make_batch(B=12, T=6, seed=3)
    inputs = imagine(models, batch, context=2, horizon=4)
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, **inputs)
    assert_healthy(report)
    assert report.get("phase3/advantage_signs").value >= 10


def test_audit_leaves_no_trace():
    models, opt = phase1_setup()
    dyn, loss = models["dynamics"], models["loss"]
    marker = torch.full_like(dyn.latent_out.weight, 0.5)
    dyn.latent_out.weight.grad = marker.clone()
    rms_before = loss.rms.sq_ema.clone(), loss.rms.count.clone()
    rng_before = torch.get_rng_state()
    report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt, compact=True)
    assert not report.failed, report.table()
    assert torch.equal(dyn.latent_out.weight.grad, marker)  # the caller's gradients are restored
    assert dyn.registers.grad is None
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training run's random stream is untouched
    assert torch.equal(loss.rms.sq_ema, rms_before[0]) and torch.equal(loss.rms.count, rms_before[1])
    assert loss.training and torch.is_grad_enabled()


def test_the_audits_use_the_runs_rl_and_pmpo_config(monkeypatch):
    """Phase 2's real loss and phase 3's proxy take the run's rl / pmpo sections, not defaults."""
    import dreamer.agent
    import dreamer.imagination
    from dreamer.agent import RLConfig
    from dreamer.imagination import PMPOConfig

    seen = {}
    real2, real3 = dreamer.agent.phase2_loss, dreamer.imagination.phase3_terms

    def spy2(*args, **kw):
        seen["rl2"] = kw["rl"]
        return real2(*args, **kw)

    def spy3(agent, prior, imagined, rl, pmpo_cfg, *args, **kw):
        seen["rl3"], seen["pmpo"] = rl, pmpo_cfg
        return real3(agent, prior, imagined, rl, pmpo_cfg, *args, **kw)

    monkeypatch.setattr(dreamer.agent, "phase2_loss", spy2)
    monkeypatch.setattr(dreamer.imagination, "phase3_terms", spy3)
    rl, pmpo = RLConfig(gamma_env=0.9, lam=0.5), PMPOConfig(alpha=0.2, beta=0.7)
    models, opt = phase2_setup()
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt, compact=True, rl_cfg=rl)
    assert seen["rl2"] is rl and "not given" not in report.get("grad_audit/loss_source").expected
    models, opt = phase3_setup()
    batch = make_batch(B=12, T=6, seed=3)
    inputs = imagine(models, batch, context=2, horizon=4)
    del inputs["loss_fn"]  # the proxy
    diagnose_phase(3, models, batch, "cpu", optimizer=opt, compact=True, rl_cfg=rl, pmpo_cfg=pmpo, **inputs)
    assert seen["rl3"] is rl and seen["pmpo"] is pmpo
    models, _ = phase2_setup()
    report = diagnose_phase(2, models, make_batch(), "cpu", compact=True)  # no rl_cfg: said so
    assert "rl_cfg not given" in report.get("grad_audit/loss_source").expected
    with pytest.raises(TypeError, match="pmpo_cfg"):
        diagnose_phase(2, phase2_setup()[0], make_batch(), "cpu", pmpo_cfg=pmpo)
