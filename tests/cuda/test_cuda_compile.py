"""torch.compile gives the eager results on the GPU: the dynamics model inside its shortcut loss (student and
teacher passes, as ``wrap_model(rt, model, compile=True)`` in phase 1), the phase-2 objective, and the phase-3 trunk
compiled with ``dynamic=True`` inside ``imagine``. Outputs are compared in fp32 (tight tolerance); losses and every
gradient under bf16 autocast, as training runs them (loose). Few graphs on purpose: compiling is the slow part."""

from __future__ import annotations

import torch
from cuda_fixtures import (
    CUDA,
    Phase2Objective,
    ShortcutForcingLoss,
    compiled,
    config,
    imagine,
    make_agent,
    make_batch,
    make_dynamics,
    runtime,
    sample_tau_step,
    wrap_model,
)

pytestmark = CUDA

FP32 = {"rtol": 1e-4, "atol": 1e-4}
# Two layers (one space, one time) and a one-block trunk: every kind of layer, and compile times of seconds.
SMALL_DYN = {"num_layers": 2}
SMALL_AGENT = {"num_layers": 1}
BF16 = {"rtol": 5e-2, "atol": 5e-2}


def _compile(rt, module):
    net = wrap_model(rt, module, compile=True)
    assert hasattr(net, "_orig_mod"), "not compiled"
    return net


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _loss_and_grads(net, module, loss_fn, batch, labels, bf16: bool, rt):
    """The shortcut loss (fresh running RMS, fixed labels and noise) and the gradients it gives."""
    loss_fn.rms.sq_ema.zero_()
    loss_fn.rms.count.zero_()
    module.zero_grad(set_to_none=True)
    tau, step, z0 = labels
    with rt.autocast(bf16):
        loss, _ = loss_fn(net, batch["latents"], batch["actions"], batch["action_mask"], tau_idx_bt=tau,
                          step_idx_bt=step, z0_btnc=z0)
    loss.backward()
    return loss.detach(), _grads(module)


def test_dynamics_compiled_equals_eager(device):
    rt = runtime(device)
    model = make_dynamics(device, **SMALL_DYN)
    model.validate_inputs = False  # the tuned-GPU setting: no host syncs, one graph
    net = _compile(rt, model)
    batch = make_batch(device, b=4, t=8)
    g = torch.Generator(device=device).manual_seed(0)
    tau, step = sample_tau_step(model.cfg, 4, 8, device, g)  # half the rows bootstrap (teacher passes)
    assert 0 < int((step < model.cfg.min_step_idx).sum()) < step.numel()
    z0 = torch.randn(batch["latents"].shape, device=device, generator=g)
    zt = 0.5 * batch["latents"] + 0.5 * z0
    with torch.no_grad():  # fp32 inference (the teacher passes' mode): tight
        eager = model(zt, tau, step, batch["actions"], batch["action_mask"])
        compiled = net(zt, tau, step, batch["actions"], batch["action_mask"])
    torch.testing.assert_close(compiled, eager, **FP32)
    # bf16 training (phase 1 with bf16 and compile): the loss with its teacher passes, and every gradient
    loss_fn = ShortcutForcingLoss(model.cfg).to(device)
    l_eager, g_eager = _loss_and_grads(model, model, loss_fn, batch, (tau, step, z0), True, rt)
    l_comp, g_comp = _loss_and_grads(net, model, loss_fn, batch, (tau, step, z0), True, rt)
    torch.testing.assert_close(l_comp, l_eager, **BF16)
    assert g_comp.keys() == g_eager.keys() and len(g_eager) == len(list(model.parameters()))
    for k in g_eager:  # relative to the gradient's own scale
        scale = float(g_eager[k].abs().max()) + 1e-6
        torch.testing.assert_close(g_comp[k] / scale, g_eager[k] / scale, msg=k, **BF16)


def test_phase2_objective_compiled_equals_eager(device):
    rt = runtime(device)
    agent = make_agent(device, **SMALL_AGENT)
    objective = Phase2Objective(agent, config().rl)
    net = _compile(rt, objective)
    batch = make_batch(device)
    with torch.no_grad():  # fp32: tight
        torch.testing.assert_close(net(batch, compute_metrics=False)[0], objective(batch, compute_metrics=False)[0],
                                   **FP32)
    results = []  # bf16 training (phase 2 with bf16 and compile): loss and every gradient
    for fn in (objective, net):
        agent.zero_grad(set_to_none=True)
        with rt.autocast(True):
            loss, _ = fn(batch, compute_metrics=False)
        loss.backward()
        results.append((loss.detach(), _grads(agent)))
    (l_e, g_e), (l_c, g_c) = results
    torch.testing.assert_close(l_c, l_e, **BF16)
    assert g_c.keys() == g_e.keys() and g_e
    for k in g_e:
        scale = float(g_e[k].abs().max()) + 1e-6
        torch.testing.assert_close(g_c[k] / scale, g_e[k] / scale, msg=k, **BF16)


def test_phase3_compiled_trunk_imagines_as_eager(device):
    """train_phase3.main compiles the trunk and the dynamics' KV-cached step with dynamic=True (a growing history and
    cache); imagine() must not change."""
    dynamics = make_dynamics(device, **SMALL_DYN).requires_grad_(False).eval()
    agent = make_agent(device, **SMALL_AGENT)
    agent.freeze_for_phase3()
    agent.eval()
    trunk = compiled(agent.trunk, device, dynamic=True)
    step = compiled(dynamics.forward_into, device, dynamic=True)
    batch = make_batch(device, b=4, t=4)
    runs = [imagine(dynamics, agent, batch, 6, torch.Generator(device=device).manual_seed(1), trunk=tr,
                    forward_into=fi) for tr, fi in ((None, None), (trunk, step))]
    eager, comp = runs
    assert torch.equal(comp.actions, eager.actions)  # same policy samples from the same draws
    torch.testing.assert_close(comp.features, eager.features, **FP32)
    torch.testing.assert_close(comp.latents, eager.latents, **FP32)
    torch.testing.assert_close(comp.rewards, eager.rewards, **FP32)
