"""Policy distribution helpers and BC losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from dreamer.agent import PolicyHead, bc_accuracy, bc_loss, entropy, kl, log_prob, max_prob, mode, sample


def _tiny_logits():
    """Leading shape (1,), S=2, D=2 with cards [2, 3].

    sub-step 0: comp0 probs [1/4, 3/4], comp1 uniform over 3.
    sub-step 1: arbitrary (masked in the tests that pass the mask).
    """
    l0 = torch.tensor([[[0.0, math.log(3.0)], [2.0, -1.0]]])  # (1, S=2, 2)
    l1 = torch.tensor([[[0.0, 0.0, 0.0], [5.0, 0.0, -3.0]]])  # (1, S=2, 3)
    return [l0, l1]


def test_log_prob_hand():
    logits = _tiny_logits()
    actions = torch.tensor([[[1, 2], [0, 1]]])  # (1, S, D)
    mask = torch.tensor([[True, False]])
    lp = log_prob(logits, actions, mask)
    assert lp.shape == (1,)
    assert lp.item() == pytest.approx(math.log(0.75) + math.log(1 / 3), rel=1e-6)
    # without mask both sub-steps count
    s1 = torch.log_softmax(logits[0][0, 1], -1)[0] + torch.log_softmax(logits[1][0, 1], -1)[1]
    assert log_prob(logits, actions, None).item() == pytest.approx(
        math.log(0.75) + math.log(1 / 3) + s1.item(), rel=1e-6
    )
    # garbage (out-of-range) actions at masked sub-steps are ignored
    bad = actions.clone()
    bad[0, 1] = torch.tensor([-1, 99])
    assert log_prob(logits, bad, mask).item() == pytest.approx(lp.item())
    assert PolicyHead.log_prob is log_prob


def test_entropy_and_kl_hand():
    logits = _tiny_logits()
    mask = torch.tensor([[True, False]])
    h_expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(3.0)
    assert entropy(logits, mask).item() == pytest.approx(h_expected, rel=1e-6)
    q = [torch.zeros_like(logits[0]), torch.zeros_like(logits[1])]  # uniform prior
    kl_expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # comp1 is uniform too
    assert kl(logits, q, mask).item() == pytest.approx(kl_expected, rel=1e-6)
    assert kl(logits, logits, None).abs().item() < 1e-7
    big = [torch.randn(3, 4, 5, 7), torch.randn(3, 4, 5, 2)]
    assert kl(big, big).abs().max().item() < 1e-6
    assert bool((kl(big, [torch.randn_like(t) for t in big]) > 0).all())


def test_mode_max_prob_sample_shapes():
    logits = _tiny_logits()
    assert mode(logits).tolist() == [[[1, 0], [0, 0]]]
    mp = max_prob(logits)
    assert mp.shape == (1, 2, 2)
    assert mp[0, 0, 0].item() == pytest.approx(0.75) and mp[0, 0, 1].item() == pytest.approx(1 / 3)
    g = torch.Generator().manual_seed(0)
    big = [torch.randn(4, 3, 5, 7), torch.randn(4, 3, 5, 2)]
    a = sample(big, generator=g)
    assert a.shape == (4, 3, 5, 2) and a.dtype == torch.int64
    assert int(a[..., 0].max()) < 7 and int(a[..., 1].max()) < 2
    a2 = sample(big, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, a2)
    # a near-deterministic distribution is sampled as its mode
    sharp = [torch.tensor([[[-50.0, 50.0, -50.0]]])]
    assert sample(sharp).tolist() == [[[1]]]


def test_bc_focal_equals_ce_at_gamma_zero_and_masking():
    torch.manual_seed(0)
    cards = [5, 3]
    logits = [torch.randn(2, 4, 3, c, requires_grad=True) for c in cards]
    actions = torch.stack([torch.randint(0, c, (2, 4, 3)) for c in cards], -1)
    mask = torch.rand(2, 4, 3) > 0.3
    mask[1, 3] = False  # an all-False row (last latent of an episode)
    ce = bc_loss(logits, actions, mask, 0.0)
    manual = 0.0
    count = 0
    for d, lg in enumerate(logits):
        lp = torch.log_softmax(lg, -1).gather(-1, actions[..., d : d + 1]).squeeze(-1)
        manual = manual - (lp * mask).sum()
        count += int(mask.sum())
    assert ce.item() == pytest.approx((manual / count).item(), rel=1e-6)
    focal = bc_loss(logits, actions, mask, focal_gamma=2.0)
    assert focal.item() < ce.item()  # (1-p)^2 <= 1 down-weights every term
    # changing actions at masked positions changes nothing
    changed = actions.clone()
    changed[~mask] = (changed[~mask] + 1) % 3
    assert bc_loss(logits, changed, mask, 0.0).item() == ce.item()
    assert bc_loss(logits, changed, mask, 2.0).item() == focal.item()
    # masked positions get no gradient
    ce.backward()
    assert logits[0].grad[~mask].abs().max().item() == 0.0
    assert logits[0].grad[mask].abs().max().item() > 0.0


def test_bc_focal_hand_and_empty_mask():
    logits = [torch.tensor([[[[0.0, math.log(3.0)]]]])]  # (1,1,1,2), p = [1/4, 3/4]
    actions = torch.tensor([[[[1]]]])
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    g = 1.5
    assert bc_loss(logits, actions, mask, g).item() == pytest.approx(0.25**g * -math.log(0.75), rel=1e-6)
    assert bc_accuracy(logits, actions, mask).item() == 1.0
    empty = bc_loss(logits, actions, torch.zeros_like(mask))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="focal_gamma"):
        bc_loss(logits, actions, mask, -1.0)
    with pytest.raises(ValueError, match="actions shape"):
        bc_loss(logits, actions[..., :0], mask)


def test_policy_head_shapes():
    head = PolicyHead(16, [17, 2, 11], chunk_len=4, hidden=32, layers=1)
    out = head(torch.randn(3, 5, 16))
    assert [tuple(t.shape) for t in out] == [(3, 5, 4, 17), (3, 5, 4, 2), (3, 5, 4, 11)]
    # near-uniform at init
    assert max_prob(out).max().item() < 0.7
    with pytest.raises(ValueError, match="action_cards"):
        PolicyHead(16, [1], chunk_len=4)
