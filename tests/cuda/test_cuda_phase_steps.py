"""One bf16-autocast training step of each phase (0-3) on the GPU, through the phase scripts' own pieces:
the loss each script optimises, ``Runtime.autocast`` and ``optimizer_step`` / ``grouped_step``.

Each step must compute in bf16 (a Linear inside the model returns bf16), give a finite loss, a finite gradient on
every trainable parameter and none on a frozen one, and apply the update."""

from __future__ import annotations

import pytest
import torch
from cuda_fixtures import (
    CUDA,
    NonFiniteGuard,
    Phase2Objective,
    PooledAutoencoder,
    ShortcutForcingLoss,
    assert_finite_grads,
    build_trainable_vae,
    config,
    grouped_step,
    imagine,
    make_agent,
    make_batch,
    make_dynamics,
    make_optimizer,
    make_phase3_optimizer,
    make_scheduler,
    optimizer_step,
    phase3_losses,
    reconstruction_loss,
    runtime,
    trainable,
    wrap_model,
)

pytestmark = CUDA


class DtypeProbe:
    """Records the output dtypes of every Linear and convolution of ``module`` while attached."""

    KINDS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)

    def __init__(self, module: torch.nn.Module):
        self.dtypes: set[torch.dtype] = set()
        self.handles = [m.register_forward_hook(self._hook) for m in module.modules() if isinstance(m, self.KINDS)]

    def _hook(self, _m, _inp, out):
        self.dtypes.add(out.dtype)

    def close(self) -> set[torch.dtype]:
        for h in self.handles:
            h.remove()
        return self.dtypes


def _step_and_check(opt, sched, loss, pc, params: dict, frozen: list[torch.nn.Parameter], step_fn=None):
    assert loss.dim() == 0 and bool(torch.isfinite(loss)), f"loss {loss}"
    before = {n: p.detach().clone() for n, p in params.items()}
    step_fn = step_fn or optimizer_step
    applied, norms = step_fn(opt, sched, loss, pc, NonFiniteGuard(1), 0)
    assert applied, f"the non-finite guard skipped the step: {norms}"
    assert all(torch.isfinite(torch.tensor(v)) for v in norms.values()), norms
    assert_finite_grads(params)
    assert all(p.grad is None for p in frozen), "a frozen parameter received a gradient"
    assert all(p.dtype == torch.float32 for p in params.values()), "master weights must stay fp32"
    assert any(not torch.equal(before[n], p) for n, p in params.items()), "the optimizer step changed nothing"


def test_phase0_tokenizer_step(device):
    cfg = config("phase0.warmup=1")
    rt = runtime(device)
    vae, _ = build_trainable_vae("tiny")
    model = PooledAutoencoder(vae, resolution=64, pool=2).to(device)
    frames = torch.randint(0, 256, (2, 9, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    opt = make_optimizer(vae.parameters(), cfg.phase0)
    sched = make_scheduler(opt, cfg.phase0)
    probe = DtypeProbe(model)
    with rt.autocast(True):
        recon, target, z = model(frames.to(device))
    loss, _ = reconstruction_loss(recon, target, perceptual_weight=0.1)
    assert probe.close() == {torch.bfloat16}
    assert z.shape == (2, 2, 16, 16) and recon.shape == target.shape
    _step_and_check(opt, sched, loss, cfg.phase0, trainable(vae), [])


def test_phase1_dynamics_step(device):
    cfg = config("phase1.warmup=1")
    rt = runtime(device)
    model = make_dynamics(device)
    loss_fn = ShortcutForcingLoss(model.cfg).to(device)
    net = wrap_model(rt, model)  # as train_phase1_cosmos.main (one process, no compile: the model itself)
    opt = make_optimizer(model.parameters(), cfg.phase1)
    sched = make_scheduler(opt, cfg.phase1)
    batch = make_batch(device, b=4, t=8)
    probe = DtypeProbe(model)
    with rt.autocast(True):
        loss, m = loss_fn(net, batch["latents"], batch["actions"], batch["action_mask"],
                          generator=torch.Generator(device=device).manual_seed(0))
    assert probe.close() == {torch.bfloat16}
    assert 0 < m["bootstrap_frac"] < 1, "both the flow and the bootstrap terms must run"
    _step_and_check(opt, sched, loss, cfg.phase1, trainable(model), [])
    assert int(loss_fn.rms.count.sum()) == 1 and loss_fn.rms.sq_ema.device == device


def test_phase2_agent_step(device):
    cfg = config("phase2.warmup=1")
    rt = runtime(device)
    dynamics = make_dynamics(device).requires_grad_(False).eval()  # carried forward, frozen
    agent = make_agent(device)  # the value head too: phase 2 fits the behaviour policy's value
    objective = Phase2Objective(agent, cfg.rl)
    opt = make_optimizer(agent.parameters(), cfg.phase2)
    sched = make_scheduler(opt, cfg.phase2)
    probe = DtypeProbe(agent)
    with rt.autocast(True):
        loss, m = objective(make_batch(device), compute_metrics=True)
    assert probe.close() == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values()), m
    _step_and_check(opt, sched, loss, cfg.phase2, trainable(agent), list(dynamics.parameters()))


@pytest.mark.parametrize("warmup", [False, True], ids=["pmpo+value", "value-warmup"])
def test_phase3_imagination_step(device, warmup):
    cfg = config("phase3.warmup=1", "phase3.horizon=5", "phase3.context=4")
    rt = runtime(device)
    dynamics = make_dynamics(device).requires_grad_(False).eval()
    agent = make_agent(device)
    prior = agent.freeze_for_phase3()
    for m in (agent.trunk, agent.reward, agent.cont):
        m.eval()
    opt = make_phase3_optimizer(agent, cfg.phase3)
    sched = make_scheduler(opt, cfg.phase3)
    gen = torch.Generator(device=device).manual_seed(0)
    probe = DtypeProbe(dynamics)
    with rt.autocast(True):  # train_phase3.main's dream(): imagination under the phase's autocast
        im = imagine(dynamics, agent, make_batch(device, b=4, t=cfg.phase3.context), cfg.phase3.horizon, gen)
    assert probe.close() == {torch.bfloat16}
    assert all(not t.requires_grad for t in (im.latents, im.rewards, im.features))
    assert bool(torch.isfinite(im.latents).all()) and bool(torch.isfinite(im.features).all())
    with rt.autocast(True):
        t, m = phase3_losses(agent, prior, im, cfg.rl, cfg.pmpo)
    loss = t.value_loss if warmup else t.policy_loss + t.value_loss
    params = trainable(agent.value) if warmup else trainable(agent.policy, agent.value)
    frozen = [p for mod in (agent.trunk, agent.reward, agent.cont, prior, dynamics) for p in mod.parameters()]
    if warmup:
        frozen += list(agent.policy.parameters())
    _step_and_check(opt, sched, loss, cfg.phase3, params, frozen, step_fn=grouped_step)
