"""GemmaWorldFusion on a tiny random Gemma 3 (built here, token ids fed directly, no network)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from dreamer.perception.fusion import FusionConfig, GemmaWorldFusion
from dreamer.perception.tiny import BOI_ID, EOI_ID, IMAGE_ID, byte_tokenizer, tiny_gemma3
from dreamer.training.gradmode import GRAD_MODE_EVENTS, ensure_grad_enabled

N, C, T = 4, 3, 2  # world: 2 latent steps of 4 tokens with 3 channels -> W = 8 world tokens
W = T * N


@pytest.fixture()
def plain(tiny_cfg):
    torch.manual_seed(0)
    return tiny_gemma3(tiny_cfg).eval()


@pytest.fixture()
def fusion(plain):
    return GemmaWorldFusion(copy.deepcopy(plain), FusionConfig(latent_channels=C, tokens_per_step=N, max_steps=4))


def _ids(model, b=2):
    s, e = model.cfg.start_token_id, model.cfg.end_token_id
    return torch.tensor([[2, 40, 41, s, e, 50, 51, 52, 53]] * b)


def test_tokens_added_and_embeddings_resized(plain, fusion):
    rows = plain.get_input_embeddings().num_embeddings
    assert (fusion.cfg.start_token_id, fusion.cfg.end_token_id) == (rows, rows + 1)
    assert fusion.gemma.get_input_embeddings().num_embeddings == rows + 2
    assert fusion.gemma.lm_head.weight.shape[0] == rows + 2


def test_without_world_tokens_logits_equal_plain_gemma(plain, fusion):
    ids = torch.tensor([[2, 10, 11, 12, 13], [2, 20, 21, 22, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        ref = plain(input_ids=ids, attention_mask=mask).logits
        got = fusion(ids, attention_mask=mask).logits
    assert torch.allclose(got[..., : ref.shape[-1]], ref, atol=1e-5)
    # with an image (image tokens scattered before the world splice would apply)
    img_ids = torch.tensor([[2, 10, BOI_ID] + [IMAGE_ID] * 4 + [EOI_ID, 11, 12]])
    types = (img_ids == IMAGE_ID).long()
    pix = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = plain(input_ids=img_ids, pixel_values=pix, token_type_ids=types).logits
        got = fusion(img_ids, pixel_values=pix, token_type_ids=types).logits
    assert torch.allclose(got[..., : ref.shape[-1]], ref, atol=1e-5)


def test_world_embeddings_spliced_in_place_and_loss_covers_text_only(fusion):
    ids = _ids(fusion)
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]
    z = torch.randn(2, T, N, C)
    sp = fusion.embed_inputs(ids, torch.ones_like(ids), z, labels=labels)
    assert sp.inputs_embeds.shape[1] == ids.shape[1] + W
    world = fusion.projector(z)
    assert torch.allclose(sp.inputs_embeds[:, 4 : 4 + W], world)
    text = fusion.gemma.get_input_embeddings()(ids)
    assert torch.allclose(sp.inputs_embeds[:, :4], text[:, :4])
    assert torch.allclose(sp.inputs_embeds[:, 4 + W :], text[:, 4:])
    assert (sp.labels[:, 4 : 4 + W] == -100).all() and torch.equal(sp.labels[:, 4 + W :], labels[:, 4:])
    out = fusion(ids, attention_mask=torch.ones_like(ids), world_latents=z, labels=labels)
    assert out.logits.shape[:2] == (2, ids.shape[1] + W)
    # loss = mean next-token CE over the 4 labelled text positions only
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
    tgt = sp.labels[:, 1:]
    keep = tgt != -100
    manual = -logp[keep].gather(1, tgt[keep][:, None]).mean()
    assert keep.sum() == 2 * 4 and torch.allclose(out.loss, manual, atol=1e-5)
    # the answer depends on the world
    out2 = fusion(ids, world_latents=torch.randn(2, T, N, C))
    assert not torch.allclose(out2.logits[:, -1], out.logits[:, -1])


def test_world_and_image_together(fusion):
    s, e = fusion.cfg.start_token_id, fusion.cfg.end_token_id
    image = [BOI_ID] + [IMAGE_ID] * 4 + [EOI_ID]
    ids = torch.tensor([[2, s, e] + image + [11, 12]])
    pix, z = torch.randn(1, 3, 16, 16), torch.randn(1, T, N, C)
    types = (ids == IMAGE_ID).long()
    out, sp = fusion.forward_spliced(ids, world_latents=z, pixel_values=pix, token_type_ids=types)
    assert out.logits.shape[1] == ids.shape[1] + W
    assert sp.token_type_ids[0].tolist() == [0, 0] + [0] * W + [0, 0, 1, 1, 1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="before the image tokens"):
        fusion(torch.tensor([[2] + image + [s, e, 11]]), world_latents=z, pixel_values=pix)


def test_markers_without_world_latents_raise(fusion):
    with pytest.raises(ValueError, match="world_latents is None"):
        fusion(_ids(fusion))


def test_gradients_reach_projector_and_nothing_frozen(fusion):
    fusion.train()
    ids = _ids(fusion)
    out = fusion(ids, world_latents=torch.randn(2, T, N, C), labels=ids)
    out.loss.backward()
    for name, p in fusion.named_parameters():
        if name.startswith("projector."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert not fusion.gemma.model.language_model.training  # frozen parts stay in eval mode


def test_unfreezing_language_model_only(fusion):
    fusion.set_trainable(train_language_model=True)
    fusion.train()
    ids = _ids(fusion)
    fusion(ids, world_latents=torch.randn(2, T, N, C), labels=ids).loss.backward()
    assert fusion.gemma.model.language_model.layers[0].mlp.up_proj.weight.grad is not None
    assert all(p.grad is None for p in fusion.gemma.model.vision_tower.parameters())
    assert fusion.gemma.model.language_model.training and not fusion.gemma.model.vision_tower.training


def test_trainable_weights_kept_fp32_when_frozen_model_is_half(plain):
    model = GemmaWorldFusion(copy.deepcopy(plain).to(torch.bfloat16),
                             FusionConfig(latent_channels=C, tokens_per_step=N, train_vision_tower=True))
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())
    assert model.gemma.model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    ids = _ids(model)
    model(ids, world_latents=torch.randn(2, T, N, C), labels=ids).loss.float().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.projector.parameters())


def test_save_and_reload_local_directory(plain, tmp_path):
    tok = byte_tokenizer()
    model = GemmaWorldFusion(copy.deepcopy(plain), FusionConfig(latent_channels=C, tokens_per_step=N), tokenizer=tok)
    assert tok.convert_tokens_to_ids("<start_of_world>") == model.cfg.start_token_id == len(tok) - 2
    with torch.no_grad():
        model.projector.step_embed.weight.add_(1.0)  # make sure the projector's own weights round-trip
    model.save_pretrained(tmp_path / "fused")
    again = GemmaWorldFusion.from_pretrained(tmp_path / "fused")
    assert again.cfg.start_token_id == model.cfg.start_token_id and again.tokenizer is not None
    ids = again.tokenizer("<start_of_world><end_of_world>wood?", return_tensors="pt")["input_ids"]
    assert ids[0, 1].item() == again.cfg.start_token_id and ids[0, 2].item() == again.cfg.end_token_id
    z = torch.randn(1, T, N, C)
    with torch.no_grad():
        assert torch.allclose(model(ids, world_latents=z).logits, again(ids, world_latents=z).logits, atol=1e-6)
    # plain Gemma 3 weights in a local folder load with a fresh projector and get the tokens added
    plain.save_pretrained(tmp_path / "plain")
    fresh = GemmaWorldFusion.from_pretrained(tmp_path / "plain", FusionConfig(latent_channels=C, tokens_per_step=N))
    assert fresh.cfg.start_token_id == plain.get_input_embeddings().num_embeddings


def _fit(model, steps):
    torch.manual_seed(1)
    ids = torch.randint(10, 200, (4, 12))
    ids[:, 2], ids[:, 3] = model.cfg.start_token_id, model.cfg.end_token_id
    labels = torch.full_like(ids, -100)
    labels[:, 9:] = ids[:, 9:]
    z = torch.randn(4, T, N, C)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(ids, world_latents=z, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_short_training_run_on_fixed_batch_lowers_loss(fusion):
    losses = _fit(fusion, 20)  # projector only: a soft prompt steering a frozen random LM
    assert losses[-1] < losses[0] - 0.15, losses
    fusion.set_trainable(train_language_model=True)
    losses = _fit(fusion, 20)
    assert losses[-1] < 0.5 * losses[0], losses


def test_generate_matches_forward_argmax(fusion):
    ids = _ids(fusion, b=1)
    z = torch.randn(1, T, N, C)
    new = fusion.generate(ids, world_latents=z, max_new_tokens=4, eos_token_id=-1)
    assert new.shape == (1, 4)
    full = torch.cat([ids, new], 1)
    with torch.no_grad():
        logits = fusion(full, world_latents=z).logits
    greedy = logits[0, ids.shape[1] + W - 1 : -1].argmax(-1)
    assert greedy.tolist() == new[0].tolist()
    # left-padded batch: the padded row decodes the same tokens
    s, e = fusion.cfg.start_token_id, fusion.cfg.end_token_id
    padded = torch.tensor([[0, 0] + ids[0].tolist(), [2, 7] + ids[0].tolist()])
    mask = torch.tensor([[0, 0] + [1] * ids.shape[1], [1] * (ids.shape[1] + 2)])
    assert s in padded and e in padded
    both = fusion.generate(padded, attention_mask=mask, world_latents=z.expand(2, -1, -1, -1),
                           max_new_tokens=4, eos_token_id=-1)
    assert both[0].tolist() == new[0].tolist()


def test_grad_mode_switched_off_is_turned_back_on_and_logged(caplog):
    events = list(GRAD_MODE_EVENTS)  # restored after: a later test in this process (diagnose_phase) reads them
    torch.set_grad_enabled(False)
    try:
        with caplog.at_level(logging.WARNING, logger="dreamer.training.gradmode"):
            assert ensure_grad_enabled("a test") is True
        assert torch.is_grad_enabled()
        assert "grad mode was disabled globally at a test" in caplog.text
        assert GRAD_MODE_EVENTS[-1][0] == "a test"  # recorded
        assert ensure_grad_enabled("again") is False
    finally:
        torch.set_grad_enabled(True)
        GRAD_MODE_EVENTS[:] = events
