"""Plant each bug the predecessors lost days to and assert the matching check fails with a hint
that says what to fix."""

from __future__ import annotations

import pytest
import torch
from diag_fixtures import imagine, make_batch, phase1_setup, phase2_setup, phase3_setup

from diagnostics import FAIL, Thresholds, diagnose_before_training, diagnose_phase


def failed(report, name: str):
    check = report.get(name)
    assert check.status == FAIL, report.table()
    assert check.hint, f"{name} failed without a hint"
    return check


def test_no_grad_forward_in_trainable_head():
    models, opt = phase2_setup()
    reward = models["agent"].reward
    reward.forward = torch.no_grad()(reward.forward)  # the bug: a decorated forward in a head that must train
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt)
    hint = failed(report, "grad_audit/trainable_grads").hint
    assert "agent.reward" in hint and "no_grad" in hint
    assert report.failed_names() == ["grad_audit/trainable_grads"]


def test_no_grad_forward_of_whole_model_names_it():
    models, opt = phase1_setup()
    dyn = models["dynamics"]
    dyn.forward = torch.no_grad()(dyn.forward)
    report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt)
    assert "no graph" in failed(report, "grad_audit/loss").hint
    hint = failed(report, "grad_audit/trainable_grads").hint
    assert "first module without gradient (forward order): dynamics " in hint and "no_grad" in hint


def test_detach_inside_head_names_the_cut():
    models, opt = phase2_setup()
    mlp = models["agent"].reward.mlp
    models["agent"].reward.forward = lambda h: mlp.out(mlp.body(h).detach())  # the bug
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt)
    hint = failed(report, "grad_audit/trainable_grads").hint
    assert "agent.reward.mlp.body" in hint and ".detach()" in hint
    assert "agent.reward.mlp.out" not in hint  # the output layer still trains: only the cut-off part is named


def test_detach_in_the_middle_of_the_dynamics_model():
    models, opt = phase1_setup()
    block = models["dynamics"].blocks[1]
    inner = block.forward
    block.forward = lambda *a, **k: inner(*a, **k).detach()
    report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt)
    hint = failed(report, "grad_audit/trainable_grads").hint
    assert "the graph is cut right after it" in hint and "dynamics.blocks.1" in hint


def test_never_called_trainable_head():
    models, opt = phase3_setup()
    batch = make_batch(B=12, seed=3)
    inputs = imagine(models, batch, horizon=4)
    policy_only = inputs.pop("loss_fn")
    agent = models["agent"]
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt,
                            loss_fn=lambda: agent.policy(agent.trunk(batch["latents"])).logits[0].logsumexp(-1).mean(),
                            **inputs)
    assert policy_only is not None
    hint = failed(report, "grad_audit/trainable_grads").hint
    assert "agent.value" in hint and "never called" in hint


def test_frozen_parameter_in_optimizer():
    models, _ = phase3_setup()
    opt = torch.optim.AdamW(models["agent"].parameters())  # the bug: trunk / reward / cont are frozen in phase 3
    batch = make_batch(B=12, seed=3)
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, **imagine(models, batch, horizon=4))
    hint = failed(report, "grad_audit/optimizer").hint
    assert "frozen parameter(s) are in the optimiser" in hint and "agent.trunk" in hint


def test_trainable_parameter_missing_from_optimizer():
    models, _ = phase2_setup()
    opt = torch.optim.AdamW(models["agent"].policy.parameters())
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt)
    assert "not in the optimiser" in failed(report, "grad_audit/optimizer").hint


def test_frozen_module_left_trainable_gets_gradient():
    models, opt = phase3_setup()
    models["agent"].trunk.requires_grad_(True)  # the bug: the trunk is frozen in phase 3
    batch = make_batch(B=12, seed=3)
    inputs = imagine(models, batch, horizon=4)
    del inputs["loss_fn"]  # the proxy: the library's phase-3 loss, which detaches h (no gradient reaches the trunk)
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, **inputs)
    assert "requires_grad_(False)" in failed(report, "requires_grad/agent.trunk").hint
    assert report.get("grad_audit/loss_source").value == "proxy"
    agent = models["agent"]  # a loss whose graph does reach the trunk: the audit names the frozen module
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt,
                            loss_fn=lambda: agent.policy(agent.trunk(batch["latents"])).logits[0].logsumexp(-1).mean(), **inputs)
    assert "agent.trunk" in failed(report, "grad_audit/frozen_grads").hint


def test_fp16_parameters_with_grad_scaler():
    models, opt = phase2_setup()
    models["agent"].half()
    scaler = torch.amp.GradScaler("cpu")
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt, scaler=scaler)
    hint = failed(report, "grad_audit/precision").hint
    assert "GradScaler" in hint and "float32" in hint


def test_collapsed_reward_head():
    models, opt = phase2_setup()
    head = models["agent"].reward
    with torch.no_grad():  # the bug's outcome: one prediction whatever the input
        head.mlp.out.weight.zero_()
        head.mlp.out.bias.zero_()
        head.mlp.out.bias[20] = 10.0
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt, step=1000)
    assert "reward head predicts one value everywhere" in failed(report, "phase2/reward_spread").hint


def test_collapsed_policy_and_chance_accuracy():
    models, opt = phase2_setup()
    with torch.no_grad():
        models["agent"].policy.mlp.out.bias.view(-1, 5)[:, 3] = 50.0  # all mass on class 3 everywhere
    report = diagnose_phase(2, models, make_batch(), "cpu", optimizer=opt, step=1000)
    assert "all mass on one action" in failed(report, "phase2/policy_collapse").hint
    assert "mode collapse" in failed(report, "phase2/policy_actions").hint
    assert "chance" in failed(report, "phase2/bc_accuracy").hint


def test_latents_that_require_grad():
    models, opt = phase2_setup()
    batch = make_batch()
    batch["latents"] = batch["latents"].requires_grad_(True)
    report = diagnose_phase(2, models, batch, "cpu", optimizer=opt)
    assert "must be data" in failed(report, "phase2/latents_constant").hint


def test_degenerate_advantages():
    models, opt = phase3_setup()
    batch = make_batch(B=12, seed=3)
    inputs = imagine(models, batch, horizon=4)
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=200, **inputs)
    failed(report, "phase3/advantages_nonzero")
    failed(report, "phase3/advantage_signs")
    adv = torch.ones(12, 4)
    adv[0, :3] = -1.0  # only 3 negative advantages
    inputs["advantages"] = adv
    early = diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=0, **inputs)
    assert early.get("phase3/advantage_signs").status == "warn"  # value head still near its zero start
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=200, **inputs)
    assert report.get("phase3/advantages_nonzero").status == "ok"
    check = failed(report, "phase3/advantage_signs")
    assert check.value == 3 and "45 advantages >= 0 and 3 < 0" in check.hint
    # with the run's value warm-up given, one sign fails from the end of the warm-up on, however short the run
    during = diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=4, value_warmup=5, **inputs)
    assert during.get("phase3/advantage_signs").status == "warn" and "from step 5" in during.get(
        "phase3/advantage_signs").expected
    failed(diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=5, value_warmup=5, **inputs),
           "phase3/advantage_signs")
    adv = torch.ones(40, 4)
    adv[:5, :3] = -1.0  # 15 of 160 negative: at least 10 and at least 5% (8)
    inputs["advantages"] = adv
    assert diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=200, **inputs).get(
        "phase3/advantage_signs").status == "ok"
    adv = torch.ones(400, 4)
    adv[:4, :3] = -1.0  # 12 of 1600 negative: more than 10, fewer than 5% (80)
    inputs["advantages"] = adv
    failed(diagnose_phase(3, models, batch, "cpu", optimizer=opt, step=200, **inputs), "phase3/advantage_signs")


def test_imagination_red_flags():
    models, opt = phase3_setup()
    batch = make_batch(B=12, seed=3)
    inputs = imagine(models, batch, horizon=4)
    inputs["imagined_rewards"] = torch.zeros_like(inputs["imagined_rewards"])
    growth = torch.logspace(0, 2, 4).view(1, 4, 1, 1)  # scale x1 -> x100 over the horizon
    inputs["imagined_latents"] = (inputs["imagined_latents"] * growth).requires_grad_(True)
    inputs["policy_entropy"] = torch.tensor(0.01)
    report = diagnose_phase(3, models, batch, "cpu", optimizer=opt, **inputs)
    assert "always 0" in failed(report, "phase3/imagined_rewards").hint
    assert "from step" in failed(report, "phase3/imagined_drift").hint
    assert "torch.no_grad()" in failed(report, "phase3/imagined_latents_constant").hint
    assert "collapsed" in failed(report, "phase3/policy_entropy").hint


def test_misaligned_actions():
    models, opt = phase1_setup()
    batch = make_batch(T=6)
    for key in ("actions", "action_mask"):
        batch[key] = batch[key][:, 1:]  # the bug: actions shifted against the latents, one row short
    report = diagnose_phase(1, models, batch, "cpu", optimizer=opt)
    check = failed(report, "batch/action_alignment")
    assert "actions T=5, latents T=6" == check.value and "actions[:, k]" in check.hint


def test_phase1_grad_norm_and_shuffle_ratio():
    models, opt = phase1_setup()
    dyn, loss_mod = models["dynamics"], models["loss"]
    batch = make_batch()

    def huge():
        return 1e6 * loss_mod(dyn, batch["latents"], batch["actions"], batch["action_mask"])[0]

    report = diagnose_phase(1, models, batch, "cpu", optimizer=opt, loss_fn=huge, step=5000)
    assert "lower lr" in failed(report, "phase1/grad_norm").hint
    with torch.no_grad():  # a model blind to the actions: shuffling them changes nothing (ratio exactly 1)
        dyn.action_emb.weight.zero_()
        dyn.substep_emb.zero_()
    report = diagnose_phase(1, models, batch, "cpu", optimizer=opt, step=5000)
    check = failed(report, "phase1/action_shuffle_ratio")
    assert check.value == 1.0 and "ignores the actions" in check.hint
    early = diagnose_phase(1, models, batch, "cpu", optimizer=opt, step=10)  # not judged before training
    assert early.get("phase1/action_shuffle_ratio").status == "ok"
    relaxed = diagnose_phase(1, models, batch, "cpu", optimizer=opt, step=5000,
                             thresholds=Thresholds(shuffle_ratio_min=0.5))
    assert relaxed.get("phase1/action_shuffle_ratio").status == "ok"


def test_a_resumed_run_that_has_not_learned_yet_trains_on(caplog):
    """Before training, a learning verdict on resumed weights (here: actions ignored at step 5000) is logged
    but does not stop the run, since training on is the remedy; a wiring failure still stops it."""
    models, opt = phase1_setup()
    with torch.no_grad():
        models["dynamics"].action_emb.weight.zero_()
        models["dynamics"].substep_emb.zero_()
    with caplog.at_level("WARNING"):
        report = diagnose_before_training(1, models, make_batch(), "cpu", optimizer=opt, step=5000)
    assert failed(report, "phase1/action_shuffle_ratio").learning
    assert "training continues" in caplog.text and "phase1/action_shuffle_ratio" in caplog.text
    batch = make_batch()
    batch["actions"] = batch["actions"][:, 1:]  # a wiring bug: actions one row short of the latents
    batch["action_mask"] = batch["action_mask"][:, 1:]
    with pytest.raises(SystemExit, match="batch/action_alignment"):
        diagnose_before_training(1, models, batch, "cpu", optimizer=opt, step=5000)
