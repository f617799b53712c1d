"""MineRL v0.4 trajectory folders: alignment from the end, actions, enums, broken files, the real video."""

from __future__ import annotations

import json
import logging

import av
import numpy as np
import pytest
from mc_fixtures import REAL_FIXTURES, frame_ids, minerl_arrays

from dreamer.minecraft.actions import MINERL_V04
from dreamer.minecraft.camera import quantize_camera
from dreamer.minecraft.minerl_v04 import find_minerl_trajectories, read_minerl_trajectory, read_rendered_npz
from dreamer.minecraft.paths import MinecraftDataError
from dreamer.minecraft.video import decode_video

IDX = MINERL_V04.index


def test_extra_leading_video_frames_are_skipped(tmp_path, make_minerl_traj):
    T = 20
    d = make_minerl_traj(tmp_path / "MineRLObtainDiamond-v0" / "v3_stream_1", T=T, video_frames=T + 6)
    data = minerl_arrays(T)
    ep = read_minerl_trajectory(d, size=64)
    assert ep.frames.shape == (T + 1, 64, 64, 3) and ep.actions.shape == (T, 15)
    assert frame_ids(ep.frames).tolist() == list(range(5, T + 6))  # the last frame is the last state
    assert ep.meta["skipped_leading_frames"] == 5 and ep.meta["task"] == "MineRLObtainDiamond-v0"
    assert ep.meta["fps"] == 20 and ep.meta["original_resolution"] == [64, 64] and ep.meta["source"] == "minerl_v04"
    assert np.array_equal(ep.actions[:, IDX("forward")], data["action$forward"])
    assert np.array_equal(ep.actions[:, MINERL_V04.camera_slice], quantize_camera(data["action$camera"]))
    assert ep.actions[-1, IDX("place")] == 6 and ep.actions[0, IDX("craft")] == 3  # torch, planks
    assert (ep.actions[:, IDX("nearbySmelt")] == 2).all() and (ep.actions[:, IDX("equip")] == 0).all()
    assert ep.rewards.dtype == np.float32 and ep.rewards[T // 2] == 1 and ep.rewards.sum() == 1
    assert ep.terminated and not ep.truncated  # metadata success
    assert ep.extras["obs.inventory.dirt"].tolist() == list(range(T + 1))


def test_actions_with_one_entry_per_state_and_no_enums(tmp_path, make_minerl_traj):
    T = 12
    data = minerl_arrays(T, enums=False)
    data["action$jump"] = np.ones(T + 1, np.int64)  # one per state: the unused last entry is dropped
    d = make_minerl_traj(tmp_path / "MineRLTreechop-v0" / "s", T=T, data=data, metadata={"success": False})
    ep = read_minerl_trajectory(d, size=32)
    assert ep.frames.shape == (T + 1, 32, 32, 3) and ep.actions[:, IDX("jump")].tolist() == [1] * T
    assert (ep.actions[:, 10:] == 0).all() and ep.truncated and not ep.terminated  # enums stay 'none'


def test_video_shorter_than_states_is_an_error(tmp_path, make_minerl_traj):
    d = make_minerl_traj(tmp_path / "t", T=20, video_frames=15)
    with pytest.raises(MinecraftDataError, match=r"recording.mp4: field 'frames': decoded 15 frames .* 21 states"):
        read_minerl_trajectory(d)


@pytest.mark.parametrize("change,pattern", [
    (lambda a: a.pop("action$jump"), r"field 'action\$jump': missing"),
    (lambda a: a.update({"action$camera": np.zeros((20, 3))}), r"action\$camera.*shape \(20, 2\)"),
    (lambda a: a.update({"action$forward": np.full(20, 2)}), r"action\$forward.*0/1"),
    (lambda a: a.update({"action$camera": np.full((20, 2), np.nan)}), r"action\$camera.*finite"),
    (lambda a: a.update({"reward": np.zeros(0)}), r"reward.*empty"),
    (lambda a: a.update({"action$place": np.zeros(20, np.int64)}), r"action\$place.*strings"),
])
def test_bad_rendered_npz_fields_are_named(tmp_path, make_minerl_traj, change, pattern):
    data = minerl_arrays(20)
    change(data)
    d = make_minerl_traj(tmp_path / "t", T=20, data=data)
    with pytest.raises(MinecraftDataError, match=pattern):
        read_minerl_trajectory(d)


def test_old_key_style_gets_a_hint(tmp_path, make_minerl_traj):
    data = {k.replace("$", "_"): v for k, v in minerl_arrays(10).items()}
    d = make_minerl_traj(tmp_path / "t", T=10, data=data)
    with pytest.raises(MinecraftDataError, match="old pre-v0.4 '_' keys"):
        read_minerl_trajectory(d)


def test_pickled_arrays_refused_unless_allowed(tmp_path, make_minerl_traj):
    data = minerl_arrays(10)
    data["action$place"] = data["action$place"].astype(object)
    d = make_minerl_traj(tmp_path / "t", T=10, data=data)
    with pytest.raises(MinecraftDataError, match=r"action\$place.*pickled"):
        read_minerl_trajectory(d)
    ep = read_minerl_trajectory(d, allow_pickle=True)
    assert ep.actions[-1, IDX("place")] == 6


def test_truncated_and_corrupt_files_fail_cleanly(tmp_path, make_minerl_traj):
    d = make_minerl_traj(tmp_path / "t", T=10)
    npz = (d / "rendered.npz").read_bytes()
    (d / "rendered.npz").write_bytes(npz[: len(npz) // 2])
    with pytest.raises(MinecraftDataError, match="rendered.npz.*(corrupt|truncated)"):
        read_minerl_trajectory(d)
    (d / "rendered.npz").write_bytes(npz)
    (d / "metadata.json").write_text("{not json")
    with pytest.raises(MinecraftDataError, match="metadata.json.*invalid JSON"):
        read_minerl_trajectory(d)
    (d / "metadata.json").unlink()  # absent metadata: a warning, the episode counts as truncated
    assert read_minerl_trajectory(d).truncated
    (d / "recording.mp4").write_bytes((d / "recording.mp4").read_bytes()[:300])
    with pytest.raises(MinecraftDataError, match="recording.mp4: field 'video'"):
        read_minerl_trajectory(d)
    (d / "rendered.npz").unlink()
    with pytest.raises(MinecraftDataError, match="rendered.npz.*no such file"):
        read_minerl_trajectory(d)


@pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="real Minecraft fixtures not present")
def test_real_damaged_npz_fails_cleanly():
    with pytest.raises(MinecraftDataError, match="treechop.npz.*(corrupt|truncated)"):
        read_rendered_npz(REAL_FIXTURES / "corrupt" / "minerl_pipeline_tests_data_treechop.npz")


@pytest.mark.skipif(not REAL_FIXTURES.is_dir(), reason="real Minecraft fixtures not present")
def test_real_recording_with_wrong_header_count(tmp_path, caplog):
    src = REAL_FIXTURES / "minerl_v0_video" / "recording.mp4"
    with av.open(str(src)) as c:
        assert c.streams.video[0].frames == 1195  # the header claims more frames than exist
    video = decode_video(src, 64)
    assert len(video.frames) == 1162 and video.header_frames == 1195 and video.fps == 20
    T = 1100
    d = tmp_path / "MineRLObtainDiamond-v0" / "real"
    d.mkdir(parents=True)
    (d / "recording.mp4").symlink_to(src)
    np.savez(d / "rendered.npz", **minerl_arrays(T))
    (d / "metadata.json").write_text(json.dumps({"success": False, "true_video_frame_count": 1195}))
    with caplog.at_level(logging.WARNING):
        ep = read_minerl_trajectory(d, size=64)
    assert "true_video_frame_count = 1195 but 1162" in caplog.text
    assert ep.meta["skipped_leading_frames"] == 1162 - (T + 1) and ep.meta["header_frames"] == 1195
    assert np.array_equal(ep.frames, video.frames[-(T + 1):])  # aligned from the end
    assert find_minerl_trajectories(tmp_path) == [d]
