"""KV-cached generation on the GPU: equal to the uncached path, and to the same rollout on the CPU."""

from __future__ import annotations

import pytest
import torch
from cuda_fixtures import CARDS, CUDA, S, imagine, make_agent, make_batch, make_dynamics, rollout

pytestmark = CUDA

TOL = {"rtol": 1e-4, "atol": 1e-4}


def _rollout(model, batch, ctx: int, horizon: int, generator, cached: bool):
    a, m = batch["actions"], batch["action_mask"]
    return rollout(model, batch["latents"][:, :ctx], a[:, :ctx], m[:, :ctx], a[:, ctx - 1: ctx - 1 + horizon],
                   m[:, ctx - 1: ctx - 1 + horizon], use_kv_cache=cached, generator=generator)


@pytest.mark.parametrize("action_free", [False, True], ids=["actions", "action-free"])
def test_cached_rollout_equals_uncached(device, action_free):
    model = make_dynamics(device).eval()
    ctx, horizon = 4, 8
    batch = make_batch(device, b=3, t=ctx + horizon)
    if action_free:
        batch["action_mask"] = torch.zeros_like(batch["action_mask"])
    out = {cached: _rollout(model, batch, ctx, horizon, torch.Generator(device=device).manual_seed(5), cached)
           for cached in (True, False)}
    assert out[True].shape == (3, horizon, model.num_tokens, model.latent_dim) and out[True].device == device
    assert bool(torch.isfinite(out[True]).all())
    torch.testing.assert_close(out[True], out[False], **TOL)


def test_device_rollout_equals_cpu_rollout(device):
    """The same weights, context and noise (drawn from one CPU generator) give the same rollout on both devices."""
    model = make_dynamics(device).eval()
    cpu_model = make_dynamics("cpu").eval()
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    ctx, horizon = 4, 6
    batch = make_batch("cpu", b=2, t=ctx + horizon)
    on_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    dev_out = _rollout(model, on_device, ctx, horizon, torch.Generator().manual_seed(9), cached=True)
    cpu_out = _rollout(cpu_model, batch, ctx, horizon, torch.Generator().manual_seed(9), cached=True)
    torch.testing.assert_close(dev_out.cpu(), cpu_out, rtol=1e-3, atol=1e-3)


def test_imagination_cached_equals_uncached(device):
    """Phase 3's imagine(): the KV-cached world model gives the uncached one's rollout (same draws, same actions)."""
    dynamics = make_dynamics(device).requires_grad_(False).eval()
    agent = make_agent(device)
    agent.freeze_for_phase3()
    batch = make_batch(device, b=4, t=4)
    runs = [imagine(dynamics, agent, batch, 6, torch.Generator(device=device).manual_seed(2), use_kv_cache=cached)
            for cached in (True, False)]
    cached, plain = runs
    assert cached.actions.shape == (4, 6, S, len(CARDS))
    assert torch.equal(cached.actions, plain.actions)
    torch.testing.assert_close(cached.latents, plain.latents, **TOL)
    torch.testing.assert_close(cached.features, plain.features, **TOL)
    torch.testing.assert_close(cached.rewards, plain.rewards, rtol=1e-3, atol=1e-3)  # symexp(two-hot) amplifies
