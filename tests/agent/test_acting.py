"""Acting in the real env through the one episode runner: one decision per chunk of S steps, early stop,
truncation, MultiDiscrete actions, latents identical to the cache's, and the baselines on the same seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from dreamer.agent import Agent, AgentConfig
from dreamer.agent.acting import AgentBatchPolicy, AgentPolicy, ChunkActor
from dreamer.data.cache import LatentCache, build_cache
from dreamer.data.episode import ActionSpace, Episode, save_episode
from dreamer.envs import runner
from dreamer.envs.config import EnvConfig
from dreamer.envs.policies import FrequencyPolicy
from dreamer.envs.runner import frame_blind_policy, random_policy, run_episodes
from dreamer.tokenizer import CosmosTokenizerWrapper, TokenizerConfig


class FakeEnv(gym.Env):
    """Random 64x64 frames; terminates after ``end`` steps, truncates at ``max_steps``; records the
    actions and frames of the current episode."""

    def __init__(self, end: int, max_steps: int = 1000, space: spaces.Space | None = None, size: int = 64):
        self.end, self.max_steps, self.size = end, max_steps, size
        self.action_space = space or spaces.Discrete(17)
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.actions: list = []
        self.frames: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        obs = self._rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        self.frames.append(obs)
        return obs

    def reset(self, *, seed=None, options=None):
        self._rng = np.random.default_rng(seed)
        self.actions, self.frames = [], []
        return self._obs(), {}

    def step(self, action):
        assert len(self.actions) < min(self.end, self.max_steps), "stepped after the episode ended"
        assert self.action_space.contains(action), action
        self.actions.append(action)
        t = len(self.actions)
        info = {"achievements": {"collect_wood": t, "place_table": 0}}
        return self._obs(), 1.0, t == self.end, t == self.max_steps and t != self.end, info


@pytest.fixture
def fake_env(monkeypatch):
    """Route the runner's make_env to one FakeEnv; returns a setter for its parameters."""
    made: dict = {}

    def use(end: int, space: spaces.Space | None = None) -> dict:
        def make(cfg, seed=None):
            made["env"] = FakeEnv(end, cfg.max_steps, space)
            return made["env"]

        monkeypatch.setattr(runner, "make_env", make)
        return made

    return use


def _agent(S: int, cards=(17,), seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    cfg = AgentConfig(d_model=32, num_layers=1, num_heads=2, max_time=16, mlp_hidden=32, head_hidden=32)
    return Agent(cfg, num_tokens=16, latent_dim=16, action_cards=list(cards), chunk_len=S)


def _stats(C: int = 16):
    return np.linspace(-0.2, 0.2, C, dtype=np.float32), np.linspace(0.5, 1.5, C, dtype=np.float32)


def play_agent(cfg, seeds, tokenizer, agent, mean, std, greedy=False, max_steps=None, context=None) -> list[dict]:
    """The agent's episodes through the one runner, as every evaluation plays them."""
    return run_episodes(cfg, seeds, AgentBatchPolicy(tokenizer, agent, mean, std, greedy, context), max_steps)


class Spy:
    """Wraps agent.act and tokenizer.encode_latent to record decisions and the latent indices asked."""

    def __init__(self, monkeypatch, agent, tokenizer):
        self.chunks, self.encoded = [], []
        act, enc = agent.act, tokenizer.encode_latent

        def spy_act(*a, **kw):
            out = act(*a, **kw)
            self.chunks.append(out[0].clone())
            return out

        def spy_enc(frames, k):
            self.encoded.append((int(frames.shape[1]), k))
            return enc(frames, k)

        monkeypatch.setattr(agent, "act", spy_act)
        monkeypatch.setattr(tokenizer, "encode_latent", spy_enc)


def test_one_decision_per_chunk_and_early_stop(tiny_tokenizer, monkeypatch, fake_env):
    S, m = tiny_tokenizer.S, tiny_tokenizer.cfg.window_latents
    end = 2 * S + 3  # terminates three steps into the third chunk
    made = fake_env(end)
    agent = _agent(S)
    spy = Spy(monkeypatch, agent, tiny_tokenizer)
    (res,) = play_agent(EnvConfig(env_id="fake"), [3], tiny_tokenizer, agent, *_stats(), max_steps=100)
    env = made["env"]
    assert res["length"] == end and res["terminated"] and not res["truncated"] and res["seed"] == 3
    assert res["return"] == pytest.approx(end) and res["achievements"] == ["collect_wood"]
    assert len(spy.chunks) == 3  # chunks decided at steps 0, S, 2S; nothing after termination
    executed = torch.cat(spy.chunks)[:end, 0]  # (3S, D=1) -> the first `end` sub-steps
    assert env.actions == executed.tolist()
    assert all(isinstance(a, int) for a in env.actions)  # a Discrete env gets plain ints
    # window_latents=2: latents 0, 1, 2 from 1, S+1, 2S+1 frames (window 0 = frames 0 .. 2S)
    assert m == 2 and spy.encoded == [(1, 0), (S + 1, 1), (2 * S + 1, 2)]


def test_max_steps_truncates_and_multidiscrete_actions(tiny_tokenizer, fake_env):
    S = tiny_tokenizer.S
    space = spaces.MultiDiscrete([3, 4])
    made = fake_env(end=100, space=space)
    (res,) = play_agent(EnvConfig(env_id="fake"), [0], tiny_tokenizer, _agent(S, cards=(3, 4)), *_stats(),
                                greedy=True, max_steps=S + 1)
    assert res["length"] == S + 1 and res["truncated"] and not res["terminated"]
    assert all(a.shape == (2,) and space.contains(a) for a in made["env"].actions)


@pytest.mark.parametrize("framewise", [False, True])
def test_acting_latents_equal_cached_latents(tiny_tokenizer, tmp_path, framewise):
    """Record an episode with the actor, cache it: the actor's latents are the cached ones (S = 8 in windows of
    2 latents, and S = 1 with every frame alone, the Crafter presets' window_latents 0)."""
    if framewise:
        torch.manual_seed(0)
        tiny_tokenizer = CosmosTokenizerWrapper(cfg=TokenizerConfig(preset="tiny", resolution=64, pool=2,
                                                                    temporal_compression=1, window_latents=0))
    S, m = tiny_tokenizer.S, tiny_tokenizer.cfg.window_latents
    end = (2 * m + 1) * S + 2  # spans three tokenizer windows, ends mid-chunk
    agent, env = _agent(S), FakeEnv(end)
    mean, std = _stats()
    policy = AgentPolicy(tiny_tokenizer, agent, mean, std, env.action_space, context=16)
    policy.reset(5)
    obs, _ = env.reset(seed=5)
    done = False
    while not done:
        obs, _, done, _, _ = env.step(policy(obs))
        assert len(policy.actor.frames[0]) <= S * m + 1  # only the current window is kept
    ep = Episode(np.stack(env.frames), np.asarray(env.actions, dtype=np.int64)[:, None],
                 np.ones(end, dtype=np.float32), True, False, ActionSpace(("action",), (17,)))
    save_episode(tmp_path / "eps" / "ep0.npz", ep)
    build_cache([tmp_path / "eps" / "ep0.npz"], tiny_tokenizer, tmp_path / "cache", val_fraction=0.0)
    cache = LatentCache(tmp_path / "cache")
    cached = np.asarray(cache.episode("ep0").latents, dtype=np.float32)  # (L, N, C) raw float16 values
    acted = torch.stack(list(policy.actor.history[0]))  # (K, N, C) standardised
    K = -(-end // S)  # latents decided on: k = 0 .. ceil(end/S) - 1 (the padded last one is never needed)
    assert acted.shape[0] == K == cached.shape[0] - 1
    expect = (torch.from_numpy(cached[:K]) - torch.from_numpy(mean)) / torch.from_numpy(std)
    torch.testing.assert_close(acted, expect, atol=2e-3 / float(std.min()), rtol=0)
    # the executed actions are the cache's action chunks
    assert cache.episode("ep0").actions.reshape(-1)[:end].tolist() == env.actions


def test_actor_refuses_misuse(tiny_tokenizer):
    S = tiny_tokenizer.S
    with pytest.raises(ValueError, match=r"context=17 must be in \[1, agent max_time=16\]"):
        ChunkActor(tiny_tokenizer, _agent(S), *_stats(), context=17)
    with pytest.raises(ValueError, match="chunk_len"):
        ChunkActor(tiny_tokenizer, _agent(S + 1), *_stats())
    with pytest.raises(ValueError, match=r"shape \(16,\)"):
        ChunkActor(tiny_tokenizer, _agent(S), np.zeros(3), np.ones(3))


def test_random_baseline_same_seeds(tiny_tokenizer, fake_env):
    S = tiny_tokenizer.S
    fake_env(end=S + 2)
    cfg = EnvConfig(env_id="fake")
    res = play_agent(cfg, [10, 11], tiny_tokenizer, _agent(S), *_stats())
    rnd = run_episodes(cfg, [10, 11], random_policy([17]))
    again = run_episodes(cfg, [10, 11], random_policy([17]))
    assert [r["seed"] for r in res] == [10, 11] == [r["seed"] for r in rnd]
    assert all(r["length"] == S + 2 for r in res + rnd) and rnd == again
    with pytest.raises(ValueError, match=r"cardinalities \[17\] differ from the agent's \[3, 4\]"):
        play_agent(cfg, [0], tiny_tokenizer, _agent(S, cards=(3, 4)), *_stats())


def test_frequency_policy_follows_the_data_counts(fake_env):
    made = fake_env(end=400, space=spaces.MultiDiscrete([3, 2]))
    (res,) = run_episodes(EnvConfig(env_id="fake"), [4], frame_blind_policy([np.array([0, 30, 10]), np.array([5, 0])]),
                          max_steps=400)
    a = np.stack(made["env"].actions)  # (400, 2)
    assert res["length"] == 400 and set(a[:, 1]) == {0} and set(a[:, 0]) == {1, 2}
    assert abs((a[:, 0] == 1).mean() - 0.75) < 0.08  # 30 : 10
    with pytest.raises(ValueError, match="frequencies"):
        FrequencyPolicy([np.array([1.0, -1.0])], spaces.Discrete(2))


def test_episodes_played_together_act_as_apart(tiny_tokenizer, monkeypatch):
    """Lockstep play (one batched encode and policy call per decision) gives every episode the actions it
    gets played alone: same frames, same sampling stream per seed; episodes of different lengths drop out."""
    S = tiny_tokenizer.S
    made: list = []

    def make(cfg, seed=None):
        made.append(FakeEnv(end=0, max_steps=cfg.max_steps))
        return made[-1]

    monkeypatch.setattr(runner, "make_env", make)
    seeds, agent = [7, 8, 9], _agent(S, seed=3)
    ends = {7: 2 * S + 1, 8: S - 1 if S > 1 else 2, 9: 3 * S}
    orig_reset = FakeEnv.reset

    def reset(self, *, seed=None, options=None):  # episode length depends on the seed
        self.end = ends[seed]
        return orig_reset(self, seed=seed, options=options)

    monkeypatch.setattr(FakeEnv, "reset", reset)
    together = play_agent(EnvConfig(env_id="fake"), seeds, tiny_tokenizer, agent, *_stats(), max_steps=50)
    acted_together = {seed: env.actions for seed, env in zip(seeds, made[-3:])}
    apart = []
    for seed in seeds:
        apart += play_agent(EnvConfig(env_id="fake"), [seed], tiny_tokenizer, agent, *_stats(), max_steps=50)
        assert made[-1].actions == acted_together[seed]
    assert together == apart
    assert [r["length"] for r in together] == [ends[s] for s in seeds]
    one_at_a_time = run_episodes(EnvConfig(env_id="fake"), seeds, AgentBatchPolicy(tiny_tokenizer, agent, *_stats()),
                                 50, parallel=1)
    assert one_at_a_time == together and [env.actions for env in made[-3:]] == list(acted_together.values())


def test_recorded_play_is_the_evaluated_play(tiny_tokenizer, monkeypatch):
    """record_episodes (the model-exploitation check) plays exactly what evaluation plays: one latent and one
    chunk per decision, the chunks are the actions taken, and the per-chunk rewards sum to the return."""
    from dreamer.imagination.exploitation import record_episodes

    S = tiny_tokenizer.S
    made: list = []

    def make(cfg, seed=None):
        made.append(FakeEnv(end=2 * S + 1, max_steps=cfg.max_steps))
        return made[-1]

    monkeypatch.setattr(runner, "make_env", make)
    agent = _agent(S, seed=3)
    (res,) = play_agent(EnvConfig(env_id="fake"), [5], tiny_tokenizer, agent, *_stats(), max_steps=50)
    played = made[-1].actions
    (rec,) = record_episodes(EnvConfig(env_id="fake"), [5], tiny_tokenizer, agent, *_stats(), context=4, max_steps=50)
    assert made[-1].actions == played
    K = -(-res["length"] // S)  # decisions: one per started chunk
    assert rec["latents"].shape[0] == rec["chunks"].shape[0] == rec["rewards"].shape[0] == K
    assert rec["chunks"].reshape(-1, rec["chunks"].shape[-1])[: res["length"], 0].tolist() == [int(a) for a in played]
    assert float(rec["rewards"].sum()) == pytest.approx(res["return"])


def test_baselines_draw_the_stream_of_their_seed_whatever_plays_beside_them(monkeypatch):
    """The runner makes one step-level baseline per episode, reset with the episode's seed: episode i draws exactly
    what RandomPolicy / FrequencyPolicy reset(seed_i) draw alone, whether episodes play together or one at a time."""
    from dreamer.envs.policies import RandomPolicy

    made: list = []

    def make(cfg, seed=None):
        made.append(FakeEnv(end=7, max_steps=cfg.max_steps))
        return made[-1]

    monkeypatch.setattr(runner, "make_env", make)
    cfg, seeds, counts = EnvConfig(env_id="fake"), [3, 4, 5], [np.arange(17)]
    for policy, alone in ((random_policy([17]), lambda: RandomPolicy(spaces.Discrete(17))),
                          (frame_blind_policy(counts), lambda: FrequencyPolicy(counts, spaces.Discrete(17)))):
        together = run_episodes(cfg, seeds, policy, parallel=3)
        acted = [env.actions for env in made[-3:]]
        assert run_episodes(cfg, seeds, policy, parallel=1) == together
        assert [env.actions for env in made[-3:]] == acted
        for seed, actions in zip(seeds, acted):
            ref = alone()
            ref.reset(seed)
            assert actions == [ref(None, {}) for _ in range(7)]
    with pytest.raises(ValueError, match="frequencies"):  # refused before any env is reset
        run_episodes(cfg, [0], frame_blind_policy([np.zeros(17)]))
    with pytest.raises(ValueError, match="parallel=0"):
        run_episodes(cfg, [0], random_policy(), parallel=0)


def test_the_agent_plays_in_eval_mode_and_each_module_gets_its_mode_back(tiny_tokenizer, monkeypatch, fake_env):
    """A phase-3 agent (frozen trunk in eval mode, heads training) acts with every module in eval mode and goes on
    training afterwards with the trunk still in eval mode."""
    fake_env(end=3)
    agent = _agent(tiny_tokenizer.S)
    agent.train()
    agent.trunk.eval()
    seen, act = [], agent.act

    def spy(*a, **kw):
        seen.append([m.training for m in agent.modules()])
        return act(*a, **kw)

    monkeypatch.setattr(agent, "act", spy)
    play_agent(EnvConfig(env_id="fake"), [1], tiny_tokenizer, agent, *_stats())
    assert seen and not any(any(s) for s in seen)
    assert agent.training and agent.policy.training and not agent.trunk.training
    seen.clear()  # the one-env policy too: each decision in eval mode, the modes given back one by one
    env = FakeEnv(3)
    policy = AgentPolicy(tiny_tokenizer, agent, *_stats(), env.action_space)
    policy.reset(1)
    policy(env.reset(seed=1)[0])
    assert seen and not any(any(s) for s in seen)
    assert agent.training and agent.policy.training and not agent.trunk.training
