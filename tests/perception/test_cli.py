"""Prompt encoding, accuracy metric and the training entry point (tiny random Gemma, synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamer.perception.data import PromptFormat, answer_correct, collate, encode_record
from dreamer.perception.tiny import BOS_ID, EOS_ID, byte_tokenizer


def test_encode_record_prompt_labels_and_world_window():
    tok = byte_tokenizer()
    tok.add_tokens(["<start_of_world>", "<end_of_world>"], special_tokens=True)
    lat = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    rec = {"episode": "e", "step": 1, "prompt": "wood?", "answer": "3", "kind": "inventory"}
    ex = encode_record(tok, rec, PromptFormat(), True, lat, window=3)
    text = tok.decode(ex.input_ids)
    assert text == "<bos><start_of_world><end_of_world>Question: wood?\nAnswer: 3<eos>"
    assert [t for t in ex.labels if t != -100] == [tok.convert_tokens_to_ids("3"), EOS_ID]
    assert ex.input_ids[0] == BOS_ID
    np.testing.assert_array_equal(ex.world_tnc, lat[[0, 0, 1]])  # steps -1, 0, 1 -> 0, 0, 1
    plain = encode_record(tok, rec, PromptFormat(), False, None, window=3)
    assert tok.decode(plain.input_ids) == "<bos>Question: wood?\nAnswer: 3<eos>" and plain.world_tnc is None
    short = encode_record(tok, dict(rec, prompt="?", step=4), PromptFormat(), True, lat, window=3)
    batch = collate([ex, short], pad_id=0)
    assert batch["input_ids"].shape == (2, len(ex.input_ids)) and batch["world_latents"].shape == (2, 3, 2, 3)
    assert batch["attention_mask"][1].sum() == len(short.input_ids) and (batch["labels"][1, len(short.input_ids):]
                                                                         == -100).all()
    with pytest.raises(ValueError, match="mixes"):
        collate([ex, plain], pad_id=0)


def test_answer_correct_needs_every_answer_token():
    labels = torch.tensor([[-100, -100, 5, 6], [-100, -100, 5, 6], [-100, -100, -100, -100]])
    logits = torch.zeros(3, 4, 10)
    logits[0, 1, 5] = logits[0, 2, 6] = 1  # both right
    logits[1, 1, 5] = logits[1, 2, 7] = 1  # second wrong
    assert answer_correct(logits, labels).tolist() == [True, False, False]


def test_train_entry_point_runs_the_ablation(tmp_path):
    from dreamer.perception.cli import main

    out = tmp_path / "run"
    report = main(["--synthetic", "5", "--tiny", "--steps", "6", "--batch-size", "4", "--window", "2",
                   "--records", str(tmp_path / "qa.jsonl"), "--out", str(out), "--max-eval", "24"])
    for key in ("with_world", "text_only", "with_world_shuffled", "majority_baseline"):
        assert 0.0 <= report[key]["accuracy"] <= 1.0 and report[key]["n"] == 24
    assert report["loss_with_world"]["steps"] == 6 and "loss_text_only" in report
    assert json.loads((out / "report.json").read_text())["eval_episodes"] == 1
    assert (out / "with_world" / "world_fusion.json").is_file() and (tmp_path / "qa.jsonl").is_file()


def test_records_that_do_not_match_the_cache_are_refused(tmp_path):
    from dreamer.perception.cli import check_records

    lat = {"e": np.zeros((4, 2, 3), np.float32)}
    good = [{"episode": "e", "step": k, "frame": 8 * k, "prompt": "?", "answer": "0"} for k in range(3)]
    good.append({"episode": "e", "step": 3, "frame": 21, "prompt": "?", "answer": "0"})  # tail: T=21 < 24
    check_records(good, lat, 8, tmp_path / "qa.jsonl")
    with pytest.raises(ValueError, match="chunk length 8"):
        check_records([dict(good[1], frame=4)], lat, 8, tmp_path / "qa.jsonl")  # made with S=4
    with pytest.raises(ValueError, match="4 latent steps"):
        check_records([dict(good[0], step=4)], lat, 8, tmp_path / "qa.jsonl")
    with pytest.raises(ValueError, match="episode 'x'"):
        check_records([dict(good[0], episode="x")], lat, 8, tmp_path / "qa.jsonl")
