import numpy as np
import pytest

from dreamer.data.episode import EpisodeError, load_episode, save_episode


def test_roundtrip(tmp_path, episode_factory):
    ep = episode_factory(T=10)
    ep.extras["inventory"] = np.arange(11 * 3, dtype=np.int32).reshape(11, 3)
    path = save_episode(tmp_path / "ep.npz", ep)
    back = load_episode(path)
    assert np.array_equal(back.frames, ep.frames) and np.array_equal(back.actions, ep.actions)
    assert np.array_equal(back.extras["inventory"], ep.extras["inventory"])
    assert back.terminated and not back.truncated and back.action_space == ep.action_space
    assert back.meta["env_id"] == "test"
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_file(tmp_path, episode_factory):
    path = save_episode(tmp_path / "ep.npz", episode_factory(T=10))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeError, match=r"ep\.npz.*<file>.*truncated"):
        load_episode(path)


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda e: setattr(e, "actions", e.actions.astype(np.float32)), "actions", "int64"),
        (lambda e: setattr(e, "frames", e.frames[:-1]), "frames", "T\\+1"),
        (lambda e: setattr(e, "rewards", e.rewards[:-2]), "rewards", "shape"),
        (lambda e: e.rewards.__setitem__(3, np.nan), "rewards", "non-finite value at step 3"),
        (lambda e: setattr(e, "frames", e.frames.astype(np.float32)), "frames", "uint8"),
        (lambda e: setattr(e, "frames", e.frames[..., :2]), "frames", "shape"),
        (lambda e: e.actions.__setitem__((2, 0), 17), "actions", "outside"),
    ],
)
def test_bad_episodes_name_the_field(tmp_path, episode_factory, mutate, field, message):
    ep = episode_factory(T=10)
    mutate(ep)
    with pytest.raises(EpisodeError, match=message) as info:
        save_episode(tmp_path / "bad.npz", ep)
    assert info.value.field == field and "bad.npz" in str(info.value)


def test_bad_file_on_disk_names_file(tmp_path, episode_factory):
    ep = episode_factory(T=6)
    np.savez(tmp_path / "x.npz", frames=ep.frames, actions=ep.actions, rewards=ep.rewards.astype(np.float64),
             terminated=True, truncated=False, meta=np.asarray('{"action_space": {"names": ["a"], "cards": [17]}}'))
    with pytest.raises(EpisodeError, match=r"x\.npz: field 'rewards': expected float32"):
        load_episode(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", frames=ep.frames)
    with pytest.raises(EpisodeError, match="'actions': missing"):
        load_episode(tmp_path / "y.npz")


def test_wrong_frame_size_is_refused_by_cache(tmp_path, episode_factory, tiny_tokenizer):
    from dreamer.data.cache import build_cache

    path = save_episode(tmp_path / "eps" / "ep.npz", episode_factory(T=4, size=48))
    with pytest.raises(EpisodeError, match=r"ep\.npz: field 'frames': frames are 48x48, the config expects 64x64"):
        load_episode(path, frame_size=64)
    with pytest.raises(EpisodeError, match="env.size"):
        build_cache([path], tiny_tokenizer, tmp_path / "cache", frame_size=64)
