"""Shared pieces of the CUDA tests (tests/cuda): the device, the skip marker and small real models.

Every module here sets ``pytestmark = CUDA`` (marker ``cuda``; skipped with the reason when CUDA is not
available). ``make gpu-check`` runs them on a GPU machine. To rehearse them without a GPU, set
``DREAMER_CUDA_TESTS_DEVICE=cpu``: the same tests then run on the CPU (gloo instead of NCCL).

The library is imported here and only here (names may move): the tests take what they need from this file.
"""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch

import train_phase0_tokenizer
import train_phase1_cosmos
import train_phase2
import train_phase3
from dreamer.agent import Agent, AgentConfig
from dreamer.config import load
from dreamer.data.episode import ActionSpace, Episode, save_episode
from dreamer.data.synthetic import make_episode
from dreamer.dynamics import DynamicsConfig, DynamicsModel, ShortcutForcingLoss, rollout, sample_tau_step
from dreamer.imagination import grouped_step, imagine, make_phase3_optimizer, phase3_losses
from dreamer.pipeline.phase2 import Phase2Objective
from dreamer.tokenizer.fit import PooledAutoencoder, build_trainable_vae, reconstruction_loss
from dreamer.training.checkpoint import atomic_save, load_checkpoint, payload
from dreamer.training.optim import NonFiniteGuard, make_optimizer, make_scheduler, optimizer_step
from dreamer.training.runtime import Runtime, compiled, ddp_wrap, pick_device, wrap_model

# The phase scripts, by phase.
scripts = SimpleNamespace(phase0=train_phase0_tokenizer, phase1=train_phase1_cosmos, phase2=train_phase2,
                          phase3=train_phase3)

__all__ = [
    "ActionSpace",
    "Agent",
    "AgentConfig",
    "DynamicsConfig",
    "DynamicsModel",
    "Episode",
    "NonFiniteGuard",
    "Phase2Objective",
    "PooledAutoencoder",
    "Runtime",
    "ShortcutForcingLoss",
    "atomic_save",
    "build_trainable_vae",
    "compiled",
    "ddp_wrap",
    "grouped_step",
    "imagine",
    "load",
    "load_checkpoint",
    "make_episode",
    "make_optimizer",
    "make_phase3_optimizer",
    "make_scheduler",
    "optimizer_step",
    "payload",
    "phase3_losses",
    "pick_device",
    "reconstruction_loss",
    "rollout",
    "sample_tau_step",
    "save_episode",
    "scripts",
    "wrap_model",
]

DEVICE_NAME = os.environ.get("DREAMER_CUDA_TESTS_DEVICE", "cuda")
if DEVICE_NAME == "cpu":  # the rehearsal exercises the bf16 paths even on a CPU without native bf16 (dreamer/precision.py)
    os.environ.setdefault("DREAMER_CPU_BF16", "1")


def _skip_reason() -> str | None:
    if DEVICE_NAME.startswith("cuda") and not torch.cuda.is_available():
        return (f"no CUDA GPU: torch {torch.__version__} (CUDA build {torch.version.cuda}) reports "
                "torch.cuda.is_available() == False; these tests run on a GPU machine (make gpu-check), or on the CPU "
                "with DREAMER_CUDA_TESTS_DEVICE=cpu")
    return None


CUDA = [pytest.mark.cuda, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]

# Model sizes: small enough for seconds per test, large enough that every kernel family runs (GQA attention in
# space and time layers, registers, several action components).
N, C, CARDS, S = 16, 16, [5, 3], 8


@pytest.fixture(scope="session")
def device() -> torch.device:
    dev = torch.device(DEVICE_NAME)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def config(*overrides: str):
    """The project's resolved Config with ``--set``-style overrides (phase settings, model sizes)."""
    return load([], list(overrides))


def runtime(device: torch.device) -> Runtime:
    return Runtime(cfg=config(), device=device)


def dyn_cfg(**kw) -> DynamicsConfig:
    base = {"d_model": 64, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "num_registers": 2, "time_every": 2,
            "max_time": 24, "k_max": 16, "sample_steps": 4, "bootstrap_fraction": 0.5}
    base.update(kw)
    return DynamicsConfig(**base)


def make_dynamics(device, seed: int = 0, **kw) -> DynamicsModel:
    torch.manual_seed(seed)
    return DynamicsModel(dyn_cfg(**kw), N, C, CARDS, S).to(device)


def make_agent(device, seed: int = 0, **kw) -> Agent:
    torch.manual_seed(seed)
    base = {"d_model": 64, "num_layers": 2, "num_heads": 4, "max_time": 24, "mlp_hidden": 128, "head_hidden": 64,
            "num_bins": 41}
    cfg = AgentConfig(**{**base, **kw})
    agent = Agent(cfg, N, C, CARDS, S).to(device)
    with torch.no_grad():  # non-zero reward / value outputs of a few units, as after phase 2: the logits peak near
        # the zero bin (logits spread over all bins would decode to ~symexp(20) = 5e8, where bf16 rounding of a
        # logit moves the value by millions and no comparison of bf16 results means anything)
        centre = torch.linspace(-1.0, 1.0, cfg.num_bins, device=device).abs()
        for head in (agent.reward, agent.value):
            head.mlp.out.weight.normal_(0, 0.05)
            head.mlp.out.bias.copy_(-40.0 * centre)
    return agent


def make_batch(device, b: int = 4, t: int = 6, seed: int = 0) -> dict:
    """A ClipSampler-style batch: standardised latents, cache-aligned actions, masks, rewards, continues."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, S, dtype=torch.bool)
    mask[:, -1] = False  # the last latent of an episode: an all-False row
    batch = {
        "latents": torch.randn(b, t, N, C, generator=g),
        "actions": torch.stack([torch.randint(0, c, (b, t, S), generator=g) for c in CARDS], -1),
        "action_mask": mask,
        "rewards": torch.randint(-1, 2, (b, t), generator=g).float(),
        "continues": torch.ones(b, t),
    }
    out = {k: v.to(device) for k, v in batch.items()}
    out["provenance"] = [("synthetic", i) for i in range(b)]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainable(*modules: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {f"{i}.{n}": p for i, m in enumerate(modules) for n, p in m.named_parameters() if p.requires_grad}


def assert_finite_grads(params: dict[str, torch.nn.Parameter]) -> None:
    """Every trainable parameter holds a gradient, all of it finite, and they are not all zero."""
    assert params, "no trainable parameters"
    missing = [n for n, p in params.items() if p.grad is None]
    assert not missing, f"trainable parameters without a gradient: {missing}"
    bad = [n for n, p in params.items() if not bool(torch.isfinite(p.grad).all())]
    assert not bad, f"non-finite gradients: {bad}"
    assert any(float(p.grad.abs().sum()) > 0 for p in params.values()), "every gradient is zero"
