"""The crafter_state reference tokenizer: its documented layout, decode drawing the game's frame, episodes from
the project's collector, the cache (std floor, identity), acting from the env's info equal to the cache, and
the refusals (old episodes without the extras, pixels, a config of another kind)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamer.agent import Agent, AgentConfig
from dreamer.agent.acting import AgentPolicy, ChunkActor
from dreamer.config import load
from dreamer.data.cache import CacheMismatchError, LatentCache, build_cache
from dreamer.data.episode import EpisodeError, load_episode, save_episode
from dreamer.envs.collect import collect_episodes, rollout
from dreamer.envs.config import CollectConfig, EnvConfig
from dreamer.envs.crafter_env import CrafterEnv
from dreamer.pipeline.data import make_tokenizer
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig
from dreamer.tokenizer.crafter_state import (
    CHANNELS,
    EXTRAS,
    FACINGS,
    INVENTORY_TOKEN,
    NUM_TOKENS,
    PLAYER_TOKEN,
    SEMANTIC_NAMES,
    STATUS_TOKEN,
    STD_FLOOR,
    CrafterStateTokenizer,
    decode_state,
    encode_state,
)

ENV = EnvConfig(max_steps=14, crafter_area=(16, 16))
TEST_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "test.yaml")


@pytest.fixture(scope="module")
def tok():
    return CrafterStateTokenizer(TokenizerConfig(kind="crafter_state"))


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> list[Path]:
    """Three short scripted Crafter episodes from the project's collector."""
    root = tmp_path_factory.mktemp("state_eps")
    return collect_episodes(ENV, CollectConfig(num_episodes=3, policy="scripted", epsilon=0.2, seed=1), root,
                            progress=False)


def hand_state(T: int = 2) -> dict:
    lv = np.zeros((T, 9, 7), np.int16)
    for col in range(9):
        for row in range(7):
            lv[:, col, row] = (3 * col + row) % len(SEMANTIC_NAMES)
    lv[:, 4, 3] = SEMANTIC_NAMES.index("player")
    inv = np.zeros((T, 16), np.int32)
    inv[0, :] = np.arange(16) % 10
    inv[-1, 0], inv[-1, 5], inv[-1, 15] = 9, 3, 12  # 12 is clipped to 9
    return {"local_view": lv, "inventory": inv, "facing": np.array([FACINGS[t % 4] for t in range(T)], np.int8),
            "daylight": np.linspace(0.2, 1.0, T).astype(np.float32), "sleeping": np.arange(T) % 2 == 1}


def test_layout_of_a_hand_made_state_and_its_round_trip():
    s = hand_state()
    z = encode_state(*(s[k] for k in EXTRAS))
    assert z.shape == (2, NUM_TOKENS, CHANNELS) == (2, 72, 24) and z.dtype == np.float32
    # view token 9·row + col holds the one-hot id of local_view[col, row]; the player is token 31
    assert z[0, 9 * 2 + 5].argmax() == s["local_view"][0, 5, 2] and z[0, 9 * 2 + 5].sum() == 1
    assert z[0, PLAYER_TOKEN, SEMANTIC_NAMES.index("player")] == 1
    # inventory token 63 + j: item 2j in channels 0..8, item 2j+1 in 9..17, thermometers of the count
    assert z[1, INVENTORY_TOKEN, :9].tolist() == [1] * 9 and z[1, INVENTORY_TOKEN, 9:18].sum() == 0  # health 9, food 0
    assert z[1, INVENTORY_TOKEN + 2, 9:18].tolist() == [1, 1, 1] + [0] * 6  # wood (item 5) = 3
    assert z[1, INVENTORY_TOKEN + 7, 9:18].sum() == 9  # iron_sword 12 -> 9
    # status: facing one-hot in channels 0..3, daylight in 4, sleeping in 5
    assert z[0, STATUS_TOKEN, :6].tolist() == [1, 0, 0, 0, pytest.approx(0.2), 0]
    assert z[1, STATUS_TOKEN, :6].tolist() == [0, 1, 0, 0, 1.0, 1]
    assert z[:, :, 19:].sum() == 0  # padding channels
    back = decode_state(z)
    s["inventory"] = np.clip(s["inventory"], 0, 9)
    for k in EXTRAS:
        np.testing.assert_array_equal(back[k], s[k], err_msg=k)
    # and through decode's argmax after float16 and standardisation, as the cache holds them
    z16 = torch.from_numpy(z).half().float()
    mean, std = np.full(CHANNELS, 0.3, np.float32), np.full(CHANNELS, 0.5, np.float32)
    frames = CrafterStateTokenizer().decode(((z16 - 0.3) / 0.5)[None], mean=mean, std=std, size=64)
    assert frames.shape == (1, 2, 64, 64, 3) and frames.dtype == torch.uint8
    assert CrafterStateTokenizer().decode(z16[None], size=128).shape == (1, 2, 128, 128, 3)


def test_collected_episode_encodes_and_decodes_to_its_frames(tok, episodes):
    ep = load_episode(episodes[0])
    T = ep.num_steps
    assert ep.extras["daylight"].dtype == np.float32 and ep.extras["daylight"].shape == (T + 1,)
    assert ep.extras["sleeping"].dtype == bool and ep.extras["sleeping"].shape == (T + 1,)
    z = tok.encode_episode(ep, episodes[0])
    assert z.shape == (T + 1, 72, 24) == (tok.latent_steps(T + 1), tok.num_tokens, tok.channels)
    assert tok.S == 1 and torch.isfinite(z).all()
    frames = tok.decode(z[None]).numpy()[0]  # drawn as the game draws the state
    diff = np.abs(frames.astype(int) - ep.frames.astype(int))
    lv = ep.extras["local_view"]
    for t in range(T + 1):
        assert ep.extras["daylight"][t] > 0.5 and not ep.extras["sleeping"][t]  # the start of a day
        for col in range(9):
            for row in range(7):
                if SEMANTIC_NAMES[lv[t, col, row]] in ("cow", "zombie", "skeleton", "arrow", "plant"):
                    continue  # their material is not encoded
                assert diff[t, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7].max() <= 1, (t, col, row)
        assert diff[t, 49:].max() <= 1  # the inventory rows


def test_cache_with_state_latents_floors_std_and_refuses_cosmos(tmp_path, tok, episodes, tiny_tokenizer):
    build_cache(episodes, tok, tmp_path / "cache", val_fraction=0.34)
    cache = LatentCache(tmp_path / "cache", expect_tokenizer=tok.identity())
    assert cache.chunk_len == 1 and (cache.std >= STD_FLOOR - 1e-6).all()
    z = np.concatenate([cache.standardise(np.asarray(cache.episode(n).latents)) for n in cache.names])
    assert np.abs(z).max() <= 1 / STD_FLOOR + 1e-3  # rare channels stay bounded
    assert np.abs(z[..., 19:]).max() == 0  # a channel that is always 0 stays 0
    e = cache.episode(episodes[0].stem)
    np.testing.assert_array_equal(e.latents, tok.encode_episode(load_episode(episodes[0])).numpy().astype(np.float16))
    with pytest.raises(CacheMismatchError, match="crafter_state"):
        build_cache(episodes, tiny_tokenizer, tmp_path / "cache")
    with pytest.raises(CacheMismatchError):
        LatentCache(tmp_path / "cache", expect_tokenizer=tiny_tokenizer.identity())
    build_cache(episodes[:2], tiny_tokenizer, tmp_path / "cosmos_cache", val_fraction=0.5)
    with pytest.raises(CacheMismatchError, match="crafter_state"):
        build_cache(episodes[:2], tok, tmp_path / "cosmos_cache")
    ident = tok.identity()
    assert ident["kind"] == "crafter_state" and "kind" not in tiny_tokenizer.identity()
    assert CrafterStateTokenizer().identity() == ident  # fixed: no randomness
    assert json.loads(json.dumps(ident)) == ident


@pytest.mark.parametrize("missing", ["local_view", "daylight"])
def test_episode_without_the_state_extras_is_refused_by_name(tmp_path, tok, episodes, missing):
    ep = load_episode(episodes[0])
    del ep.extras[missing]  # e.g. collected before daylight was recorded
    old = save_episode(tmp_path / "old" / "ep_old.npz", ep)
    with pytest.raises(EpisodeError, match=rf"ep_old\.npz.*{missing}"):
        build_cache([old], tok, tmp_path / "cache")
    from dreamer.tokenizer.crafter_state import check_episode_files

    with pytest.raises(EpisodeError, match=rf"ep_old\.npz.*{missing}"):
        check_episode_files([episodes[1], old])
    with pytest.raises(TypeError, match="privileged state"):
        tok.encode(torch.from_numpy(ep.frames)[None])


def _agent(seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    cfg = AgentConfig(d_model=32, num_layers=1, num_heads=2, max_time=16, mlp_hidden=32, head_hidden=32)
    return Agent(cfg, num_tokens=NUM_TOKENS, latent_dim=CHANNELS, action_cards=[17], chunk_len=1)


def test_acting_latents_from_info_equal_the_cache(tmp_path, tok):
    """The agent plays a Crafter episode through the collector (AgentPolicy gets every step's info, the reset
    info first); its latents equal what the cache then holds for that recorded episode."""
    agent = _agent()
    env = CrafterEnv(max_steps=12, area=(16, 16))
    zeros, ones = np.zeros(CHANNELS, np.float32), np.ones(CHANNELS, np.float32)
    policy = AgentPolicy(tok, agent, zeros, ones, env.action_space, context=16)
    policy.reset(4)
    ep = rollout(env, policy, 4, ENV, CollectConfig(policy="random"))
    path = save_episode(tmp_path / "eps" / "ep_000000.npz", ep)
    build_cache([path], tok, tmp_path / "cache", val_fraction=0.0)
    cached = np.asarray(LatentCache(tmp_path / "cache").episode("ep_000000").latents, dtype=np.float32)
    acted = torch.stack(list(policy.actor.history[0])).numpy()  # one latent per decision (S = 1)
    assert policy.actor.chunks_decided == ep.num_steps == len(acted)
    np.testing.assert_array_equal(acted, cached[: ep.num_steps])

    actor = ChunkActor(tok, agent, zeros, ones)
    actor.reset([None])
    with pytest.raises(ValueError, match="pass one info per observation"):  # no info, no latent
        actor.act([ep.frames[0]])


def test_the_runner_encodes_the_reset_info(tok):
    from dreamer.imagination.exploitation import record_episodes

    cfg = EnvConfig(env_id="crafter", max_steps=5, crafter_area=(16, 16))
    zeros, ones = np.zeros(CHANNELS, np.float32), np.ones(CHANNELS, np.float32)
    (rec,) = record_episodes(cfg, [7], tok, _agent(), zeros, ones, context=4, max_steps=5)
    assert rec["latents"].shape == (5, NUM_TOKENS, CHANNELS)
    _, info = CrafterEnv(max_steps=5, area=(16, 16)).reset(seed=7)
    np.testing.assert_array_equal(rec["latents"][0].numpy(), tok.encode_infos([info])[0].half().float().numpy())


def test_config_switch_and_make_tokenizer(tiny_tokenizer):
    with pytest.raises(ValueError, match="tokenizer.kind"):
        TokenizerConfig(kind="pixels")
    with pytest.raises(ValueError, match="temporal_compression"):
        TokenizerConfig(kind="crafter_state", temporal_compression=8)
    cfg = load([TEST_CONFIG], ["tokenizer.kind=crafter_state"])
    t = make_tokenizer(cfg, "cpu")
    assert isinstance(t, CrafterStateTokenizer) and t.device.type == "cpu" and t.cfg.kind == "crafter_state"
    t.train()
    assert not t.training and not list(t.parameters())
    cosmos = make_tokenizer(load([TEST_CONFIG], []), "cpu")
    assert isinstance(cosmos, CosmosTokenizerWrapper) and cosmos.identity() == tiny_tokenizer.identity()
    preset = load(["configs/crafter_state.yaml"], [])
    assert preset.tokenizer.kind == "crafter_state" and preset.tokenizer.pretrained is None
    assert preset.data.episodes_dir == load(["configs/crafter_small.yaml"], []).data.episodes_dir


def test_diagnostics_tokenizer_check_passes(tok):
    from diagnostics.data_checks import check_tokenizer
    from diagnostics.report import FAIL

    checks = check_tokenizer(tok, {})
    assert checks and all(c.status != FAIL for c in checks), [(c.name, c.status, c.hint) for c in checks]


def test_phase0_collects_and_fits_nothing(tmp_path, episodes):
    import train_phase0_tokenizer as phase0

    root = Path(episodes[0]).parent
    sets = ["run=p0state", f"checkpoint_root={tmp_path / 'ckpt'}", f"data.episodes_dir={root}",
            "tokenizer.kind=crafter_state", "collect.num_episodes=3"]
    out = phase0.main(["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]])
    assert out == {"kind": "crafter_state", "fitted": False, "episodes": 3}
    assert not (tmp_path / "ckpt" / "p0state" / "tokenizer").exists()


def test_drift_diagnostic_ignores_channels_constant_in_the_data():
    """crafter_state's padding channels are 0 in every standardised latent: an imagined value near 0 there is not
    a drift of 1e6 standard deviations."""
    from diagnostics.phase3 import latent_drift

    g = torch.Generator().manual_seed(0)
    data = torch.randn(4, 6, NUM_TOKENS, CHANNELS, generator=g)
    data[..., 19:] = 0.0
    imagined = torch.randn(4, 3, NUM_TOKENS, CHANNELS, generator=g)
    imagined[..., 19:] = 0.01 * torch.randn(4, 3, NUM_TOKENS, 5, generator=g)
    assert float(latent_drift(imagined, data).max()) < 0.2


@pytest.mark.slow
def test_every_phase_on_the_state_reference(tmp_path):
    """Phase 0 collects and fits nothing, phases 1-3 (diagnostics on) train on the state cache, act in the real
    env from its info, and write their videos; the summary draws the state."""
    import train_phase0_tokenizer
    import train_phase1_cosmos
    import train_phase2
    import train_phase3
    from dreamer.summary import summarise_run

    sets = [f"checkpoint_root={tmp_path / 'ck'}", f"data.episodes_dir={tmp_path / 'eps'}",
            f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.kind=crafter_state", "tokenizer.pretrained=null",
            "data.collect=true", "collect.num_episodes=3", "env.max_steps=40", "eval.max_steps=20", "data.clip_len=6",
            "phase1.steps=2", "phase1.eval_every=2", "phase1.diagnose=true",
            "phase2.steps=2", "phase2.eval_every=2", "phase2.eval_episodes=2", "phase2.diagnose=true",
            "phase3.steps=2", "phase3.eval_episodes=1", "phase3.diagnose=true", "phase3.context=3", "phase3.horizon=3"]
    args = ["--config", TEST_CONFIG, *[a for s in sets for a in ("--set", s)]]
    assert train_phase0_tokenizer.main(args)["episodes"] == 3
    train_phase1_cosmos.main(args)
    cache = LatentCache(tmp_path / "cache")
    assert cache.tokenizer_identity["kind"] == "crafter_state" and cache.episode(cache.names[0]).latents.shape[1:] == (72, 24)
    p2 = train_phase2.main(args)
    assert p2["env"]["summaries"]["bc"]["episodes"] == 2
    p3 = train_phase3.main(args)
    assert set(p3["summaries"]) >= {"bc", "pmpo"}
    run = tmp_path / "ck" / "t"
    assert all((run / f"phase{p}_dream.mp4").is_file() for p in (1, 2, 3))
    summary = summarise_run(load([TEST_CONFIG], args[3::2]))
    assert summary["reconstruction_psnr_db"] > 40 and "skipped" in summary["heldout_reconstruction"]
