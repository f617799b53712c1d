"""QA records from (synthetic) Crafter episodes, their JSONL files, and their encoding."""

from __future__ import annotations

import numpy as np
import pytest

from dreamer.perception.records import (
    ACHIEVEMENT_QUESTION,
    DEATH_QUESTION,
    QAConfig,
    inventory_question,
    make_qa_records,
    num_latent_steps,
    read_records,
    write_records,
)
from dreamer.perception.synthetic import SyntheticEpisode, synthetic_episode, synthetic_latents


def _episode(T=10, terminated=True):
    """Hand-made: wood = frame index // 3, collect_wood counter rises at frames 3, 6, 9; place_table at 5."""
    inv = np.zeros((T + 1, 2), np.int32)
    inv[:, 0] = 9 - np.arange(T + 1) // 2  # health
    inv[:, 1] = np.arange(T + 1) // 3  # wood
    ach = np.zeros((T + 1, 2), np.int32)
    ach[:, 0] = np.arange(T + 1) // 3  # collect_wood
    ach[5:, 1] = 1  # place_table
    return SyntheticEpisode(
        frames=np.zeros((T + 1, 8, 8, 3), np.uint8), actions=np.zeros((T, 1), np.int64),
        rewards=np.zeros(T, np.float32), terminated=terminated, truncated=not terminated,
        extras={"inventory": inv, "achievements": ach},
        meta={"inventory_names": ["health", "wood"], "achievement_names": ["collect_wood", "place_table"]},
    )


def test_records_describe_the_last_frame_of_each_latent_step():
    ep = _episode(T=10)
    cfg = QAConfig(chunk_len=4, inventory_per_step=2, death_horizon=1, nothing_keep=1.0, no_keep=1.0)
    recs = make_qa_records(ep, "ep0", cfg)
    L = num_latent_steps(10, 4)
    assert L == 4  # frames 0 | 1-4 | 5-8 | 9-10 (tail padded)
    inv = {(r["step"], r["prompt"]): r["answer"] for r in recs if r["kind"] == "inventory"}
    for k, frame in enumerate([0, 4, 8, 10]):
        assert inv[(k, inventory_question("wood"))] == str(frame // 3)
        assert inv[(k, inventory_question("health"))] == str(9 - frame // 2)
    ach = {r["step"]: r["answer"] for r in recs if r["kind"] == "achievement"}
    # step 1: frames 0->4 collect_wood 0->1; step 2: 4->8 collect_wood 1->2 and place_table; step 3: 8->10, 2->3
    assert ach == {1: "collect_wood", 2: "collect_wood, place_table", 3: "collect_wood"}
    death = {r["step"]: r["answer"] for r in recs if r["kind"] == "death"}
    assert death == {0: "no", 1: "no", 2: "yes", 3: "yes"}
    assert {r["prompt"] for r in recs if r["kind"] == "death"} == {DEATH_QUESTION}
    assert all(r["frame"] == min(4 * r["step"], 10) for r in recs)
    # a truncated episode is never "about to die"
    recs = make_qa_records(_episode(T=10, terminated=False), "ep1", cfg)
    assert {r["answer"] for r in recs if r["kind"] == "death"} == {"no"}


def test_nothing_answers_are_subsampled():
    ep = _episode(T=40)
    ep.extras["achievements"][:] = 0
    keep_all = make_qa_records(ep, "e", QAConfig(chunk_len=2, nothing_keep=1.0, kinds=("achievement",)))
    keep_some = make_qa_records(ep, "e", QAConfig(chunk_len=2, nothing_keep=0.3, kinds=("achievement",)))
    assert len(keep_all) == 20 and all(r["answer"] == "nothing" and r["prompt"] == ACHIEVEMENT_QUESTION
                                       for r in keep_all)
    assert 0 < len(keep_some) < 20


def test_missing_extras_or_names_give_clear_errors():
    ep = _episode()
    del ep.extras["inventory"]
    with pytest.raises(ValueError, match=r"episode 'bad': extras\['inventory'\] is missing"):
        make_qa_records(ep, "bad")
    ep = _episode()
    ep.meta["achievement_names"] = ["just_one"]
    with pytest.raises(ValueError, match=r"meta\['achievement_names'\] has 1 names for 2 columns"):
        make_qa_records(ep, "bad")


def test_jsonl_round_trip_and_bad_line(tmp_path):
    recs = make_qa_records(synthetic_episode(np.random.default_rng(0), max_steps=50), "s", QAConfig())
    path = write_records(tmp_path / "qa.jsonl", recs)
    assert read_records(path) == recs
    path.write_text(path.read_text() + '{"episode": "x", "step": 1}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:\d+: record lacks \['prompt', 'answer'\]"):
        read_records(path)


def test_synthetic_latents_align_with_latent_steps():
    ep = synthetic_episode(np.random.default_rng(3), max_steps=37)
    z = synthetic_latents(ep, chunk_len=8, tokens=4, channels=5)
    assert z.shape == (num_latent_steps(len(ep.rewards), 8), 4, 5) and z.dtype == np.float16
