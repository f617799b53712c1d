"""EmbeddingFusion and WorldProjector: pure torch, no transformers needed."""

from __future__ import annotations

import pytest
import torch

from dreamer.perception.projector import WorldProjector, WorldProjectorConfig
from dreamer.perception.splice import IGNORE_INDEX, EmbeddingFusion

START, END = 90, 91


def _inputs():
    # row 0: markers at 2,3 ; row 1: markers at 0,1 ; last position of row 1 is padding
    ids = torch.tensor([[5, 6, START, END, 7, 8], [START, END, 9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 7, 8], [-100, -100, -100, 10, 11, -100]])
    types = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    return ids, mask, labels, types


def test_splice_places_world_between_markers_and_shifts_mask_and_labels():
    ids, mask, labels, types = _inputs()
    b, seq_len, h, w = 2, ids.shape[1], 4, 3
    text = torch.arange(b * seq_len, dtype=torch.float32).reshape(b, seq_len, 1).expand(b, seq_len, h)
    world = -1.0 - torch.arange(b * w, dtype=torch.float32).reshape(b, w, 1).expand(b, w, h)
    sp = EmbeddingFusion(START, END)(ids, text, world, mask, labels, types)
    assert sp.inputs_embeds.shape == (b, seq_len + w, h)
    for r in range(b):
        s = int((ids[r] == START).nonzero())
        e = sp.inputs_embeds[r, :, 0]
        assert torch.equal(e[: s + 1], text[r, : s + 1, 0])  # text up to and including <start_of_world>
        assert torch.equal(e[s + 1 : s + 1 + w], world[r, :, 0])  # the W world embeddings, in order
        assert torch.equal(e[s + 1 + w :], text[r, s + 1 :, 0])  # <end_of_world> and the rest, shifted by W
        assert sp.world_positions[r].tolist() == list(range(s + 1, s + 1 + w))
    assert sp.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 0]]
    assert sp.labels.tolist() == [
        [-100, -100, -100, -100, -100, -100, -100, 7, 8],
        [-100, -100, -100, -100, -100, -100, 10, 11, -100],
    ]
    assert sp.token_type_ids.tolist() == [[0, 1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1, 0]]
    assert (sp.labels[torch.arange(b)[:, None], sp.world_positions] == IGNORE_INDEX).all()


def test_splice_gradient_flows_to_world_embeddings():
    ids, mask, _, _ = _inputs()
    world = torch.randn(2, 5, 4, requires_grad=True)
    sp = EmbeddingFusion(START, END)(ids, torch.randn(2, 6, 4), world, mask)
    (sp.inputs_embeds * torch.randn_like(sp.inputs_embeds)).sum().backward()
    assert world.grad is not None and (world.grad != 0).all()


@pytest.mark.parametrize(
    "row, message",
    [
        ([5, START, 6, END], "directly follow"),
        ([5, 6, 7, END], "exactly one"),
        ([START, END, START, END], "exactly one"),
    ],
)
def test_splice_rejects_bad_marker_layouts(row, message):
    ids = torch.tensor([row])
    with pytest.raises(ValueError, match=message):
        EmbeddingFusion(START, END)(ids, torch.zeros(1, 4, 2), torch.zeros(1, 3, 2))


def test_projector_shapes_step_order_and_kinds():
    torch.manual_seed(0)
    cfg = WorldProjectorConfig(latent_channels=3, tokens_per_step=4, max_steps=5, hidden_size=8, output_scale=2.0)
    proj = WorldProjector(cfg)
    z = torch.randn(2, 3, 4, 3)
    out = proj(z)
    assert out.shape == (2, 3 * 4, 8)
    # RMS-normalised output with gain 2 at init
    assert torch.allclose(out.pow(2).mean(-1).sqrt(), torch.full((2, 12), 2.0), atol=1e-3)
    # identical latents at every step still give different embeddings per step (step embedding)
    same = z[:, :1].expand(2, 3, 4, 3)
    e = proj(same).reshape(2, 3, 4, 8)
    assert not torch.allclose(e[:, 0], e[:, 1])
    # step-major order: step 1's tokens are positions 4..7
    assert torch.allclose(proj(z).reshape(2, 3, 4, 8)[:, 1], out[:, 4:8])
    imagined = torch.tensor([[False, False, True], [False, False, False]])
    e2 = proj(z, imagined)
    assert torch.allclose(e2[1], out[1]) and not torch.allclose(e2[0, 8:], out[0, 8:])
    assert torch.allclose(e2[0, :8], out[0, :8])


def test_projector_rejects_wrong_shapes():
    proj = WorldProjector(WorldProjectorConfig(latent_channels=3, tokens_per_step=4, max_steps=2, hidden_size=8))
    with pytest.raises(ValueError, match="N=4, C=3"):
        proj(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="1..2"):
        proj(torch.zeros(1, 3, 4, 3))
    with pytest.raises(ValueError, match=r"\(B, T_lat, N, C\)"):
        proj(torch.zeros(4, 3))
