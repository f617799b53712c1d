"""VPT jsonl → actions, frame/action alignment, null/GUI handling, broken files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from mc_fixtures import frame_ids, vpt_line

from dreamer.minecraft.actions import VPT
from dreamer.minecraft.paths import MinecraftDataError
from dreamer.minecraft.vpt import read_jsonl, read_vpt_recording, vpt_actions
from dreamer.minecraft.vpt_index import find_vpt_recordings

IDX = VPT.index


def test_keys_buttons_and_camera_map_as_specified(tmp_path):
    line = vpt_line(keys=["key.keyboard.w", "key.keyboard.left.shift", "key.keyboard.escape", "key.keyboard.3"],
                    buttons=[0, 1], dx=20.0, dy=-7.0)
    a = vpt_actions([line], tmp_path / "x.jsonl")["actions"][0]
    on = {VPT.names[i] for i in np.flatnonzero(a[:21])}
    assert on == {"forward", "sneak", "hotbar.3", "attack", "use"}  # ESC is not in the space
    # pitch = dy*0.15 = -1.05 deg -> mu-law -2.9936 -> round(3.503) = 4; yaw = 3 deg -> 8.136 -> 8
    assert a[IDX("camera_pitch")] == 4 and a[IDX("camera_yaw")] == 8
    keys = {"key.keyboard.s": "back", "key.keyboard.a": "left", "key.keyboard.d": "right",
            "key.keyboard.space": "jump", "key.keyboard.left.control": "sprint", "key.keyboard.e": "inventory",
            "key.keyboard.q": "drop", "key.keyboard.9": "hotbar.9"}
    for k, name in keys.items():
        assert vpt_actions([vpt_line(keys=[k])], tmp_path / "x")["actions"][0, IDX(name)] == 1
    assert vpt_actions([vpt_line(buttons=[2])], tmp_path / "x")["actions"][0, IDX("pickItem")] == 1


def test_stuck_attack_and_hotbar_scroll(tmp_path):
    lines = [vpt_line(buttons=[0], new_buttons=[0]), vpt_line(buttons=[0]),
             vpt_line(buttons=[0], new_buttons=[0]), vpt_line(buttons=[0])]
    att = vpt_actions(lines, tmp_path / "x")["actions"][:, IDX("attack")]
    assert att.tolist() == [0, 0, 1, 1]  # stuck from the first tick until pressed again
    lines = [vpt_line(hotbar=0), vpt_line(hotbar=3), vpt_line(hotbar=3), vpt_line(hotbar=0)]
    a = vpt_actions(lines, tmp_path / "x")["actions"]
    assert a[:, IDX("hotbar.4")].tolist() == [0, 1, 0, 0] and a[:, IDX("hotbar.1")].tolist() == [0, 0, 0, 1]


def test_frames_align_with_actions_from_the_start(tmp_path, make_vpt_pair):
    n = 24
    lines = [vpt_line(keys=["key.keyboard.w"] if t % 3 == 0 else [], dx=float(t)) for t in range(n)]
    make_vpt_pair(tmp_path, n_frames=n, lines=lines)
    (rec,) = find_vpt_recordings(tmp_path)
    ep = read_vpt_recording(rec, size=32)
    assert ep.frames.shape == (n, 32, 32, 3) and ep.actions.shape == (n - 1, 23)
    assert frame_ids(ep.frames).tolist() == list(range(n))
    assert ep.actions[:, IDX("forward")].tolist() == [int(t % 3 == 0) for t in range(n - 1)]
    assert ep.rewards.dtype == np.float32 and not ep.rewards.any() and ep.truncated and not ep.terminated
    assert ep.meta["fps"] == 20 and ep.meta["original_resolution"] == [72, 128] and ep.meta["source"] == "vpt"
    assert ep.meta["session"] == "0123456789ab" and ep.meta["alias"] == "Player1"


@pytest.mark.parametrize("n_frames,n_lines,kept", [(24, 26, 24), (24, 20, 20)])
def test_small_count_mismatch_keeps_the_common_prefix(tmp_path, make_vpt_pair, caplog, n_frames, n_lines, kept):
    make_vpt_pair(tmp_path, n_frames=n_frames, lines=[vpt_line() for _ in range(n_lines)])
    with caplog.at_level(logging.WARNING):
        ep = read_vpt_recording(find_vpt_recordings(tmp_path)[0], size=16)
    assert len(ep.frames) == kept and frame_ids(ep.frames).tolist() == list(range(kept))
    assert "action lines" in caplog.text


def test_large_count_mismatch_is_an_error(tmp_path, make_vpt_pair):
    make_vpt_pair(tmp_path, n_frames=30, lines=[vpt_line() for _ in range(8)])
    with pytest.raises(MinecraftDataError, match="30 frames but .* 8 action lines"):
        read_vpt_recording(find_vpt_recordings(tmp_path)[0], size=16, max_mismatch=5)


def test_null_actions_and_gui_frames_are_kept_and_flagged(tmp_path, make_vpt_pair):
    lines = [vpt_line(keys=["key.keyboard.w"]) for _ in range(10)]
    lines[2] = vpt_line(dx=0.5)  # 0.075 deg quantises to the still bin: null after quantisation
    lines[4] = vpt_line()
    lines[6] = vpt_line(gui=True, x=640.0, y=360.0)  # null too, and GUI open with the cursor mid-screen
    make_vpt_pair(tmp_path, n_frames=10, lines=lines)
    rec = find_vpt_recordings(tmp_path)[0]
    ep = read_vpt_recording(rec, size=0)
    assert ep.extras["null_action"].tolist() == [False, False, True, False, True, False, True, False, False, False]
    assert ep.extras["gui_open"].tolist() == [t == 6 for t in range(10)]
    f = ep.frames[6].astype(int)
    grey = 10 + 6 * 6
    assert (f[36, 64] == 0).all()  # cursor tip (black outline) at (x, y) * 72/720
    assert (f[38, 65] == 255).all()  # white cursor body
    assert abs(ep.frames[5].astype(int) - (10 + 30)).max() <= 3 and abs(f[0, 0] - grey).max() <= 3
    plain = read_vpt_recording(rec, size=0, draw_gui_cursor=False)
    assert abs(plain.frames[6].astype(int) - grey).max() <= 3


def test_bad_jsonl_lines_give_errors_naming_the_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(vpt_line()) + "\n" + json.dumps(vpt_line()) + "\n" + '{"mouse": {"dx": 1')
    with pytest.raises(MinecraftDataError, match=r"line 3.*invalid JSON"):
        read_jsonl(p)
    bad = vpt_line()
    del bad["mouse"]["dx"]
    with pytest.raises(MinecraftDataError, match=r"line 2: mouse.dx"):
        vpt_actions([vpt_line(), bad], p)
    bad = vpt_line()
    bad["mouse"]["dy"] = "up"
    with pytest.raises(MinecraftDataError, match=r"line 1: mouse.dy"):
        vpt_actions([bad], p)
    with pytest.raises(MinecraftDataError, match="hotbar"):
        vpt_actions([vpt_line(hotbar=12)], p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MinecraftDataError, match="UTF-8"):
        read_jsonl(p)
    p.write_text("\n\n")
    with pytest.raises(MinecraftDataError, match="empty"):
        read_jsonl(p)


def test_truncated_video_is_a_clear_error(tmp_path, make_vpt_pair):
    video = make_vpt_pair(tmp_path, n_frames=24)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(MinecraftDataError, match="video.*(truncated|corrupt)"):
        read_vpt_recording(find_vpt_recordings(tmp_path)[0], size=16)
    video.unlink()
    (tmp_path / "other.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(MinecraftDataError, match="other.jsonl.*no such actions file"):
        read_vpt_recording(find_vpt_recordings(tmp_path)[0], size=16)
