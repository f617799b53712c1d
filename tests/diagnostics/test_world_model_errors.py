"""diagnostics.world_model_errors: the split of the one-step error by what the action did, on the state reference."""

from __future__ import annotations

import pytest
import torch

from diagnostics import world_model_errors as wme
from dreamer.dynamics import DynamicsModel
from dreamer.viewer.load import World


@pytest.fixture(scope="module")
def world(state_world_parts):
    cfg, tok, cache, path = state_world_parts(30, 5, routing_gate=True)
    model = DynamicsModel(cfg.dynamics, tok.num_tokens, tok.channels, list(cache.action_space.cards), 1)
    return World(path, cfg, tok, cache, model.eval(), None, torch.device("cpu"))


def _fake_rollout(kind: str):
    """A stand-in world model that knows the future (``truth``) or copies the last context latent (``copy``)."""
    def roll(model, ctx, ctx_a, ctx_m, fut_a, fut_m, generator=None, sample_steps=None, context_noise=None):
        roll.sampler = (sample_steps, context_noise)
        h = fut_a.shape[1]
        if kind == "copy":
            return ctx[:, -1:].expand(-1, h, -1, -1).clone()
        return _fake_rollout.truth[:, ctx.shape[1]:ctx.shape[1] + h]

    return roll


def test_a_perfect_model_scores_zero_and_a_copying_one_scores_copy_last(world, monkeypatch):
    from dreamer.data.loader import ClipSampler

    collate = ClipSampler.collate

    def keep_truth(self, picks):  # remember each batch so the perfect model can answer it
        out = collate(self, picks)
        _fake_rollout.truth = out["latents"].float()
        return out

    monkeypatch.setattr(ClipSampler, "collate", keep_truth)
    monkeypatch.setattr(wme, "rollout", _fake_rollout("truth"))
    perfect = wme.error_breakdown(world, batches=2, batch_size=8)
    kinds = {k.split("]")[0].removeprefix("h1 [") for k in perfect if k.startswith("h1 [")}
    assert "moved" in kinds and kinds <= {"moved", "blocked", "noop", "other"}
    for k, v in perfect.items():
        if "model" in k and not k.startswith("gate"):
            assert v == 0.0, k
    assert perfect["h1 [moved] wrong cells, copy-last"] > 0.05  # a scrolled view: copying the last one is wrong
    assert perfect["h1 [moved] interior wrong cells, shift oracle"] < perfect["h1 [moved] wrong cells, copy-last"]
    assert all(0.0 < v < 1.0 for k, v in perfect.items() if k.startswith("gate ["))  # the gate is read per kind

    roll = _fake_rollout("copy")
    monkeypatch.setattr(wme, "rollout", roll)
    copying = wme.error_breakdown(world, batches=2, batch_size=8, sample_steps=1, context_noise=0.0)
    assert roll.sampler == (1, 0.0)  # the sampler settings reach the rollout
    for k, v in copying.items():
        twin = k.replace("model", "copy-last")
        if "model" in k and twin in copying:  # every figure that has a copy-last twin equals it
            assert v == pytest.approx(copying[twin]), k
    assert "h1: model" in wme.report(copying) and "routing gate:" in wme.report(copying)

    far = wme.error_breakdown(world, batches=1, batch_size=4, horizons=(3, 12))  # past 4 + 8, as phase 3 dreams
    assert {k for k in far if not k.startswith(("h1 ", "gate"))} == {"h3 model", "h3 copy-last", "h12 model",
                                                                      "h12 copy-last"}
    assert far["h12 model"] == pytest.approx(far["h12 copy-last"])
    assert "h12: model" in wme.report(far) and "h8:" not in wme.report(far)
    with pytest.raises(ValueError, match="horizons"):
        wme.error_breakdown(world, horizons=(0, 4))


def test_refuses_a_pixel_tokenizer(world):
    class Pixels:
        def identity(self):
            return {"kind": "cosmos"}

    other = World(world.path, world.cfg, Pixels(), world.cache, world.dynamics, None, world.device)
    with pytest.raises(ValueError, match="crafter_state"):
        wme.error_breakdown(other)
