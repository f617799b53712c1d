from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from dreamer.envs.config import EnvConfig
from dreamer.envs.gym_env import action_space_of, action_to_components, make_env, to_rgb_frame


def test_vector_obs_env_uses_resized_render():
    env = make_env(EnvConfig(env_id="DreamerTestVector-v0", size=16, max_steps=3), seed=0)
    obs, _ = env.reset()
    assert obs.shape == (16, 16, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert action_space_of(env).cards == (3,)
    obs, _, term, trunc, _ = env.step(0)
    assert env.unwrapped.last_action == 1  # index 0 maps to the env's first action (start=1)
    assert obs[..., 0].min() == 10  # red channel counts steps: the frame is the rendered one
    assert obs[0, 0, 1] < obs[0, -1, 1]  # horizontal gradient survives the resize
    env.step(2)
    *_, term, trunc, _ = env.step(1)
    assert trunc and not term  # time limit from EnvConfig.max_steps


def test_image_obs_env_and_multidiscrete():
    env = make_env(EnvConfig(env_id="DreamerTestImage-v0", size=24, max_steps=100))
    obs, _ = env.reset(seed=1)
    assert obs.shape == (24, 24, 3)
    space = action_space_of(env)
    assert space.cards == (3, 4) and space.dims == 2
    obs, *_ = env.step(np.array([2, 3]))
    assert (obs == 20).all()
    np.testing.assert_array_equal(action_to_components(np.array([2, 3]), env.action_space), [2, 3])


def test_continuous_actions_rejected():
    with pytest.raises(ValueError, match="continuous"):
        action_space_of(spaces.Box(-1, 1, (2,), np.float32))
    assert action_space_of(spaces.Discrete(5)).cards == (5,)


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(ValueError, match="NoSuchEnv-v9"):
        make_env(EnvConfig(env_id="NoSuchEnv-v9"))


def test_to_rgb_frame_channels_and_size():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_rgb_frame(gray, 8)
    assert out.shape == (8, 8, 3) and (out[..., 0] == out[..., 2]).all()
    with pytest.raises(ValueError, match="uint8"):
        to_rgb_frame(np.zeros((4, 4, 3), np.float32), 8)


def test_cartpole_rendered_to_rgb():
    pytest.importorskip("pygame")  # gymnasium's classic-control renderer
    env = make_env(EnvConfig(env_id="CartPole-v1", size=32, max_steps=5), seed=0)
    obs, _ = env.reset()
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and obs.std() > 0
    assert action_space_of(env).cards == (2,)
