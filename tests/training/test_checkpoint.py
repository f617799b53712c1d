import itertools
import os
import pickle

import numpy as np
import pytest
import torch

from dreamer.atomic import WriteError
from dreamer.training.checkpoint import (
    DamagedCheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    state_sha256,
    strip_compiled_prefix,
)
from dreamer.training.config import PhaseConfig
from dreamer.training.optim import NonFiniteError, NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step


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


# --- damaged or unsafe, never confused (issue 19) -------------------------------------------------------


def _good(path):
    return atomic_save({"w": torch.arange(1000.0), "step": 3}, path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "text", "junk"])
def test_a_damaged_file_is_called_damaged_not_unsafe(tmp_path, damage):
    data = _good(tmp_path / "c.pt").read_bytes()
    if damage == "flipped":  # a bit flip inside the tensor bytes: torch alone would load it silently
        at = data.index(np.arange(1000.0, dtype=np.float32)[500:502].tobytes())
        data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
    bad = {"truncated": data[: len(data) // 2], "empty": b"", "flipped": data, "text": b"hello world, not a checkpoint",
           "junk": bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))}[damage]
    (tmp_path / "c.pt").write_bytes(bad)
    with pytest.raises(DamagedCheckpointError, match=rf"checkpoint {tmp_path / 'c.pt'} is damaged") as e:
        load_checkpoint(tmp_path / "c.pt")
    assert "unsafe" not in str(e.value) and "refusing to unpickle" not in str(e.value)
    assert {"empty": "empty (0 bytes)", "truncated": "cut short", "flipped": "fails its CRC check"}.get(damage, "") in str(e.value)


def test_code_in_an_intact_file_is_still_refused_as_unsafe(tmp_path):
    with open(tmp_path / "raw.pt", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    torch.save({"x": Evil()}, tmp_path / "zip.pt")
    for name in ("raw.pt", "zip.pt"):
        with pytest.raises(UnsafeCheckpointError, match="weights_only=True.*refusing to unpickle arbitrary code"):
            load_checkpoint(tmp_path / name)


def test_a_checkpoint_write_on_a_full_disk_names_the_file_and_the_free_space(tmp_path, full_disk):
    """torch.save reports a failed write as "[enforce fail at inline_container.cc] unexpected pos"; the
    error raised names the checkpoint and the free space instead, and the previous file is intact."""
    path = _good(tmp_path / "phase1_step2.pt")
    full_disk(room=100)
    with pytest.raises(WriteError, match=rf"disk full writing {path}: No space left on device \(.* MiB free under "):
        atomic_save({"w": torch.zeros(10_000)}, path)
    assert sorted(os.listdir(tmp_path)) == ["phase1_step2.pt"]
    assert load_checkpoint(path)["step"] == 3


def test_state_hash_follows_the_weights_only():
    a = {"dynamics": {"w": torch.ones(3), "b": torch.zeros(2, dtype=torch.bfloat16)}}
    same = {"dynamics": {"b": torch.zeros(2, dtype=torch.bfloat16), "w": torch.ones(3)}}
    assert state_sha256(a) == state_sha256(same)
    assert state_sha256(a) != state_sha256({"dynamics": {"w": torch.ones(3) * 2, "b": a["dynamics"]["b"]}})
    assert state_sha256(a) != state_sha256({"dynamics": {"w": torch.ones(3, dtype=torch.float64), "b": a["dynamics"]["b"]}})


def test_nonfinite_guard_names_an_episode_that_keeps_failing():
    """Non-finite steps that are not in a row, but share one episode: the guard stops once that episode was in
    max_nonfinite of the skipped batches (and at least half of them), naming it and the steps."""
    guard = NonFiniteGuard(3)
    nan, fine = torch.tensor(float("nan")), torch.tensor(1.0)
    for step, prov in ((2, [("ep_0", 1), ("ep_3", 4)]), (5, [("ep_1", 0), ("ep_0", 7)])):
        assert not guard.check(step, nan, fine, prov)
        assert guard.check(step + 1, fine, fine, [("ep_2", 0)])  # a good step between: the streak resets
    with pytest.raises(NonFiniteError) as e:
        guard.check(9, nan, fine, [("ep_0", 2), ("ep_2", 5)])
    msg = str(e.value)
    assert "episode ep_0 was in 3 of the 3 batches" in msg and "steps 2, 5, 9" in msg and "ep_2 (1)" in msg
    assert guard.culprits()["ep_0"] == 3


def test_nonfinite_guard_in_a_row_names_the_streak():
    guard = NonFiniteGuard(2)
    nan, fine = torch.tensor(float("nan")), torch.tensor(1.0)
    guard.check(0, nan, fine, [("ep_a", 0)])
    with pytest.raises(NonFiniteError, match=r"2 non-finite steps in a row .* steps 0, 1; .*ep_a \(1\), ep_b \(1\)"):
        guard.check(1, nan, fine, [("ep_b", 0)])


def test_heldout_figures_that_are_not_finite_stop_the_phase_naming_the_episodes():
    from dreamer.training.optim import check_heldout

    z = torch.zeros(2, 3, 4, 5)
    z[1, 2, 0, 0] = float("nan")
    batches = [{"latents": z, "provenance": [("ep_5", 0), ("ep_9", 3)]}]
    check_heldout("phase 1", {"one_step_mse": 0.1}, batches)  # finite: nothing to say
    with pytest.raises(NonFiniteError, match=r"phase 1: held-out figures are not finite \(one_step_mse\) on held-out "
                                             r"episodes \['ep_9'\] \(their clips hold non-finite latents\)"):
        check_heldout("phase 1", {"one_step_mse": float("nan"), "copy": 0.2}, batches)
    with pytest.raises(NonFiniteError, match=r"\['ep_5', 'ep_9'\] \(the model's outputs"):
        check_heldout("phase 1", {"x": float("inf")}, [{"latents": torch.zeros(2, 3, 4, 5),
                                                         "provenance": batches[0]["provenance"]}])
    check_heldout("phase 2", {"value_return_corr": float("nan"), "bc_nll": 1.0}, [], keys=("bc_nll",))


def test_adamw_is_fused_on_plain_parameters_and_steps_as_the_default_does():
    from dreamer.training.optim import adamw

    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    fused = adamw(a.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.99))
    plain = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.99))
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(3):
        x = torch.randn(5, 4)
        for m, o in ((a, fused), (b, plain)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the same update, up to float rounding
    plain.load_state_dict(fused.state_dict())  # checkpoints move between the two

    class Sharded(torch.nn.Parameter):  # a parameter subclass (e.g. FSDP's flat parameters): the default loop
        pass

    groups = [{"params": [Sharded(torch.zeros(2))]}, {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}]
    assert not adamw(groups, lr=1e-2).defaults["fused"]
