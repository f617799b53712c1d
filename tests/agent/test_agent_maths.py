"""symlog / symexp and the two-hot distribution (docs/design.md §8)."""

from __future__ import annotations

import math

import pytest
import torch

from dreamer.agent import AgentConfig, RLConfig, TwoHot, make_bins, symexp, symlog


def test_symlog_symexp_inverse_and_values():
    x = torch.tensor([-1e6, -100.0, -1.5, -1e-3, 0.0, 1e-3, 2.0, 37.0, 1e6], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(symlog(symexp(x[2:-2])), x[2:-2], rtol=1e-12, atol=1e-12)
    assert symlog(torch.tensor(math.e - 1)).item() == pytest.approx(1.0)
    assert symexp(torch.tensor(-1.0)).item() == pytest.approx(-(math.e - 1))


def test_bins_layout():
    bins = make_bins(255, -20.0, 20.0)
    assert bins.shape == (255,) and bins.dtype == torch.float32
    assert bins[127].item() == 0.0
    assert torch.equal(bins, -bins.flip(0))  # exactly antisymmetric
    assert bins[-1].item() == pytest.approx(math.expm1(20.0), rel=1e-6)
    assert bool((bins[1:] > bins[:-1]).all())


@pytest.mark.parametrize("y", [0.0, 1.0, -1.0, 0.37, -3.3, 12.5, -250.0, 1234.5, 1e5, -4e7])
def test_encode_decode_roundtrip(y):
    th = TwoHot()
    target = torch.tensor([y])
    probs = th.encode(target)
    assert probs.shape == (1, 255)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert int((probs > 0).sum()) <= 2
    assert th.decode_probs(probs).item() == pytest.approx(y, rel=1e-5, abs=1e-5)
    # through logits: log of the two-hot (zeros -> -inf) then softmax gives the same distribution
    assert th.decode(probs.log()).item() == pytest.approx(y, rel=1e-5, abs=1e-5)


def test_encode_weights_on_right_bins():
    th = TwoHot()
    b = th.bins
    k = 140
    y = b[k] + 0.25 * (b[k + 1] - b[k])
    p = th.encode(y.reshape(1))[0]
    nz = torch.nonzero(p).flatten().tolist()
    assert nz == [k, k + 1]
    assert p[k].item() == pytest.approx(0.75, abs=1e-5)
    assert p[k + 1].item() == pytest.approx(0.25, abs=1e-5)
    # exactly on a bin: all weight there
    p = th.encode(b[100].reshape(1))[0]
    assert p[100].item() == pytest.approx(1.0)
    assert p.sum().item() == pytest.approx(1.0)


def test_encode_clips_outside_range():
    th = TwoHot(num_bins=11, low=-2.0, high=2.0)
    p = th.encode(torch.tensor([1e3, -1e3, float(th.bins[-1]), float(th.bins[0])]))
    for row, idx in ((0, 10), (1, 0), (2, 10), (3, 0)):
        assert p[row, idx].item() == pytest.approx(1.0)
        assert p[row].sum().item() == pytest.approx(1.0)
    assert th.decode_probs(p[:2]).tolist() == pytest.approx([math.expm1(2.0), -math.expm1(2.0)], rel=1e-6)


def test_loss_hand_computed():
    th = TwoHot(num_bins=5, low=-2.0, high=2.0)  # bins symexp([-2,-1,0,1,2])
    e1 = math.e - 1
    y = 0.25 * e1  # between bin 2 (0) and bin 3 (e-1): weights 0.75, 0.25
    logits = torch.tensor([[0.1, -0.3, 0.7, 1.2, -2.0]])
    logsm = torch.log_softmax(logits, -1)[0]
    expected = -(0.75 * logsm[2] + 0.25 * logsm[3]).item()
    assert th.loss(logits, torch.tensor([y])).item() == pytest.approx(expected, rel=1e-6)


def test_zero_logits_decode_to_zero_and_bf16():
    th = TwoHot()
    z = th.decode(torch.zeros(4, 3, 255))
    assert z.shape == (4, 3)
    assert torch.equal(z, torch.zeros(4, 3))
    zb = th.decode(torch.zeros(2, 255, dtype=torch.bfloat16))
    assert zb.dtype == torch.float32 and torch.equal(zb, torch.zeros(2))
    logits = torch.randn(3, 255).to(torch.bfloat16)
    loss = th.loss(logits, torch.tensor([0.5, -2.0, 100.0]))
    assert loss.dtype == torch.float32 and bool(torch.isfinite(loss).all())


def test_twohot_survives_module_cast_and_rejects_bad_shapes():
    th = TwoHot().to(torch.bfloat16)
    assert th.decode_probs(th.encode(torch.tensor([123.0]))).item() == pytest.approx(123.0, rel=1e-5)
    with pytest.raises(ValueError, match="num_bins=255"):
        TwoHot().decode(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="disagree"):
        TwoHot().loss(torch.zeros(2, 255), torch.zeros(3))


def test_config_validation():
    with pytest.raises(ValueError, match="AgentConfig.d_model"):
        AgentConfig(d_model=130, num_heads=4)
    with pytest.raises(ValueError, match="AgentConfig.focal_gamma"):
        AgentConfig(focal_gamma=-1.0)
    from dreamer.presets import from_dict

    with pytest.raises(ValueError, match="unknown config key"):
        from_dict(AgentConfig, {"d_modle": 64}, "agent")
    assert from_dict(AgentConfig, {"d_model": 64}, "agent").d_model == 64
    assert RLConfig().gamma(8) == pytest.approx(0.997**8)
    with pytest.raises(ValueError, match="RLConfig.lam"):
        RLConfig(lam=1.5)
