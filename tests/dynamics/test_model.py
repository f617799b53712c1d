from __future__ import annotations

import pytest
import torch

from dreamer.dynamics import DynamicsConfig, DynamicsModel

from .conftest import CARDS, C, N, S, tiny_batch, tiny_cfg, tiny_model


def _labels(b, t, k_max=8):
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, k_max, (b, t), generator=g), torch.randint(0, 4, (b, t), generator=g)


def test_output_shape_and_layers(model):
    z, a, m = tiny_batch()
    tau, step = _labels(2, 5)
    out = model(z, tau, step, a, m)
    assert out.shape == (2, 5, N, C)
    assert [blk.time for blk in model.blocks] == [False, True, False, True]
    assert model.num_slots == N + 1 + 2


@pytest.mark.parametrize("t", [1, 2, 3])
def test_block_causality_inputs(model, t):
    z, a, m = tiny_batch(t=5)
    tau, step = _labels(2, 5)
    ref = model(z, tau, step, a, m)
    z2, tau2, step2 = z.clone(), tau.clone(), step.clone()
    z2[:, t + 1:] += 1.0
    tau2[:, t + 1:] = (tau2[:, t + 1:] + 1) % 8
    step2[:, t + 1:] = (step2[:, t + 1:] + 1) % 4
    out = model(z2, tau2, step2, a, m)
    assert torch.allclose(out[:, :t + 1], ref[:, :t + 1], atol=1e-6)
    assert not torch.allclose(out[:, t + 1], ref[:, t + 1], atol=1e-4)


@pytest.mark.parametrize("t", [0, 2])
def test_action_alignment(model, t):
    """actions[:, t] is the chunk from latent t to t+1: it may only influence outputs at steps >= t+1."""
    z, a, m = tiny_batch(t=5)
    m[:] = True
    tau, step = _labels(2, 5)
    ref = model(z, tau, step, a, m)
    a2 = a.clone()
    a2[:, t, :, 0] = (a2[:, t, :, 0] + 1) % CARDS[0]
    out = model(z, tau, step, a2, m)
    assert torch.allclose(out[:, :t + 1], ref[:, :t + 1], atol=1e-6)
    assert not torch.allclose(out[:, t + 1], ref[:, t + 1], atol=1e-4)
    a3 = a.clone()  # the last row leads nowhere and is unused
    a3[:, -1] = (a3[:, -1] + 1) % 2
    assert torch.allclose(model(z, tau, step, a3, m), ref, atol=1e-6)


def test_masked_substeps_and_no_action(model):
    a = torch.tensor([[[[2, 1], [0, 1]]]])  # (1,1,S,D)
    mask = torch.tensor([[[True, False]]])
    a_changed = a.clone()
    a_changed[0, 0, 1] = torch.tensor([1, 0])  # masked sub-step: value must not matter
    assert torch.allclose(model.embed_actions(a, mask), model.embed_actions(a_changed, mask))
    none = model.embed_actions(a, torch.zeros(1, 1, S, dtype=torch.bool))
    assert torch.allclose(none[0, 0], model.action_base)


@pytest.mark.parametrize("routing", [False, "shared", "own", "gate"])
def test_kv_cache_matches_full_forward(routing):
    model = tiny_model(action_routing=bool(routing), routing_input="own" if routing == "own" else "shared",
                       routing_gate=routing == "gate")
    if routing:  # maps are zero at init: give them values so the cached previous-step embeddings matter
        torch.nn.init.normal_(model.routing, std=0.1)
    if routing == "gate":  # a gate that depends on the previous step's content
        torch.nn.init.normal_(model.gate_w, std=1.0)
    z, a, m = tiny_batch(t=6)
    tau, step = _labels(2, 6)
    ref = model(z, tau, step, a, m)
    cache = model.new_cache()
    outs = [model(z[:, :2], tau[:, :2], step[:, :2], a[:, :2], m[:, :2], kv_cache=cache)]
    for t in range(2, 6):
        outs.append(model(z[:, t:t + 1], tau[:, t:t + 1], step[:, t:t + 1], a[:, t:t + 1], m[:, t:t + 1],
                          kv_cache=cache, prev_action_bsd=a[:, t - 1], prev_mask_bs=m[:, t - 1]))
    assert cache.length == 6
    assert torch.allclose(torch.cat(outs, 1), ref, atol=1e-5)
    cache2 = model.new_cache()  # several new steps at once on a non-empty cache (block-causal mask path)
    model(z[:, :2], tau[:, :2], step[:, :2], a[:, :2], m[:, :2], kv_cache=cache2)
    out_multi = model(z[:, 2:], tau[:, 2:], step[:, 2:], a[:, 2:], m[:, 2:], kv_cache=cache2,
                      prev_action_bsd=a[:, 1], prev_mask_bs=m[:, 1])
    assert torch.allclose(out_multi, ref[:, 2:], atol=1e-5)
    peek = model(z[:, :1], tau[:, :1], step[:, :1], a[:, :1], m[:, :1], kv_cache=cache2,
                 prev_action_bsd=a[:, 0], prev_mask_bs=m[:, 0], update_cache=False)
    assert cache2.length == 6 and peek.shape == (2, 1, N, C)
    with pytest.raises(ValueError, match="prev_action_bsd"):
        model(z[:, :1], tau[:, :1], step[:, :1], a[:, :1], m[:, :1], kv_cache=cache)


@pytest.mark.parametrize("kv", [1, 2])
def test_gqa_cache_shape_and_training(kv):
    model = tiny_model(num_kv_heads=kv)
    z, a, m = tiny_batch()
    tau, step = _labels(2, 5)
    cache = model.new_cache()
    out = model(z, tau, step, a, m, kv_cache=cache)
    lk = next(x for x in cache.layers if x is not None)
    assert lk.k.shape == (2 * model.num_slots, kv, model.cfg.max_time, 8)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.blocks[1].attn.parameters())


def test_identity_routing_init_routes_the_previous_step_in_place():
    """routing_init=identity: any full chunk's maps sum to I, so step t receives step t-1's embeddings unmoved."""
    model = tiny_model(action_routing=True, routing_init="identity")
    z, acts, mask, *_ = tiny_batch()
    act_in, mask_in = model.into_actions(acts, mask)
    emb = model.latent_in(z)
    routed = model._routed(emb, act_in, mask_in, None, False)
    full = mask_in.all(-1)  # steps whose incoming chunk is complete
    assert full[:, 1:].any()
    torch.testing.assert_close(routed[:, 1:][full[:, 1:]], emb[:, :-1][full[:, 1:]])
    torch.testing.assert_close(routed[:, 0], torch.zeros_like(routed[:, 0]))  # nothing before the first step
    zero = tiny_model(action_routing=True)
    assert zero.routing.abs().max() == 0


def test_own_routing_input_moves_the_previous_steps_own_embedding():
    """routing_input=own: the maps move a second embedding of step t-1 (route_in), so the routed content no longer
    shares the input embedding's subspace with step t's own noisy input; gradients reach both embeddings."""
    model = tiny_model(action_routing=True, routing_input="own", routing_init="identity")
    z, acts, mask, *_ = tiny_batch()
    act_in, mask_in = model.into_actions(acts, mask)
    full = mask_in.all(-1)[:, 1:]
    tau, step = _labels(*z.shape[:2])
    model(z, tau, step, acts, mask).pow(2).mean().backward()
    assert model.route_in.weight.grad.abs().sum() > 0 and model.latent_in.weight.grad.abs().sum() > 0
    with torch.no_grad():
        routed = model._routed(model.route_in(z), act_in, mask_in, None, False)
        torch.testing.assert_close(routed[:, 1:][full], model.route_in(z)[:, :-1][full])
    assert tiny_model(action_routing=True).route_in is None  # "shared", the default: older checkpoints load


def test_routing_gate_mixes_the_moved_and_the_unmoved_previous_step():
    """routing_gate: step t receives g R(a) e_{t-1} + (1 - g) e_{t-1}; g is read from the previous step's tokens by
    per-action weights, so it depends on the action and on the content; a masked chunk routes nothing; the gate's
    parameters train."""
    model = tiny_model(action_routing=True, routing_gate=True)
    torch.nn.init.normal_(model.routing, std=0.1)
    z, acts, mask, *_ = tiny_batch(t=6)
    mask[0, 2] = False  # a chunk with no action: step 3 of row 0 receives nothing
    act_in, mask_in = model.into_actions(acts, mask)
    emb = model.latent_in(z)
    idx = torch.where(mask_in.bool()[..., None], act_in.long(), 0) + model.card_offsets
    with torch.no_grad():
        g = model._gate(torch.cat([torch.zeros_like(emb[:, :1]), emb[:, :-1]], 1), idx, mask_in)
        routed = model._routed(emb, act_in, mask_in, None, False)
        bare = tiny_model(action_routing=True)
        bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gate_")})
        moved = bare._routed(emb, act_in, mask_in, None, False)
    acting = mask_in.any(-1)
    assert torch.all((g > 0) & (g < 1)) and torch.allclose(g[acting], torch.sigmoid(torch.tensor(2.0)))  # the bias
    acted = acting[:, 1:, None, None].float()
    want = g[:, 1:, None, None] * moved[:, 1:] + (1 - g[:, 1:, None, None]) * emb[:, :-1] * acted
    torch.testing.assert_close(routed[:, 1:], want)
    torch.testing.assert_close(routed[:, 0], torch.zeros_like(routed[:, 0]))
    torch.testing.assert_close(routed[0, 3], torch.zeros_like(routed[0, 3]))
    with torch.no_grad():  # content- and action-dependent once the weights are not zero
        torch.nn.init.normal_(model.gate_w, std=1.0)
        g2 = model._gate(emb, idx, mask_in)
        g_other = model._gate(emb.roll(1, 0), idx, mask_in)
    assert g2.std() > 1e-3 and not torch.allclose(g2, g_other)
    tau, step = _labels(*z.shape[:2])
    model(z, tau, step, acts, mask).pow(2).mean().backward()
    for name in ("gate_w", "gate_b"):
        assert getattr(model, name).grad.abs().sum() > 0, name
    assert model.gate_feat[0].weight.grad.abs().sum() > 0
    assert not hasattr(tiny_model(action_routing=True), "gate_w")  # off by default: older checkpoints load


@pytest.mark.parametrize("kw,field", [
    ({"k_max": 48}, "k_max"), ({"k_max": 1}, "k_max"), ({"num_kv_heads": 3}, "num_kv_heads"),
    ({"num_heads": 3}, "d_model"), ({"time_every": 1}, "time_every"), ({"num_layers": 1}, "num_layers"),
    ({"sample_steps": 3}, "sample_steps"), ({"sample_steps": 16}, "sample_steps"),
    ({"context_noise": 1.0}, "context_noise"), ({"bootstrap_fraction": 1.5}, "bootstrap_fraction"),
    ({"context_fraction": 1.0}, "context_fraction"), ({"routing_gate": True}, "routing_gate"),
    ({"routing_init": "eye"}, "routing_init"), ({"routing_input": "prev"}, "routing_input"),
])
def test_bad_config(kw, field):
    with pytest.raises(ValueError, match=f"DynamicsConfig.{field}"):
        tiny_cfg(**kw)


def test_bad_inputs(model):
    z, a, m = tiny_batch()
    tau, step = _labels(2, 5)
    with pytest.raises(ValueError, match="z shape"):
        model(z[..., :1], tau, step, a, m)
    with pytest.raises(ValueError, match="actions shape"):
        model(z, tau, step, a[..., :1], m)
    bad = a.clone()
    bad[0, 0, 0, 1] = 5
    with pytest.raises(ValueError, match="out of range"):
        model(z, tau, step, bad, m.fill_(True))
    with pytest.raises(ValueError, match="tau_idx must lie"):
        model(z, tau + 9, step, a, m)
    with pytest.raises(ValueError, match="tau_idx must lie"):
        model(z, tau, step + 4, a, m)
    with pytest.raises(ValueError, match="max_time"):
        zz = torch.zeros(1, 17, N, C)
        model(zz, torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, 17, dtype=torch.long),
              torch.zeros(1, 17, S, 2, dtype=torch.long), torch.zeros(1, 17, S, dtype=torch.bool))
    with pytest.raises(ValueError, match="action_cards"):
        DynamicsModel(DynamicsConfig(), N, C, [], S)


def test_gqa_fallback_matches_native(monkeypatch):
    from dreamer import transformer

    model = tiny_model(num_kv_heads=1)
    z, a, m = tiny_batch()
    tau, step = _labels(2, 5)
    native = model(z, tau, step, a, m)
    monkeypatch.setattr(transformer, "_SDPA_GQA", False)  # torch < 2.5 path: explicit KV-head expansion
    assert torch.allclose(model(z, tau, step, a, m), native, atol=1e-6)


def test_state_dict_roundtrip(model):
    clone = DynamicsModel(model.cfg, **model.init_kwargs())
    clone.load_state_dict(model.state_dict())
    z, a, m = tiny_batch()
    tau, step = _labels(2, 5)
    assert torch.equal(clone(z, tau, step, a, m), model(z, tau, step, a, m))
