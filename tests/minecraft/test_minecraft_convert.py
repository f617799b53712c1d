"""The converter CLI: episode files that load, the summary, resuming, broken files, unsafe indexes."""

from __future__ import annotations

import json
import logging
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from mc_fixtures import frame_ids, minerl_arrays, vpt_line

from dreamer.data.episode import list_episodes, load_episode
from dreamer.minecraft.actions import MINERL_V04, VPT
from dreamer.minecraft.convert import SUMMARY_NAME, main

STEM = "Player7-0123456789ab-20220101-120000"


def minerl_tree(root: Path, make) -> Path:
    make(root / "MineRLTreechop-v0" / "good_a", T=20)
    make(root / "MineRLTreechop-v0" / "good_b", T=15, video_frames=19)
    bad = make(root / "MineRLTreechop-v0" / "broken_npz", T=10)
    data = (bad / "rendered.npz").read_bytes()
    (bad / "rendered.npz").write_bytes(data[:100])
    only_video = make(root / "MineRLTreechop-v0" / "video_only", T=5)
    (only_video / "rendered.npz").unlink()
    return root


def run(*args: str) -> int:
    return main([*args, "--no-progress"])


def test_minerl_conversion_summary_and_resume(tmp_path, make_minerl_traj, caplog):
    src, out = minerl_tree(tmp_path / "src", make_minerl_traj), tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run("--format", "minerl", "--src", str(src), "--out", str(out), "--size", "32") == 0
    assert caplog.text.count("skipping broken recording") == 2
    assert "broken_npz" in caplog.text and "video_only" in caplog.text
    files = list_episodes(out)
    assert [f.name for f in files] == ["MineRLTreechop-v0__good_a.npz", "MineRLTreechop-v0__good_b.npz"]
    for f, T in zip(files, (20, 15)):
        ep = load_episode(f)
        assert ep.frames.shape == (T + 1, 32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (T, 15) and ep.actions.dtype == np.int64 and ep.rewards.dtype == np.float32
        assert ep.action_space == MINERL_V04.space
        assert ep.meta["fps"] == 20 and ep.meta["source"] == "minerl_v04" and ep.meta["task"] == "MineRLTreechop-v0"
        assert ep.meta["original_resolution"] == [64, 64]
    assert frame_ids(load_episode(files[1]).frames)[0] == 3  # 19 frames, 16 states: 3 leading frames skipped
    s = json.loads((out / SUMMARY_NAME).read_text())
    assert (s["episodes"], s["converted"], s["failed"], s["skipped_existing"]) == (2, 2, 2, 0)
    assert s["frames"] == 21 + 16 and s["steps"] == 35 and s["hours"] == pytest.approx(35 / 20 / 3600)
    assert s["reward_events"] == 2 and s["reward_total"] == 2.0 and s["reward_values"] == {"1.0": 2}
    fwd = np.concatenate([minerl_arrays(20)["action$forward"], minerl_arrays(15)["action$forward"]]).mean()
    assert s["actions"]["key_press_fraction"]["forward"] == pytest.approx(fwd)
    assert sum(s["actions"]["camera_yaw"]["histogram"]) == 35
    assert s["actions"]["enums"]["nearbySmelt"]["coal"] == 35 and len(s["failures"]) == 2

    mtimes = [f.stat().st_mtime_ns for f in files]
    assert run("--format", "minerl", "--src", str(src), "--out", str(out), "--size", "32") == 0  # resume
    s2 = json.loads((out / SUMMARY_NAME).read_text())
    assert (s2["converted"], s2["skipped_existing"], s2["frames"]) == (0, 2, s["frames"])
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    files[0].unlink()
    assert run("--format", "minerl", "--src", str(src), "--out", str(out), "--size", "32") == 0
    s3 = json.loads((out / SUMMARY_NAME).read_text())
    assert (s3["converted"], s3["skipped_existing"]) == (1, 1) and files[0].is_file()


def test_limit_and_all_broken(tmp_path, make_minerl_traj, caplog):
    src = minerl_tree(tmp_path / "src", make_minerl_traj)
    assert run("--format", "minerl", "--src", str(src), "--out", str(tmp_path / "o1"), "--limit", "1") == 1
    # sorted order puts broken_npz first: nothing written, exit code 1
    assert list_episodes(tmp_path / "o1") == []
    assert run("--format", "minerl", "--src", str(src), "--out", str(tmp_path / "o2"), "--limit", "2") == 0
    assert len(list_episodes(tmp_path / "o2")) == 1
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.ERROR):
        assert run("--format", "minerl", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o3")) == 1
    assert "no minerl recordings found" in caplog.text


def test_vpt_index_conversion_with_missing_and_broken(tmp_path, make_vpt_pair, caplog):
    root = tmp_path / "vpt"
    lines = [vpt_line(keys=["key.keyboard.w"]) for _ in range(20)]
    lines[3] = vpt_line(gui=True)
    make_vpt_pair(root / "data" / "6.13", STEM, n_frames=20, lines=lines)
    broken = make_vpt_pair(root / "data" / "6.13", "Player8-0123456789ab-20220101-120001", n_frames=20)
    broken.with_suffix(".jsonl").write_text('{"mouse": {"dx": 0,')
    rels = [f"data/6.13/{STEM}.mp4", f"data/6.13/{STEM}.mp4", "data/6.13/Player8-0123456789ab-20220101-120001.mp4",
            "data/7.1/Player9-0123456789ab-20220101-120002.mp4"]
    index = tmp_path / "all_6xx.json"
    index.write_text(json.dumps({"basedir": "https://example.invalid/", "relpaths": rels}))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run("--format", "vpt", "--src", str(index), "--data-root", str(root), "--out", str(out)) == 0
    assert "1 of 3 indexed recordings are not under" in caplog.text and "line 1" in caplog.text
    (f,) = list_episodes(out)
    assert f.name == f"6.13__{STEM}.npz"
    ep = load_episode(f)
    assert ep.frames.shape == (20, 64, 64, 3) and ep.actions.shape == (19, 23) and ep.action_space == VPT.space
    assert ep.extras["gui_open"][3] and ep.extras["null_action"][3] and ep.extras["null_action"].sum() == 1
    assert ep.meta["original_resolution"] == [72, 128] and ep.meta["task"] == "6.13" and ep.meta["fps"] == 20
    s = json.loads((out / SUMMARY_NAME).read_text())
    assert (s["converted"], s["failed"], s["missing_files"]) == (1, 1, 1)
    assert s["null_action_fraction"] == pytest.approx(1 / 19) and s["gui_open_fraction"] == pytest.approx(1 / 20)
    assert s["actions"]["key_press_fraction"]["forward"] == pytest.approx(18 / 19)


def test_vpt_folder_and_unsafe_index(tmp_path, make_vpt_pair, caplog):
    make_vpt_pair(tmp_path / "recs" / "9.0", STEM, n_frames=12)
    out = tmp_path / "out"
    assert run("--format", "vpt", "--src", str(tmp_path / "recs"), "--out", str(out), "--size", "16") == 0
    assert load_episode(out / f"9.0__{STEM}.npz").frames.shape == (12, 16, 16, 3)
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"basedir": "x", "relpaths": ["../../etc/passwd"]}))
    with caplog.at_level(logging.ERROR):
        assert run("--format", "vpt", "--src", str(evil), "--data-root", str(tmp_path), "--out", str(out)) == 2
    assert "evil.json" in caplog.text and "relpaths[0]" in caplog.text and "climbs out" in caplog.text


def test_cli_module_entry_point(tmp_path, make_minerl_traj, monkeypatch, capsys):
    """``python -m dreamer.minecraft.convert`` (run in-process: a subprocess would re-import torch)."""
    make_minerl_traj(tmp_path / "src" / "MineRLNavigate-v0" / "s1", T=8)
    argv = ["convert", "--format", "minerl", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
            "--size", "64", "--limit", "5", "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy notes the module is already imported
        runpy.run_module("dreamer.minecraft.convert", run_name="__main__")
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    assert load_episode(tmp_path / "out" / "MineRLNavigate-v0__s1.npz").num_steps == 8
