"""imagine(): shapes, constants, the KV cache, and features that match a fresh trunk pass."""

from __future__ import annotations

import pytest
import torch
from im_fixtures import CARDS, C, N, S, context_batch, tiny_agent, tiny_dynamics

from dreamer.imagination import imagine, recompute_features


def test_shapes_and_constants(world):
    dyn, agent, _ = world
    batch = context_batch(b=3, t=4)
    im = imagine(dyn, agent, batch, horizon=5, generator=torch.Generator().manual_seed(0))
    assert im.latents.shape == (3, 6, N, C) and im.actions.shape == (3, 5, S, len(CARDS))
    assert im.rewards.shape == (3, 5) and im.continues.shape == (3, 5) and im.features.shape == (3, 6, 16)
    assert im.action_mask.shape == (3, 5, S) and bool(im.action_mask.all())
    assert im.history.shape == (3, 4 + 5, N, C)
    assert torch.equal(im.latents[:, 0], batch["latents"][:, -1])  # start = last context latent
    for name in ("latents", "actions", "rewards", "continues", "features", "context"):
        t = getattr(im, name)
        assert t.grad_fn is None and not t.requires_grad, name
    assert im.actions.dtype == torch.int64
    for d, card in enumerate(CARDS):
        assert int(im.actions[..., d].min()) >= 0 and int(im.actions[..., d].max()) < card
    assert bool(((im.continues >= 0) & (im.continues <= 1)).all())
    assert float(im.rewards.abs().sum()) > 0  # the (perturbed) reward head is read on h_{t+1}


def test_context_encoded_once_with_kv_cache(world, monkeypatch):
    """Every dynamics call after the first sees ONE new step: the context is never recomputed."""
    dyn, agent, _ = world
    calls = []
    original = dyn.forward_into

    def counting(z, *args, **kwargs):
        calls.append((z.shape[1], kwargs.get("update_cache", True), args[4] if len(args) > 4 else None))
        return original(z, *args, **kwargs)

    monkeypatch.setattr(dyn, "forward_into", counting)
    H, K, ctx = 5, dyn.cfg.sample_steps, 4
    imagine(dyn, agent, context_batch(t=ctx), horizon=H)
    lengths = [n for n, _, _ in calls]
    assert lengths[0] == ctx  # the context, once
    assert all(n == 1 for n in lengths[1:])
    assert all(cache is not None for _, _, cache in calls)  # every call goes through the KV cache
    # K denoising passes per new step, plus one cache append of each finished step but the last
    assert len(calls) == 1 + H * K + (H - 1)
    assert sum(1 for _, upd, _ in calls if upd) == 1 + (H - 1)


def test_cached_equals_uncached(world):
    dyn, agent, _ = world
    batch = context_batch()
    a = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(3))
    b = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(3), use_kv_cache=False)
    assert torch.equal(a.actions, b.actions)
    assert torch.allclose(a.latents, b.latents, atol=1e-4)
    c = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.latents, c.latents)  # a seed reproduces a rollout


def test_given_chunks_are_replayed_instead_of_the_policy(world):
    """actions_bhsd: the world model replays known chunks instead of the policy's, and they reach the dynamics: with
    the same noise draws, other chunks dream other latents, the same chunks the same ones."""
    dyn, agent, _ = world
    batch = context_batch(b=3, t=4)
    own = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(9)
    taken = torch.stack([torch.randint(0, c, (3, 4, S), generator=g) for c in CARDS], -1)
    rep = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(5), actions_bhsd=taken)
    assert torch.equal(rep.actions, taken) and not torch.equal(rep.actions, own.actions)
    again = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(5), actions_bhsd=taken)
    other = imagine(dyn, agent, batch, 4, generator=torch.Generator().manual_seed(5), actions_bhsd=own.actions)
    assert torch.equal(again.latents, rep.latents) and not torch.allclose(other.latents, rep.latents)
    with pytest.raises(ValueError, match="actions_bhsd"):
        imagine(dyn, agent, batch, 4, actions_bhsd=taken[:, :2])


@pytest.mark.parametrize("window", [16, 3])
def test_features_match_fresh_trunk_pass(window):
    """Stored h_t equal a fresh pass of the trunk, in one call or through a sliding window."""
    dyn = tiny_dynamics().requires_grad_(False)
    agent = tiny_agent(max_time=window)
    im = imagine(dyn, agent, context_batch(t=4), 4, generator=torch.Generator().manual_seed(1))
    h = recompute_features(agent, im)
    assert torch.allclose(h, im.features, atol=1e-5)
    hist = im.history
    h2 = agent.trunk(hist[:, max(0, 7 - window) : 7])[:, -1]  # h_3 reads the 4 context + 3 imagined latents
    assert torch.allclose(im.features[:, 3], h2, atol=1e-5)


def test_bad_input_named(world):
    dyn, agent, _ = world
    with pytest.raises(ValueError, match="max_time"):
        imagine(dyn, agent, context_batch(t=10), horizon=7)
    with pytest.raises(KeyError, match="action_mask"):
        imagine(dyn, agent, {k: v for k, v in context_batch().items() if k != "action_mask"}, 2)
    with pytest.raises(ValueError, match="horizon"):
        imagine(dyn, agent, context_batch(), 0)
