"""lambda-returns and the value loss against hand computations (docs/design.md §6); PMPO: test_pmpo.py."""

from __future__ import annotations

import pytest
import torch

from dreamer.agent import TwoHot, lambda_returns, value_loss


def test_lambda_returns_hand_h3_with_terminal_cut():
    # r_1..r_3, c_1..c_3 (c_2 = 0 cuts the return), v_0..v_3; gamma 0.9, lambda 0.5
    r = torch.tensor([[1.0, 2.0, 3.0]])
    c = torch.tensor([[1.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 1.0, 2.0, 4.0]])
    # R_3 = v_3 = 4
    # R_2 = 3 + 0.9*1*(0.5*4 + 0.5*4) = 6.6
    # R_1 = 2 + 0.9*0*(...) = 2
    # R_0 = 1 + 0.9*1*(0.5*1 + 0.5*2) = 2.35
    out = lambda_returns(r, v, c, gamma=0.9, lam=0.5)
    assert out.shape == (1, 3)
    assert out[0].tolist() == pytest.approx([2.35, 2.0, 6.6], rel=1e-6)


def test_lambda_returns_limits():
    torch.manual_seed(0)
    r, v, c = torch.randn(4, 5), torch.randn(4, 6), (torch.rand(4, 5) > 0.2).float()
    g = 0.95
    td0 = lambda_returns(r, v, c, g, 0.0)
    assert torch.allclose(td0, r + g * c * v[:, 1:])
    mc = lambda_returns(r, v, c, g, 1.0)
    expected = v[:, 5].clone()
    for t in range(4, -1, -1):
        expected = r[:, t] + g * c[:, t] * expected
        assert torch.allclose(mc[:, t], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"values must be \(B, H\+1\)"):
        lambda_returns(r, v[:, :5], c, g, 0.5)


def test_value_loss_detaches_returns():
    th = TwoHot()
    logits = torch.zeros(2, 3, 255, requires_grad=True)
    ret = torch.tensor([[0.0, 1.0, -5.0], [10.0, 2.0, 0.5]], requires_grad=True)
    loss = value_loss(th, logits, ret)
    loss.backward()
    assert ret.grad is None and logits.grad is not None
    assert loss.item() == pytest.approx(th.loss(logits.detach(), ret.detach()).mean().item())
