"""The policy distribution (PolicyDist), the policy heads and the BC losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.utils._pytree as pytree

from dreamer.agent import POLICY_HEADS, Agent, AgentConfig, PolicyDist, PolicyHead, bc_accuracy, bc_loss
from dreamer.agent.policy import make_policy_head


def _tiny_dist():
    """Leading shape (1,), S=2, D=2 with cards [2, 3].

    sub-step 0: comp0 probs [1/4, 3/4], comp1 uniform over 3.
    sub-step 1: arbitrary (masked in the tests that pass the mask).
    """
    l0 = torch.tensor([[[0.0, math.log(3.0)], [2.0, -1.0]]])  # (1, S=2, 2)
    l1 = torch.tensor([[[0.0, 0.0, 0.0], [5.0, 0.0, -3.0]]])  # (1, S=2, 3)
    return PolicyDist([l0, l1])


def _big(seed: int = 0, lead=(4, 3)) -> PolicyDist:
    g = torch.Generator().manual_seed(seed)
    return PolicyDist([torch.randn(*lead, 5, 7, generator=g), torch.randn(*lead, 5, 2, generator=g)])


def test_log_prob_hand():
    dist = _tiny_dist()
    actions = torch.tensor([[[1, 2], [0, 1]]])  # (1, S, D)
    mask = torch.tensor([[True, False]])
    lp = dist.log_prob(actions, mask)
    assert lp.shape == (1,)
    assert lp.item() == pytest.approx(math.log(0.75) + math.log(1 / 3), rel=1e-6)
    # without mask both sub-steps count
    s1 = torch.log_softmax(dist.logits[0][0, 1], -1)[0] + torch.log_softmax(dist.logits[1][0, 1], -1)[1]
    assert dist.log_prob(actions, None).item() == pytest.approx(
        math.log(0.75) + math.log(1 / 3) + s1.item(), rel=1e-6
    )
    # garbage (out-of-range) actions at masked sub-steps are ignored
    bad = actions.clone()
    bad[0, 1] = torch.tensor([-1, 99])
    assert dist.log_prob(bad, mask).item() == pytest.approx(lp.item())
    entries = dist.entry_log_probs(actions, mask)  # (1, S, D): masked entries hold action 0's log-prob
    assert entries.shape == (1, 2, 2) and entries.dtype == torch.float32
    assert entries[0, 0].tolist() == pytest.approx([math.log(0.75), math.log(1 / 3)], rel=1e-6)
    with pytest.raises(ValueError, match="mask shape"):
        dist.log_prob(actions, mask[:, :1])


def test_entropy_and_kl_hand():
    dist = _tiny_dist()
    mask = torch.tensor([[True, False]])
    h_expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(3.0)
    assert dist.entropy(mask).item() == pytest.approx(h_expected, rel=1e-6)
    uniform = PolicyDist([torch.zeros_like(lg) for lg in dist.logits])
    kl_expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # comp1 is uniform too
    assert dist.kl(uniform, mask).item() == pytest.approx(kl_expected, rel=1e-6)
    assert dist.kl(dist, None).abs().item() < 1e-7
    big = _big(lead=(3, 4))
    assert big.kl(big).abs().max().item() < 1e-6
    other = _big(seed=1, lead=(3, 4))  # its own stream: randn_like on a global RNG seeded 0 would copy big
    assert bool((big.kl(other) > 0).all())
    with pytest.raises(ValueError, match="components"):
        big.kl(PolicyDist(big.logits[:1]))


def test_methods_equal_the_formulas_on_the_logits():
    """Each method against its formula written out on the logits (float32 log_softmax per component), bitwise."""
    dist = _big(seed=3)
    acts = torch.stack([torch.randint(0, c, (4, 3, 5), generator=torch.Generator().manual_seed(c)) for c in (7, 2)], -1)
    mask = torch.rand(4, 3, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    logps = [torch.log_softmax(lg.float(), -1) for lg in dist.logits]
    entries = torch.stack([lp.gather(-1, torch.where(mask, acts[..., d], 0)[..., None]).squeeze(-1)
                           for d, lp in enumerate(logps)], -1)
    assert torch.equal(dist.entry_log_probs(acts, mask), entries)
    assert torch.equal(dist.log_prob(acts, mask), (entries.sum(-1) * mask.float()).sum(-1))
    ent = -(logps[0].exp() * logps[0]).sum(-1) - (logps[1].exp() * logps[1]).sum(-1)
    assert torch.equal(dist.entropy(mask), (ent * mask.float()).sum(-1))
    other = _big(seed=4)
    logqs = [torch.log_softmax(lg.float(), -1) for lg in other.logits]
    kl = sum((p.exp() * (p - q)).sum(-1) for p, q in zip(logps, logqs, strict=True))
    assert torch.equal(dist.kl(other, mask), (kl * mask.float()).sum(-1))
    assert torch.equal(dist.mode(), torch.stack([lg.argmax(-1) for lg in dist.logits], -1))
    assert torch.equal(dist.max_prob(), torch.stack([torch.softmax(lg.float(), -1).amax(-1) for lg in dist.logits], -1))


def test_mode_max_prob_sample_shapes():
    dist = _tiny_dist()
    assert dist.mode().tolist() == [[[1, 0], [0, 0]]]
    mp = dist.max_prob()
    assert mp.shape == (1, 2, 2)
    assert mp[0, 0, 0].item() == pytest.approx(0.75) and mp[0, 0, 1].item() == pytest.approx(1 / 3)
    g = torch.Generator().manual_seed(0)
    big = _big()
    a = big.sample(generator=g)
    assert a.shape == (4, 3, 5, 2) and a.dtype == torch.int64
    assert int(a[..., 0].max()) < 7 and int(a[..., 1].max()) < 2
    a2 = big.sample(generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, a2)
    # a near-deterministic distribution is sampled as its mode
    sharp = PolicyDist([torch.tensor([[[-50.0, 50.0, -50.0]]])])
    assert sharp.sample().tolist() == [[[1]]]


def test_sampling_with_a_generator_per_row_equals_sampling_apart():
    big = _big(seed=5)
    together = big.sample([torch.Generator().manual_seed(10 + i) for i in range(4)])
    apart = torch.stack([big[i].sample(torch.Generator().manual_seed(10 + i)) for i in range(4)])
    assert together.shape == (4, 3, 5, 2) and torch.equal(together, apart)
    one_stream = big.sample(torch.Generator().manual_seed(10))
    assert not torch.equal(together, one_stream)  # each row draws from its own stream
    with pytest.raises(ValueError, match="3 generators for a batch of 4"):
        big.sample([torch.Generator() for _ in range(3)])


def test_indexing_shape_and_pytree():
    big = _big()
    assert big.shape == (4, 3, 5) and big.cards == [7, 2]
    row = big[1]
    assert isinstance(row, PolicyDist) and row.shape == (3, 5) and torch.equal(row.logits[0], big.logits[0][1])
    assert big[:, :2].shape == (4, 2, 5)
    with pytest.raises(ValueError, match="no logits"):
        PolicyDist([])
    with pytest.raises(ValueError, match="leading"):
        PolicyDist([torch.zeros(2, 3, 4), torch.zeros(2, 4, 4)])
    # a pytree node: DDP / FSDP2 / torch.compile reach the logits inside a module's output
    leaves, spec = pytree.tree_flatten({"dist": big, "x": 1})
    assert sum(isinstance(v, torch.Tensor) for v in leaves) == 2
    back = pytree.tree_unflatten([v * 2 if isinstance(v, torch.Tensor) else v for v in leaves], spec)["dist"]
    assert isinstance(back, PolicyDist) and torch.equal(back.logits[1], 2 * big.logits[1])
    # and a dataclass: FSDP2 hooks the backward of the grad-requiring tensors it finds in a sharded head's output
    from torch.distributed.fsdp._common_utils import collect_grad_tensors
    from torch.distributed.utils import _apply_to_tensors

    graph = PolicyDist([t.clone().requires_grad_() for t in big.logits])
    assert [id(t) for t in collect_grad_tensors(graph)] == [id(t) for t in graph.logits]
    mapped = _apply_to_tensors(lambda t: t + 1, graph)
    assert isinstance(mapped, PolicyDist) and torch.equal(mapped.logits[0], graph.logits[0] + 1)


def test_bc_focal_equals_ce_at_gamma_zero_and_masking():
    torch.manual_seed(0)
    cards = [5, 3]
    logits = [torch.randn(2, 4, 3, c, requires_grad=True) for c in cards]
    dist = PolicyDist(logits)
    actions = torch.stack([torch.randint(0, c, (2, 4, 3)) for c in cards], -1)
    mask = torch.rand(2, 4, 3) > 0.3
    mask[1, 3] = False  # an all-False row (last latent of an episode)
    ce = bc_loss(dist, actions, mask, 0.0)
    manual = 0.0
    count = 0
    for d, lg in enumerate(logits):
        lp = torch.log_softmax(lg, -1).gather(-1, actions[..., d : d + 1]).squeeze(-1)
        manual = manual - (lp * mask).sum()
        count += int(mask.sum())
    assert ce.item() == pytest.approx((manual / count).item(), rel=1e-6)
    focal = bc_loss(dist, actions, mask, focal_gamma=2.0)
    assert focal.item() < ce.item()  # (1-p)^2 <= 1 down-weights every term
    # changing actions at masked positions changes nothing
    changed = actions.clone()
    changed[~mask] = (changed[~mask] + 1) % 3
    assert bc_loss(dist, changed, mask, 0.0).item() == ce.item()
    assert bc_loss(dist, changed, mask, 2.0).item() == focal.item()
    # masked positions get no gradient
    ce.backward()
    assert logits[0].grad[~mask].abs().max().item() == 0.0
    assert logits[0].grad[mask].abs().max().item() > 0.0


def test_bc_focal_hand_and_empty_mask():
    dist = PolicyDist([torch.tensor([[[[0.0, math.log(3.0)]]]])])  # (1,1,1,2), p = [1/4, 3/4]
    actions = torch.tensor([[[[1]]]])
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    g = 1.5
    assert bc_loss(dist, actions, mask, g).item() == pytest.approx(0.25**g * -math.log(0.75), rel=1e-6)
    assert bc_accuracy(dist, actions, mask).item() == 1.0
    empty = bc_loss(dist, actions, torch.zeros_like(mask))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="focal_gamma"):
        bc_loss(dist, actions, mask, -1.0)
    with pytest.raises(ValueError, match="actions shape"):
        bc_loss(dist, actions[..., :0], mask)


def test_policy_head_shapes():
    head = PolicyHead(16, [17, 2, 11], chunk_len=4, hidden=32, layers=1)
    out = head(torch.randn(3, 5, 16))
    assert isinstance(out, PolicyDist) and out.shape == (3, 5, 4) and out.cards == [17, 2, 11]
    assert [tuple(t.shape) for t in out.logits] == [(3, 5, 4, 17), (3, 5, 4, 2), (3, 5, 4, 11)]
    # near-uniform at init
    assert out.max_prob().max().item() < 0.7
    with pytest.raises(ValueError, match="action_cards"):
        PolicyHead(16, [1], chunk_len=4)


def test_the_policy_head_is_chosen_by_the_config():
    assert POLICY_HEADS["mlp"] is PolicyHead
    cfg = AgentConfig(d_model=16, num_layers=1, num_heads=2, mlp_hidden=32, head_hidden=32, policy_head="mlp")
    agent = Agent(cfg, 4, 3, [3, 2], 2)
    assert type(agent.policy) is PolicyHead and isinstance(make_policy_head("mlp", 16, [3], 1, 8, 0), PolicyHead)
    assert "policy.mlp.out.weight" in agent.state_dict()  # the keys checkpoints have always had
    with pytest.raises(ValueError, match=r"AgentConfig.policy_head: unknown head 'lstm'; known: \['mlp'\]"):
        AgentConfig(policy_head="lstm")
    with pytest.raises(ValueError, match="agent.policy_head: unknown head"):
        make_policy_head("lstm", 16, [3], 1, 8, 0)
