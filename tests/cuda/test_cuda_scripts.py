"""The phase scripts on the GPU with bf16 autocast, and checkpoints crossing devices through the real handoffs:
phase 0 on the GPU; phase 1 on the GPU -> phase 2 on the CPU (a checkpoint written on CUDA loads on the CPU) ->
phase 3 on the GPU with the real-env comparison (written on the CPU, loaded on CUDA);
then runs resumed on the other device: phase 1 on the CPU from its CUDA checkpoint, phase 2 on the GPU from its
CPU checkpoint. Every script runs its diagnostics too (reported, not a stop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cuda_fixtures import CUDA, ActionSpace, Episode, load_checkpoint, save_episode, scripts

pytestmark = CUDA

MODELS = [
    "tokenizer.preset=tiny", "tokenizer.resolution=64", "tokenizer.pool=2", "tokenizer.window_latents=2",
    "data.collect=false", "data.clip_len=4", "data.val_fraction=0.25", "env.env_id=crafter", "env.size=64",
    "env.crafter_area=[16,16]", "eval.max_steps=12", "eval.seed=3",
    "dynamics.d_model=32", "dynamics.num_layers=2", "dynamics.num_heads=2", "dynamics.num_kv_heads=1",
    "dynamics.num_registers=1", "dynamics.max_time=8", "dynamics.k_max=8", "dynamics.sample_steps=2",
    "agent.d_model=32", "agent.num_layers=1", "agent.num_heads=2", "agent.max_time=8", "agent.mlp_hidden=32",
    "agent.head_hidden=32",
    "phase1.eval_context=2",  # < data.clip_len: every phase validates the whole config
]
PHASES = {
    0: ["phase0.steps=2", "phase0.batch_size=1", "phase0.warmup=1", "phase0.log_every=1", "phase0.eval_every=2",
        "phase0.ckpt_every=2", "phase0.eval_clips=2", "phase0.clip_frames=9"],
    1: ["phase1.steps=2", "phase1.batch_size=2", "phase1.warmup=1", "phase1.log_every=1", "phase1.eval_every=2",
        "phase1.ckpt_every=2", "phase1.keep_checkpoints=5", "phase1.eval_batches=1"],
    2: ["phase2.steps=2", "phase2.batch_size=2", "phase2.warmup=1", "phase2.log_every=1", "phase2.eval_every=2",
        "phase2.ckpt_every=2", "phase2.keep_checkpoints=5", "phase2.eval_episodes=0"],
    3: ["phase3.steps=2", "phase3.batch_size=2", "phase3.warmup=1", "phase3.log_every=1", "phase3.eval_every=1000",
        "phase3.ckpt_every=2", "phase3.horizon=3", "phase3.context=3", "phase3.eval_episodes=1"],
}


def crafter_like_episode(T: int, seed: int) -> Episode:
    """Random 64x64 frames with Crafter's action space (one component of 17), so the real env can act."""
    rng = np.random.default_rng(seed)
    return Episode(rng.integers(0, 256, (T + 1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 17, (T, 1)),
                   (rng.random(T) < 0.1).astype(np.float32), True, False, ActionSpace(("action",), (17,)), {},
                   {"env_id": "crafter", "fps": 10})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripts")
    for i in range(4):
        save_episode(tmp / "eps" / f"ep_{i}.npz", crafter_like_episode(T=40, seed=i))
    return tmp


def argv(root, phase: int, device: str, *extra: str, steps: int | None = None) -> list[str]:
    sets = [f"checkpoint_root={root / 'ckpt'}", f"data.episodes_dir={root / 'eps'}", f"data.cache_dir={root / 'cache'}",
            "run=x", f"device={device}", *MODELS, *PHASES[phase], f"phase{phase}.bf16=true",
            f"phase{phase}.diagnose=true", *extra]
    if steps is not None:
        sets.append(f"phase{phase}.steps={steps}")
    return [*(a for s in sets for a in ("--set", s)), "--no-diagnose"]


def saved_on(path) -> set[str]:
    """The devices the tensors of a checkpoint file were saved from."""
    where: set[str] = set()
    torch.load(path, map_location=lambda storage, loc: (where.add(loc.split(":")[0]), storage)[1], weights_only=True)
    return where


def finite_models(ckpt: dict) -> bool:
    return all(bool(torch.isfinite(v.float()).all()) for m in ckpt["models"].values() for v in m.values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_phase0_fits_on_device(root, device, tmp_path):
    out = tmp_path / "tokenizer"
    metrics = scripts.phase0.main(argv(root, 0, str(device), f"phase0.out_dir={out}", "run=p0"))
    assert np.isfinite(metrics["psnr"]) and (out / "config.json").is_file()
    assert saved_on(root / "ckpt" / "p0" / "phase0_step2.pt") >= {device.type}


def test_phases_hand_off_across_devices(root, device):
    run = root / "ckpt" / "x"
    scripts.phase1.main(argv(root, 1, str(device)))
    p1 = run / "phase1_cosmos_final.pt"
    assert saved_on(p1) >= {device.type}  # written from the device
    ckpt1 = load_checkpoint(p1)
    assert ckpt1["step"] == 2 and finite_models(ckpt1)
    assert all(v.device.type == "cpu" for v in ckpt1["models"]["dynamics"].values())

    scripts.phase2.main([*argv(root, 2, "cpu"), "--checkpoint", str(p1)])  # the device's checkpoint on the CPU
    p2 = run / "phase2_final.pt"
    ckpt2 = load_checkpoint(p2)
    assert saved_on(p2) == {"cpu"} and ckpt2["step"] == 2 and finite_models(ckpt2)
    for k, v in ckpt1["models"]["dynamics"].items():  # the frozen dynamics crossed devices unchanged
        assert torch.equal(ckpt2["models"]["dynamics"][k], v), k

    result = scripts.phase3.main([*argv(root, 3, str(device)), "--phase2-checkpoint", str(p2)])  # CPU -> device
    ckpt3 = load_checkpoint(run / "phase3_final.pt")
    assert ckpt3["step"] == 2 and finite_models(ckpt3)
    for k, v in ckpt2["models"]["dynamics"].items():
        assert torch.equal(ckpt3["models"]["dynamics"][k], v), k
    assert set(result["summaries"]) == {"random", "bc", "pmpo"}  # the agent acted in the env on the device
    assert all(s["episodes"] == 1 for s in result["summaries"].values())


def test_runs_resume_on_the_other_device(root, device):
    """Periodic checkpoints resume across devices: phase 1 (written on the device) on the CPU, phase 2 (written
    on the CPU) on the device. Runs after test_phases_hand_off_across_devices, in the same run folder."""
    run = root / "ckpt" / "x"
    if not (run / "phase2_step2.pt").is_file():
        pytest.skip("needs the runs of test_phases_hand_off_across_devices")
    assert saved_on(run / "phase1_step2.pt") >= {device.type}
    scripts.phase1.main(argv(root, 1, "cpu", steps=4))
    ckpt = load_checkpoint(run / "phase1_step4.pt")
    assert ckpt["step"] == 4 and saved_on(run / "phase1_step4.pt") == {"cpu"} and finite_models(ckpt)
    before = load_checkpoint(run / "phase1_step2.pt")["models"]["dynamics"]
    assert any(not torch.equal(before[k], v) for k, v in ckpt["models"]["dynamics"].items())

    assert saved_on(run / "phase2_step2.pt") == {"cpu"}
    scripts.phase2.main([*argv(root, 2, str(device), steps=4), "--checkpoint", str(run / "phase1_step2.pt")])
    ckpt = load_checkpoint(run / "phase2_step4.pt")
    assert ckpt["step"] == 4 and saved_on(run / "phase2_step4.pt") >= {device.type} and finite_models(ckpt)
