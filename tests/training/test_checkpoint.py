import itertools
import os
import pickle

import pytest
import torch

from dreamer.training.checkpoint import (
    atomic_save,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    strip_compiled_prefix,
)
from dreamer.training.config import PhaseConfig
from dreamer.training.loop import NonFiniteError, NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step


def test_atomic_save_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    atomic_save({"w": torch.ones(3)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"w": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_callable_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(path)


def test_strip_compiled_prefix():
    m = torch.nn.Linear(2, 2)
    sd = {f"_orig_mod.{k}": v for k, v in m.state_dict().items()}
    m.load_state_dict(strip_compiled_prefix(sd))


def test_rng_roundtrip_through_checkpoint(tmp_path):
    state = rng_state()
    a = torch.rand(3)
    atomic_save({"rng": state}, tmp_path / "r.pt")
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(torch.rand(3), a)


def test_latest_and_prune(tmp_path):
    for s in (5, 10, 100):
        atomic_save({"step": s}, tmp_path / f"phase1_step{s}.pt")
    assert latest_checkpoint(tmp_path, "phase1").name == "phase1_step100.pt"
    prune_checkpoints(tmp_path, "phase1", keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["phase1_step10.pt", "phase1_step100.pt"]


def test_nonfinite_guard_skips_then_stops():
    model = torch.nn.Linear(3, 1)
    pc = PhaseConfig(steps=10, warmup=1, max_nonfinite=2)
    opt, guard = make_optimizer(model.parameters(), pc), NonFiniteGuard(2)
    sched = make_scheduler(opt, pc)
    before = model.weight.detach().clone()
    loss = model(torch.tensor([[float("nan"), 1.0, 1.0]])).sum()
    ok, _ = optimizer_step(opt, sched, loss, pc, guard, 0, [("ep_1", 3)])
    assert not ok and torch.equal(model.weight, before)
    ok, _ = optimizer_step(opt, sched, model(torch.ones(1, 3)).sum(), pc, guard, 1)
    assert ok and not torch.equal(model.weight, before) and guard.in_row == 0
    optimizer_step(opt, sched, model(torch.full((1, 3), float("inf"))).sum(), pc, guard, 2)
    with pytest.raises(NonFiniteError, match="2 non-finite steps in a row"):
        optimizer_step(opt, sched, model(torch.full((1, 3), float("nan"))).sum(), pc, guard, 3)


def test_schedule_warmup_then_decay():
    model = torch.nn.Linear(1, 1)
    pc = PhaseConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    opt = make_optimizer(model.parameters(), pc)
    sched = make_scheduler(opt, pc)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=0.01) and all(a >= b for a, b in itertools.pairwise(lrs[10:]))
