import json

import numpy as np
import pytest
import torch

from dreamer.data.cache import (
    CacheMismatchError,
    DamagedCacheError,
    LatentCache,
    align_episode,
    build_cache,
    find_damage,
    heal,
)
from dreamer.data.episode import save_episode
from dreamer.data.loader import ClipSampler
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig


def test_alignment_by_hand(episode_factory):
    ep = episode_factory(T=19)  # 20 frames -> L = 1 + ceil(19/8) = 4
    ep.rewards = np.arange(19, dtype=np.float32)
    ep.extras["ignore_action"] = np.zeros(20, dtype=bool)
    ep.extras["ignore_action"][5] = True
    out = align_episode(ep, 8)
    L = 4
    assert out["actions"].shape == (L, 8, 1) and out["action_mask"].shape == (L, 8)
    assert np.array_equal(out["actions"][0, :, 0], ep.actions[0:8, 0])
    assert np.array_equal(out["actions"][1, :, 0], ep.actions[8:16, 0])
    assert np.array_equal(out["actions"][2, :3, 0], ep.actions[16:19, 0])
    assert out["action_mask"][0].tolist() == [True] * 5 + [False] + [True] * 2  # sleeping step masked
    assert out["action_mask"][2].tolist() == [True] * 3 + [False] * 5  # tail padding
    assert not out["action_mask"][3].any()  # last latent: no chunk leaves it
    assert out["rewards"].tolist() == [0.0, sum(range(8)), sum(range(8, 16)), sum(range(16, 19))]
    assert out["continues"].tolist() == [1, 1, 1, 0]
    ep.terminated = False
    assert align_episode(ep, 8)["continues"].tolist() == [1, 1, 1, 1]


def _episodes(tmp_path, factory, n=4, T=20):
    paths = []
    for i in range(n):
        paths.append(save_episode(tmp_path / "eps" / f"ep_{i:03d}.npz", factory(T=T + 8 * i, seed=i)))
    return paths


def test_build_and_load(tmp_path, episode_factory, tiny_tokenizer):
    paths = _episodes(tmp_path, episode_factory)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.25)
    cache = LatentCache(tmp_path / "cache", expect_tokenizer=tiny_tokenizer.identity())
    assert len(cache.val_names) == 1 and len(cache.train_names) == 3
    e = cache.episode("ep_000")
    z = tiny_tokenizer.encode(torch.from_numpy(np.load(paths[0])["frames"])[None])[0]
    assert e.latents.shape == (4, 16, 16) and np.allclose(e.latents, z.numpy(), atol=1e-2)
    assert e.actions.shape[0] == e.latents.shape[0]
    all_z = np.concatenate([cache.episode(n).latents for n in cache.train_names]).astype(np.float64)
    assert np.allclose(cache.mean, all_z.mean(axis=(0, 1)), atol=1e-4)
    sampler = ClipSampler(cache, cache.train_names, clip_len=3, batch_size=5, seed=0)
    b = sampler.batch(7)
    assert b["latents"].shape == (5, 3, 16, 16) and b["actions"].shape == (5, 3, 8, 1)
    assert b["actions"].shape[1] == b["latents"].shape[1]
    assert b["action_mask"].dtype == torch.bool and b["rewards"].shape == (5, 3)
    assert sampler.draw(7) == ClipSampler(cache, cache.train_names, 3, 5, seed=0).draw(7)  # resumable
    assert sampler.draw(7) != ClipSampler(cache, cache.train_names, 3, 5, seed=0, rank=1).draw(7)


def test_resume_and_rebuild_on_changed_source(tmp_path, episode_factory, tiny_tokenizer):
    paths = _episodes(tmp_path, episode_factory, n=2)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)
    d = tmp_path / "cache" / "episodes" / "ep_000"
    before = (d / "latents.npy").stat().st_mtime_ns
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)  # nothing to do
    assert (d / "latents.npy").stat().st_mtime_ns == before
    save_episode(paths[0], episode_factory(T=20, seed=99))  # source changed -> re-encoded
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)
    src = json.loads((d / "source.json").read_text())
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert src["sha256"] == manifest["sources"]["ep_000"]["sha256"]
    assert (d / "latents.npy").stat().st_mtime_ns != before


def test_other_tokenizer_refused(tmp_path, episode_factory, tiny_tokenizer):
    paths = _episodes(tmp_path, episode_factory, n=2)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache")
    other = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=2))
    assert other.identity() == tiny_tokenizer.identity()  # random presets are seeded: same weights
    other = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2, window_latents=2))
    with torch.no_grad():
        next(other.vae.parameters()).add_(0.01)  # another tokenizer (e.g. a fitted one)
    with pytest.raises(CacheMismatchError, match="Delete the folder"):
        build_cache(paths, other, tmp_path / "cache")
    with pytest.raises(CacheMismatchError, match="built with tokenizer"):
        LatentCache(tmp_path / "cache", expect_tokenizer=other.identity())


def test_clip_len_too_long(tmp_path, episode_factory, tiny_tokenizer):
    paths = _episodes(tmp_path, episode_factory, n=2)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)
    cache = LatentCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="data.clip_len=50"):
        ClipSampler(cache, cache.train_names, clip_len=50, batch_size=2)


# The cache checks what it serves (issue 29): a truncated or non-finite entry is refused by name, moved aside
# and re-encoded bit for bit from its episode file; an unchanged entry is not read again.
@pytest.fixture
def built(tmp_path, episode_factory, tiny_tokenizer):
    paths = _episodes(tmp_path, episode_factory, n=3)
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.34)
    original = {p.stem: (tmp_path / "cache" / "episodes" / p.stem / "latents.npy").read_bytes() for p in paths}
    return tmp_path / "cache", paths, original


def _damage(entry, how: str) -> None:
    f = entry / "latents.npy"
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:90])  # the header cut short, as the hostile pass did
    elif how == "nan":
        z = np.load(f)
        z[1] = np.nan
        np.save(f, z)  # same size, new mtime
    elif how == "missing":
        f.unlink()
    elif how == "wrong_dtype":
        np.save(f, np.load(f).astype(np.float32))


@pytest.mark.parametrize("how,says", [("truncated", "unreadable"), ("nan", "non-finite latents at 1 of"),
                                      ("missing", "missing"), ("wrong_dtype", "expected float16")])
def test_a_damaged_entry_is_named_moved_aside_and_rebuilt(built, tiny_tokenizer, how, says, caplog):
    cache_dir, paths, original = built
    assert LatentCache(cache_dir).rechecked == []  # recorded when written: nothing read again on open
    _damage(cache_dir / "episodes" / "ep_001", how)
    with pytest.raises(DamagedCacheError) as e:
        LatentCache(cache_dir)
    assert str(cache_dir / "episodes" / "ep_001" / "latents.npy") in str(e.value) and says in str(e.value)
    assert "re-encodes them from their episode files" in str(e.value)

    healed = heal(cache_dir)
    assert list(healed) == ["ep_001"] and says in healed["ep_001"]
    aside = list((cache_dir / "damaged").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith("ep_001-")  # kept, not deleted
    assert "entry moved aside" in caplog.text or how == "missing"
    build_cache(paths, tiny_tokenizer, cache_dir, val_fraction=0.34)
    cache = LatentCache(cache_dir)
    for name, data in original.items():
        assert (cache_dir / "episodes" / name / "latents.npy").read_bytes() == data  # as it was built
    assert cache.rechecked == [] and find_damage(cache_dir, cache.manifest) == ({}, [])


def test_an_untouched_cache_heals_nothing(built):
    cache_dir, _, _ = built
    assert heal(cache_dir) == {} and not (cache_dir / "damaged").exists()


def test_a_touched_but_intact_entry_is_checked_and_served(built):
    cache_dir, _, _ = built
    f = cache_dir / "episodes" / "ep_000" / "latents.npy"
    f.write_bytes(f.read_bytes())  # new mtime, same content
    cache = LatentCache(cache_dir)
    assert cache.rechecked == ["ep_000"]  # read once in full, found good


def test_short_episodes_are_skipped_by_name(tmp_path, episode_factory, tiny_tokenizer, caplog):
    paths = [save_episode(tmp_path / "eps" / "ep_zero.npz", episode_factory(T=0, seed=0)),
             *_episodes(tmp_path, episode_factory, n=2)]
    build_cache(paths, tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)
    cache = LatentCache(tmp_path / "cache")
    ClipSampler(cache, cache.train_names, clip_len=3, batch_size=2)
    assert "1 of 3 episodes are shorter than data.clip_len=3" in caplog.text
    assert f"{(tmp_path / 'eps' / 'ep_zero.npz').resolve()} (1 latent steps, 0 env steps)" in caplog.text
