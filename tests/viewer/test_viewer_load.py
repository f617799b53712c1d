"""load_world: a checkpoint of each phase loads with sizes read from the run, and every bad input
(wrong kind of checkpoint, missing tokenizer folder or cache, another tokenizer) is refused by name."""

from __future__ import annotations

import shutil

import pytest
import torch

from dreamer.training.checkpoint import CheckpointMismatchError, atomic_save
from dreamer.viewer.load import CheckpointKindError, load_world


def test_phase1_and_phase2_checkpoints_load(crafter_run):
    w1 = load_world(crafter_run["phase1"], device="cpu")
    assert w1.agent is None and w1.S == 8 and w1.action_space.cards == (17,)
    assert w1.dynamics.chunk_len == 8 and not w1.dynamics.training
    assert all(not p.requires_grad for p in w1.dynamics.parameters())
    w2 = load_world(crafter_run["phase2"], device="cpu", need_agent=True)
    assert w2.agent is not None and w2.agent.chunk_len == 8 and w2.agent.num_tokens == w2.tokenizer.num_tokens
    saved = torch.load(crafter_run["phase2"], weights_only=True)["models"]["agent"]
    for k, v in w2.agent.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_s_comes_from_the_tokenizer_folder(s4_run):
    w = load_world(s4_run["phase2"], device="cpu")
    assert w.S == 4 and w.tokenizer.S == 4 and w.dynamics.chunk_len == 4 and w.agent.chunk_len == 4


def test_wrong_kind_of_checkpoint_is_named(crafter_run, tmp_path):
    bad = tmp_path / "tokenizer_step5.pt"
    atomic_save({"step": 5, "models": {"vae": {"w": torch.zeros(1)}}, "config": {}}, bad)
    with pytest.raises(CheckpointKindError, match=r"tokenizer_step5\.pt.*no world model.*\['vae'\]"):
        load_world(bad)
    with pytest.raises(CheckpointKindError, match=r"phase1_cosmos_final\.pt holds no agent"):
        load_world(crafter_run["phase1"], need_agent=True)
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt"):
        load_world(junk)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        load_world(tmp_path / "missing.pt")


def test_missing_tokenizer_folder_is_named(s4_run, tmp_path):
    folder = s4_run["tokenizer_dir"]
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    try:
        with pytest.raises(FileNotFoundError, match=rf"{folder.name}.*no such folder.*tokenizer\.pretrained"):
            load_world(s4_run["phase1"])
    finally:
        shutil.move(moved, folder)


def test_missing_cache_and_other_tokenizer_are_named(crafter_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*manifest\.json.*data\.cache_dir"):
        load_world(crafter_run["phase1"], overrides=[f"data.cache_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(CheckpointMismatchError, match=r"another tokenizer.*pool=4"):
        load_world(crafter_run["phase1"], overrides=["tokenizer.pool=4"])
