"""What a phase resumes from (dreamer.training.resume and the Runtime around it): the newest
checkpoint that loads, the inputs the run folder was started with, --fresh, and a config saved only
once every check passed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from dreamer.config import load
from dreamer.training.checkpoint import (
    InputMismatchError,
    UnsafeCheckpointError,
    atomic_save,
    load_checkpoint,
    payload,
    resume,
    save_periodic,
)
from dreamer.training.runtime import Runtime

TEST_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "test.yaml")
P1 = {"phase1": {"path": "/runs/a/phase1_cosmos_final.pt", "sha256": "a" * 64, "step": 10}}


def runtime(tmp_path, inputs=None, fresh=False) -> Runtime:
    cfg = load([TEST_CONFIG], [f"checkpoint_root={tmp_path}", "run=r"])
    return Runtime(cfg=cfg, device=torch.device("cpu"), run_dir=cfg.run_dir, phase="phase2", inputs=inputs or {},
                   fresh=fresh)


def save_steps(rt, steps) -> dict[int, dict]:
    rt.run_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for s in steps:
        torch.manual_seed(s)
        m = torch.nn.Linear(3, 2)
        out[s] = {k: v.clone() for k, v in m.state_dict().items()}
        save_periodic(rt, "phase2", payload(rt.cfg, s, {"m": m}), keep=10)
    return out


def test_resume_steps_over_damaged_checkpoints_and_keeps_them(tmp_path, caplog):
    rt = runtime(tmp_path)
    weights = save_steps(rt, (2, 4, 6))
    run = rt.run_dir
    data = (run / "phase2_step6.pt").read_bytes()
    (run / "phase2_step6.pt").write_bytes(data[: len(data) // 2])  # killed mid-copy, a full disk, ...
    (run / "phase2_step4.pt").write_bytes(b"")
    m = torch.nn.Linear(3, 2)
    with caplog.at_level(logging.WARNING):
        step, _ = resume(rt, "phase2", {"m": m})
    assert step == 2 and all(torch.equal(m.state_dict()[k], v) for k, v in weights[2].items())
    for s in (6, 4):
        assert f"checkpoint {run / f'phase2_step{s}.pt'} is damaged" in caplog.text
        assert (run / f"phase2_step{s}.pt.damaged").is_file() and not (run / f"phase2_step{s}.pt").exists()
    assert "unsafe" not in caplog.text and "refusing" not in caplog.text
    assert (run / "phase2_step6.pt.damaged").read_bytes() == data[: len(data) // 2]  # moved, not deleted
    assert (run / "config_phase2.yaml").is_file()  # accepted


def test_an_unsafe_latest_checkpoint_stops_the_run(tmp_path):
    rt = runtime(tmp_path)
    save_steps(rt, (2,))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, rt.run_dir / "phase2_step4.pt")
    with pytest.raises(UnsafeCheckpointError, match="phase2_step4.pt cannot be loaded safely"):
        resume(rt, "phase2", {"m": torch.nn.Linear(3, 2)})
    assert (rt.run_dir / "phase2_step4.pt").is_file() and not (rt.run_dir / "config_phase2.yaml").exists()


def test_other_inputs_are_refused_naming_both_and_nothing_is_written(tmp_path):
    save_steps(runtime(tmp_path, P1), (2,))
    assert load_checkpoint(tmp_path / "r" / "phase2_step2.pt")["inputs"] == P1  # the checkpoint remembers
    other = {"phase1": {"path": "/runs/b/phase1_cosmos_final.pt", "sha256": "b" * 64, "step": 10}}
    rt = runtime(tmp_path, other)
    with pytest.raises(InputMismatchError, match=r"started from phase1 checkpoint /runs/a/phase1_cosmos_final.pt "
                                                      r"\(weights aaaaaaaaaaaa\), but this command gives "
                                                      r"/runs/b/phase1_cosmos_final.pt \(weights bbbbbbbbbbbb\)"):
        resume(rt, "phase2", {"m": torch.nn.Linear(3, 2)})
    assert sorted(p.name for p in rt.run_dir.iterdir()) == ["phase2_step2.pt"]
    # the same weights at another path (a copied file) are the same input
    moved = {"phase1": dict(P1["phase1"], path="/elsewhere/copy.pt")}
    assert resume(runtime(tmp_path, moved), "phase2", {"m": torch.nn.Linear(3, 2)})[0] == 2


def test_inputs_of_an_older_checkpoint_come_from_the_run_folder(tmp_path):
    rt = runtime(tmp_path, P1)
    rt.accept()  # writes inputs_phase2.json
    m = torch.nn.Linear(3, 2)
    atomic_save(payload(rt.cfg, 2, {"m": m}), rt.run_dir / "phase2_step2.pt")  # no "inputs" in it
    other = {"phase1": dict(P1["phase1"], sha256="c" * 64)}
    with pytest.raises(InputMismatchError, match=f"resuming the run folder {rt.run_dir}"):
        resume(runtime(tmp_path, other), "phase2", {"m": m})


def test_fresh_sets_the_phase_aside_and_starts_over(tmp_path):
    save_steps(runtime(tmp_path, P1), (2, 4))
    rt = runtime(tmp_path, {"phase1": dict(P1["phase1"], sha256="d" * 64)}, fresh=True)
    (rt.run_dir / "phase2_final.pt").write_bytes(b"x")
    (rt.run_dir / "phase2_eval.json").write_text("{}")
    (rt.run_dir / "phase1_step2.pt").write_bytes(b"x")  # another phase's: left alone
    assert resume(rt, "phase2", {"m": torch.nn.Linear(3, 2)}) == (0, None)
    (aside,) = (rt.run_dir / "superseded").iterdir()
    assert aside.name.startswith("phase2-")
    assert sorted(p.name for p in aside.iterdir()) == ["phase2_eval.json", "phase2_final.pt", "phase2_step2.pt",
                                                      "phase2_step4.pt"]
    assert sorted(p.name for p in rt.run_dir.glob("phase*")) == ["phase1_step2.pt"]
    assert "d" * 64 in (rt.run_dir / "inputs_phase2.json").read_text()
