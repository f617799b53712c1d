"""Phase-0 fitting: the differentiable pooled path, the loss, clips, PSNR, saving and the handoff."""

import math

import numpy as np
import pytest
import torch

from dreamer.data.cache import CacheMismatchError, LatentCache, build_cache
from dreamer.data.episode import save_episode
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig
from dreamer.tokenizer.cosmos import preprocess, weights_hash
from dreamer.tokenizer.fit import (
    FrameClipSampler,
    PooledAutoencoder,
    build_trainable_vae,
    evaluate_reconstruction,
    psnr_uint8,
    reconstruction_loss,
    save_tokenizer,
    ssim,
)


def moving_squares(T: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (T, size, size, 3): a colour gradient with a bright square sliding across (learnable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 1 - xx], -1) * 160 + rng.integers(0, 60, 3)
    frames = np.repeat(base[None], T, 0)
    for t in range(T):
        x0 = (4 * t + 8 * seed) % (size - 16)
        frames[t, 20:36, x0 : x0 + 16] = [250, 230, 40]
    return frames.astype(np.uint8)


def make_model(seed: int = 0, S: int = 0) -> PooledAutoencoder:
    torch.manual_seed(seed)
    vae, _ = build_trainable_vae("tiny", temporal_compression=S)
    return PooledAutoencoder(vae, resolution=64, pool=2)


def test_sprite_terms_weigh_a_small_error_that_the_mse_hardly_sees():
    """l1_weight and peak_weight: a 2 x 2 sprite painted over costs the MSE almost nothing on a 64 x 64 frame; the
    worst-pixel term pays it in full, and its gradient lands on the sprite alone."""
    target = torch.zeros(2, 3, 1, 64, 64)
    target[:, :, :, 10:12, 20:22] = 1.0  # a sprite in each frame
    recon = torch.zeros_like(target, requires_grad=True)  # the flat area right, the sprite painted over
    plain, m0 = reconstruction_loss(recon, target)
    both, m = reconstruction_loss(recon, target, l1_weight=0.1, peak_weight=0.01)
    assert m0.keys() == {"mse", "total"} and {"mse", "l1", "peak", "total"} <= m.keys()
    assert math.isclose(m["peak"], 1.0) and math.isclose(m["l1"], 4 / 4096, rel_tol=1e-5)
    assert math.isclose(both.item(), plain.item() + 0.1 * m["l1"] + 0.01 * 1.0, rel_tol=1e-5)
    assert both.item() > 10 * plain.item()  # the worst pixel outweighs the MSE of a lost sprite
    (g,) = torch.autograd.grad(both - plain, recon)
    assert g[:, :, :, 10:12, 20:22].abs().sum() > 0 and g[:, :, :, 30:, :].abs().sum() == 0  # flat area: L1's
    # subgradient is 0 where the error is 0, and the worst pixel is on the sprite


def test_loss_falls_and_gradients_reach_the_encoder():
    model = make_model()
    frames = torch.from_numpy(moving_squares(9)[None])  # (1, 9, 64, 64, 3), fixed
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for i in range(6):
        recon, target, z = model(frames)
        assert recon.shape == target.shape == (1, 3, 9, 64, 64) and z.shape == (1, 2, 16, 16)
        loss, m = reconstruction_loss(recon, target, perceptual_weight=0.1)
        opt.zero_grad()
        loss.backward()
        if i == 0:  # the pooled path is differentiable end to end
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vae.encoder.conv_in.parameters())
            assert {"mse", "one_minus_ssim", "total"} <= set(m)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert torch.is_grad_enabled()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0], losses


def test_clip_length_and_temporal_compression_4():
    model = make_model(S=4)
    assert model.S == 4
    recon, _, z = model(torch.from_numpy(moving_squares(9)[None]))
    assert z.shape == (1, 3, 16, 16) and recon.shape[2] == 9  # 1 + 8/4 latents
    with pytest.raises(ValueError, match="1 \\+ S"):
        model(torch.from_numpy(moving_squares(8)[None]))
    with pytest.raises(ValueError, match="temporal_compression"):
        build_trainable_vae("tiny", temporal_compression=3)


def test_clip_sampler_alignment_padding_and_determinism():
    eps = {"a": moving_squares(30), "b": moving_squares(5, seed=1)}  # b is shorter than a clip
    s = FrameClipSampler(eps, clip_frames=17, S=8, batch_size=64, seed=3)
    picks = s.draw(7)
    assert picks == s.draw(7) and picks != s.draw(8)
    assert all(start % 8 == 0 for _, start in picks)
    # a: 30 frames -> 5 latents; a clip holds 3, so starts 0, 8, 16; b: start 0 only
    assert {(n, st) for n, st in picks} <= {("a", 0), ("a", 8), ("a", 16), ("b", 0)}
    batch = s.collate([("a", 16), ("b", 0)])
    assert batch["frames"].shape == (2, 17, 64, 64, 3) and batch["frames"].dtype == torch.uint8
    assert batch["valid"][0].sum() == 14 and batch["valid"][1].sum() == 5  # frames 16..29, 0..4
    assert torch.equal(batch["frames"][0, 13], batch["frames"][0, 16])  # tail repeats the last frame
    assert torch.equal(batch["frames"][0, 0], torch.from_numpy(eps["a"][16]))
    with pytest.raises(ValueError, match="clip_frames=10"):
        FrameClipSampler(eps, clip_frames=10, S=8, batch_size=2)


def test_psnr_and_ssim_by_hand():
    a = torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8)
    b = torch.full_like(a, 10)
    b[0, 1] = 0  # second frame exact: excluded from the mean when marked invalid
    assert psnr_uint8(a, b, torch.tensor([[True, False]])).item() == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr_uint8(a, b).item() == pytest.approx(10 * math.log10(255**2 / 50))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert abs(ssim(x, torch.rand(2, 3, 16, 16) * 2 - 1).item()) < 0.1  # independent noise


def test_saved_tokenizer_loads_through_wrapper_and_reproduces_latents(tmp_path):
    model = make_model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.from_numpy(moving_squares(17)[None])
    for _ in range(2):
        loss, _ = reconstruction_loss(*model(frames)[:2])
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = save_tokenizer(model.vae, tmp_path / "run" / "tokenizer", {"step": 2})
    assert (out / "config.json").is_file() and (out / "phase0.json").is_file()
    first_hash = weights_hash(model.vae)
    save_tokenizer(model.vae, out, {"step": 2})  # replacing is atomic and leaves no temporary folders
    assert sorted(p.name for p in out.parent.iterdir()) == ["tokenizer"]

    frozen = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(out), resolution=64, pool=2, window_latents=2))
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.vae.training
    assert frozen.identity()["weights_sha256"] == first_hash
    model.eval()
    with torch.no_grad():
        mine = model.encode(preprocess(frames, 64))
    assert torch.allclose(frozen.encode(frames), mine, atol=1e-5)

    # fine-tuning starts from exactly these weights, trainable
    vae, source = build_trainable_vae("tiny", init_from=str(out))
    assert weights_hash(vae) == first_hash and all(p.requires_grad for p in vae.parameters())
    assert "pretrained" in source


def test_cache_refuses_latents_of_another_tokenizer(tmp_path, tiny_tokenizer, episode_factory):
    path = save_episode(tmp_path / "eps" / "ep_000.npz", episode_factory(T=16))
    build_cache([path], tiny_tokenizer, tmp_path / "cache")
    model = make_model(seed=5)  # another tokenizer of the same architecture
    out = save_tokenizer(model.vae, tmp_path / "tok", {})
    fitted = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(out), resolution=64, pool=2, window_latents=2))
    assert fitted.identity()["vae_config"] == tiny_tokenizer.identity()["vae_config"]
    with pytest.raises(CacheMismatchError, match="weights"):
        build_cache([path], fitted, tmp_path / "cache")
    with pytest.raises(CacheMismatchError):
        LatentCache(tmp_path / "cache", expect_tokenizer=fitted.identity())


def test_evaluate_reconstruction_reports_psnr():
    model = make_model()
    s = FrameClipSampler({"a": moving_squares(20)}, clip_frames=9, S=8, batch_size=2)
    metrics, (orig, recon) = evaluate_reconstruction(model, [s.batch(0)])
    assert set(metrics) == {"psnr", "psnr_pooled_pixels", "mse"}
    assert orig.shape == recon.shape == (2, 9, 64, 64, 3) and recon.dtype == torch.uint8
    assert 0 < metrics["psnr"] < metrics["psnr_pooled_pixels"]  # random weights lose to 4x4 colour averages
    assert model.training  # restored


def test_missing_phase0_output_names_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_phase0_tokenizer.py"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(tmp_path / "ckpt" / "run" / "tokenizer")))
    with pytest.raises(FileNotFoundError, match="train_phase0_tokenizer.py"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained="checkpoints/no_such_run/tokenizer"))


def test_plateau_rule():
    from dreamer.tokenizer.fit import plateaued

    rising = [(i * 50, 10.0 + i) for i in range(6)]
    assert not plateaued(rising, 2, 0.1)
    flat = rising + [(300, 15.05), (350, 14.9)]
    assert plateaued(flat, 2, 0.1) and not plateaued(flat, 3, 0.1) and not plateaued(flat, 0, 0.1)
    assert not plateaued(flat[:2], 2, 0.1)  # too few evaluations to judge


def test_the_grid_aligned_crop_puts_one_cell_on_one_patch_and_decodes_back():
    """tokenizer.crop 63 at resolution 72: every 7-pixel Crafter cell becomes exactly one 8 x 8 patch, and the
    inverse (postprocess) gives the 64 x 64 frame back exactly (black last row and column)."""
    from dreamer.tokenizer.cosmos import postprocess, preprocess

    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (2, 9, 9, 3), dtype=np.uint8)
    frame = np.zeros((2, 64, 64, 3), np.uint8)
    frame[:, :63, :63] = cells.repeat(7, axis=1).repeat(7, axis=2)  # 9 x 9 cells of 7 pixels, as Crafter draws
    x = preprocess(torch.from_numpy(frame)[:, None], 72, crop=63)  # (2, 3, 1, 72, 72)
    patches = x[:, :, 0].unfold(2, 8, 8).unfold(3, 8, 8)  # (2, 3, 9, 9, 8, 8)
    assert (patches.amax((-1, -2)) == patches.amin((-1, -2))).all()  # one colour per patch: one cell per patch
    assert torch.allclose(patches[..., 0, 0].permute(0, 2, 3, 1), torch.from_numpy(cells).float() / 127.5 - 1)
    back = postprocess(x, 64, crop=63)[:, 0]
    assert back.shape == (2, 64, 64, 3) and (back.numpy() == frame).all()
    with pytest.raises(ValueError, match="tokenizer.crop=65"):
        preprocess(torch.from_numpy(frame)[:, None], 72, crop=65)


def test_the_wrapper_encodes_a_cropped_frame_as_phase_0_fits_it(tmp_path):
    """tokenizer.crop travels with the weights' use: the frozen wrapper's latents equal the fitting path's, its
    identity names the crop (so a cache of uncropped latents is refused), and it decodes to the frame's size."""
    from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

    model = make_model(S=1)
    model.vae.save_pretrained(tmp_path / "tok")
    cropped = PooledAutoencoder(model.vae, resolution=72, pool=1, crop=63).eval()
    frames = torch.from_numpy(moving_squares(2)[None])  # (1, 2, 64, 64, 3)
    with torch.no_grad():
        _, _, z_fit = cropped(frames)
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(tmp_path / "tok"), resolution=72, pool=1, crop=63,
                                                     window_latents=1))
    plain = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(tmp_path / "tok"), resolution=64, pool=1,
                                                       window_latents=1))
    assert tok.num_tokens == 81 and torch.allclose(tok.encode_clip(frames), z_fit, atol=1e-5)
    assert tok.identity()["crop"] == 63 and "crop" not in plain.identity()
    assert tok.decode(z_fit, size=64).shape == (1, 2, 64, 64, 3)
    # phase 0's folder records its geometry: loading it to see frames otherwise is refused, naming both
    (tmp_path / "tok" / "phase0.json").write_text('{"resolution": 72, "crop": 63}')
    with pytest.raises(ValueError, match=r"tokenizer.crop=0 but .*phase0.json was fitted with crop 63"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(tmp_path / "tok"), resolution=72, pool=1))
    assert CosmosTokenizerWrapper(cfg=tok.cfg).num_tokens == 81


def test_framewise_fitting_path_equals_the_wrapper(tmp_path):
    """window_latents=0: phase 0 encodes and decodes each frame of a clip alone, exactly as the cache and the acting
    agent encode it, so what is fitted is what the phases read; a layout with S > 1 is refused, naming the key."""
    from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig

    model = make_model(S=1)
    model.vae.save_pretrained(tmp_path / "tok")
    fit = PooledAutoencoder(model.vae, resolution=64, pool=2, framewise=True).eval()
    frames = torch.from_numpy(moving_squares(3)[None])  # (1, 3, 64, 64, 3)
    with torch.no_grad():
        recon, target, z_fit = fit(frames)
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=str(tmp_path / "tok"), resolution=64, pool=2,
                                                     window_latents=0))
    assert z_fit.shape == (1, 3, 16, 16) and recon.shape == target.shape == (1, 3, 3, 64, 64)
    assert torch.allclose(tok.encode(frames), z_fit, atol=1e-5)
    with torch.no_grad():  # frame 2's reconstruction is its own latent's, whatever came before
        assert torch.allclose(fit.decode(z_fit)[:, :, 2], fit.decode(z_fit[:, 2:])[:, :, 0], atol=1e-5)
    with pytest.raises(ValueError, match="window_latents=0"):
        PooledAutoencoder(make_model(S=8).vae, resolution=64, pool=2, framewise=True)
