import math
import os
import subprocess
import sys

import pytest
import torch

from dreamer import CosmosTokenizerWrapper
from dreamer.tokenizer import TokenizerConfig, latent_steps, latent_window, window_plan


@pytest.mark.parametrize("T", [1, 2, 8, 9, 10, 17, 33, 64])
def test_latent_steps_and_pooled_shape(tiny_tokenizer, T):
    assert latent_steps(T, 8) == 1 + math.ceil((T - 1) / 8)
    frames = torch.randint(0, 256, (2, T, 64, 64, 3), dtype=torch.uint8)
    z = tiny_tokenizer.encode(frames)
    assert z.shape == (2, tiny_tokenizer.latent_steps(T), 16, 16)
    assert z.dtype == torch.float32


def test_default_resolution_gives_16_tokens():
    tok = CosmosTokenizerWrapper("tiny")  # 64 -> 256 upsampling, pool 8
    z = tok.encode(torch.randint(0, 256, (1, 9, 64, 64, 3), dtype=torch.uint8))
    assert z.shape == (1, 2, 16, 16)


def test_window_plan_covers_every_latent_once():
    for T in range(1, 80):
        for m in (1, 2, 3):
            kept = []
            for start, stop, keep in window_plan(T, 8, m):
                first = start // 8
                kept.extend(range(first + keep, first + keep + (stop - start - 1) // 8 + 1 - keep))
            assert kept == list(range(latent_steps(T, 8))), (T, m)
    assert latent_window(0, 8, 2) == (0, 1)
    assert latent_window(3, 8, 2) == (16, 25)


def test_causality(tiny_tokenizer):
    torch.manual_seed(1)
    frames = torch.randint(0, 256, (1, 40, 64, 64, 3), dtype=torch.uint8)
    z = tiny_tokenizer.encode(frames)
    for f in (3, 17, 30):
        changed = frames.clone()
        changed[:, f] = 255 - changed[:, f]
        z2 = tiny_tokenizer.encode(changed)
        first_affected = 0 if f == 0 else (f - 1) // 8 + 1  # latent k covers frames 8k-7..8k
        assert torch.allclose(z[:, :first_affected], z2[:, :first_affected], atol=1e-5), f
        assert not torch.allclose(z[:, first_affected], z2[:, first_affected], atol=1e-5), f


def test_windowed_equals_incremental(tiny_tokenizer):
    torch.manual_seed(2)
    T = 45
    frames = torch.randint(0, 256, (1, T, 64, 64, 3), dtype=torch.uint8)
    z = tiny_tokenizer.encode(frames)
    for k in range(z.shape[1]):
        seen = frames[:, : min(8 * k + 1, T)]  # what an agent has at chunk boundary k
        assert torch.allclose(tiny_tokenizer.encode_latent(seen, k), z[:, k], atol=1e-5), k


def test_frozen_and_grad_mode(tiny_tokenizer):
    assert torch.is_grad_enabled()
    assert not any(p.requires_grad for p in tiny_tokenizer.parameters())
    tiny_tokenizer.train()
    assert not tiny_tokenizer.vae.training
    z = tiny_tokenizer.encode(torch.randint(0, 256, (1, 9, 64, 64, 3), dtype=torch.uint8))
    assert z.grad_fn is None and not z.requires_grad
    assert torch.is_grad_enabled()


def test_import_keeps_grad_mode():
    code = "import torch, dreamer, dreamer.tokenizer, diffusers; assert torch.is_grad_enabled(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_decode_shape(tiny_tokenizer):
    z = tiny_tokenizer.encode(torch.randint(0, 256, (1, 9, 64, 64, 3), dtype=torch.uint8))
    frames = tiny_tokenizer.decode(z, size=64)
    assert frames.shape == (1, 9, 64, 64, 3) and frames.dtype == torch.uint8


def test_load_local_directory_offline(tmp_path, tiny_tokenizer):
    tiny_tokenizer.vae.save_pretrained(tmp_path / "tok")
    code = (
        "import torch, sys; from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig;"
        f"t = CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained=r'{tmp_path / 'tok'}', resolution=64, pool=2));"
        "print(t.identity()['weights_sha256'])"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == tiny_tokenizer.identity()["weights_sha256"]


def test_bad_config_errors():
    with pytest.raises(ValueError, match="pool"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=3))  # grid 8
    with pytest.raises(ValueError, match="temporal_compression"):
        TokenizerConfig(temporal_compression=3)
    with pytest.raises(ValueError, match="fixed layout"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="cv8x8x8", temporal_compression=1))
    with pytest.raises(ValueError, match="preset"):
        CosmosTokenizerWrapper("nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(pretrained="/"))


@pytest.mark.parametrize("S", [1, 2, 4, 8])
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_every_temporal_compression_at_native_resolution(preset, S):
    """64x64 frames, pool 2: 16 tokens of 16 channels, one latent per S frames, causal, decodable."""
    tok = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset=preset, resolution=64, pool=2, temporal_compression=S,
                                                     window_latents=2))
    assert (tok.S, tok.spatial, tok.num_tokens, tok.channels) == (S, 8, 16, 16)
    assert tok.identity()["temporal_compression"] == S
    torch.manual_seed(0)
    T = 2 * S + 3
    frames = torch.randint(0, 256, (1, T, 64, 64, 3), dtype=torch.uint8)
    z = tok.encode(frames)
    assert z.shape == (1, latent_steps(T, S), 16, 16)
    for k in range(z.shape[1]):  # acting sees the same latents as the cache
        seen = frames[:, : min(S * k + 1, T)]
        assert torch.allclose(tok.encode_latent(seen, k), z[:, k], atol=1e-5), k
    x = tok.decode(z[:, :2])
    assert x.shape == (1, 1 + S, 64, 64, 3) and x.dtype == torch.uint8


def test_probe_measures_the_real_layout_not_the_config():
    from diffusers import AutoencoderKLCosmos

    from dreamer.tokenizer.cosmos import PRESETS, probe_layout

    # Four blocks cannot apply three spatial halvings after a patch of 1: the config says 8, the blocks give 4.
    vae = AutoencoderKLCosmos(**dict(PRESETS["tiny"], patch_size=1, temporal_compression_ratio=1))
    assert vae.config.spatial_compression_ratio == 8
    assert probe_layout(vae, 64) == (1, 16)
    assert probe_layout(vae, 256) == (1, 64)


def test_batched_windows_equal_one_by_one():
    torch.manual_seed(3)
    frames = torch.randint(0, 256, (2, 37, 64, 64, 3), dtype=torch.uint8)
    kw = {"preset": "tiny", "resolution": 64, "pool": 2, "window_latents": 2}
    one = CosmosTokenizerWrapper(cfg=TokenizerConfig(batch_windows=1, **kw)).encode(frames)
    many = CosmosTokenizerWrapper(cfg=TokenizerConfig(batch_windows=3, **kw)).encode(frames)
    assert torch.allclose(one, many, atol=1e-5)


def test_every_frame_alone_at_window_zero():
    """window_latents=0 (S = 1): latent k is frame k's alone, so a step's change shows in that step's latent and
    nowhere else. A causal window of 2 frames instead gives latents that answer mostly to the window's FIRST
    frame (the replicated causal padding), one step behind the actions: the regression this guards against."""
    torch.manual_seed(4)
    frames = torch.randint(0, 256, (1, 7, 64, 64, 3), dtype=torch.uint8)
    kw = {"preset": "tiny", "resolution": 64, "pool": 2, "temporal_compression": 1}
    alone = CosmosTokenizerWrapper(cfg=TokenizerConfig(window_latents=0, **kw))
    paired = CosmosTokenizerWrapper(cfg=TokenizerConfig(window_latents=1, **kw))
    paired.vae.load_state_dict(alone.vae.state_dict())
    changed = frames.clone()
    changed[:, 3] = 255 - changed[:, 3]

    def change(tok):
        return (tok.encode(changed) - tok.encode(frames)).abs().mean((0, 2, 3))  # per latent step

    d0, d1 = change(alone), change(paired)
    assert d0[3] > 0 and torch.count_nonzero(d0) == 1  # only latent 3
    assert d1[4] > 10 * d1[3]  # windows of 2 frames: latent 4 (frames 3, 4) answers to frame 3, latent 3 hardly
    z = alone.encode(frames)
    for k in range(z.shape[1]):  # acting encodes the frame it has, as the cache did
        assert torch.allclose(alone.encode_latent(frames[:, : k + 1], k), z[:, k], atol=1e-5), k
        assert torch.allclose(alone.encode(frames[:, k : k + 1])[:, 0], z[:, k], atol=1e-5), k
    x = alone.decode(z)
    assert x.shape == (1, 7, 64, 64, 3)
    # each latent decoded alone: frame 5 ignores the other latents, up to the uint8 rounding of a float that kernels
    # for another batch size add up in another order (1 of 12,288 values differed by 1 on one thread of an AVX2 CPU)
    others = z.clone()
    others[:, [0, 1, 2, 3, 4, 6]] = torch.randn_like(others[:, [0, 1, 2, 3, 4, 6]])
    for y in (alone.decode(z[:, 5:6])[:, 0], alone.decode(others)[:, 5]):
        assert (x[:, 5].int() - y.int()).abs().max() <= 1
    assert window_plan(5, 1, 0) == [(k, k + 1, 0) for k in range(5)] and latent_window(4, 1, 0) == (4, 5)
    with pytest.raises(ValueError, match="S = 1"):
        TokenizerConfig(window_latents=0, temporal_compression=8)
    with pytest.raises(ValueError, match="S = 1"):
        CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=0))


def test_one_frame_fast_path_gives_the_same_numbers_and_gradients():
    """Every causal convolution takes a 2-D path on one frame (dreamer/tokenizer/framewise.py): encoding,
    decoding and the gradients of a fit must equal the Conv3d over the padded copies; longer clips are untouched."""
    import copy

    from diffusers import AutoencoderKLCosmos
    from diffusers.models.autoencoders.autoencoder_kl_cosmos import CosmosCausalConv3d

    from dreamer.tokenizer.cosmos import preset_config
    from dreamer.tokenizer.framewise import FramewiseCausalConv3d, framewise_convs

    torch.manual_seed(5)
    slow = AutoencoderKLCosmos(**preset_config("tiny", 1))
    fast = framewise_convs(copy.deepcopy(slow))
    convs = [m for m in fast.modules() if isinstance(m, CosmosCausalConv3d)]
    assert convs and all(type(m) is FramewiseCausalConv3d for m in convs)
    assert any(m.kernel_size[0] > 1 for m in convs)  # the temporal kernels are what the fast path folds
    x = torch.randn(3, 3, 1, 64, 64)
    z_slow, z_fast = slow.encode(x).latent_dist.mode(), fast.encode(x).latent_dist.mode()
    assert z_fast.shape == z_slow.shape and torch.allclose(z_fast, z_slow, atol=1e-5)
    assert torch.allclose(fast.decode(z_slow).sample, slow.decode(z_slow).sample, atol=1e-5)
    for m in (slow, fast):
        m.decode(m.encode(x).latent_dist.mode()).sample.square().mean().backward()
    for (name, p_slow), p_fast in zip(slow.named_parameters(), fast.parameters()):
        assert p_fast.grad is not None and torch.allclose(p_fast.grad, p_slow.grad, atol=1e-5, rtol=1e-4), name
    clip = torch.randn(1, 3, 3, 64, 64)  # three frames: the layer's own path, bit for bit
    with torch.no_grad():
        assert torch.equal(fast.encode(clip).latent_dist.mode(), slow.encode(clip).latent_dist.mode())
