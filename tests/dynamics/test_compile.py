"""torch.compile on the CPU (phase1.compile, phase3.compile) gives the eager results: the shortcut loss and every
gradient of a compiled model (student and teacher passes, the rows of the teacher changing from batch to batch), and a
KV-cached rollout through a compiled ``forward_into`` with symbolic sizes. The model is tiny so that the compiles take
seconds; tests/cuda/test_cuda_compile.py does the same on the GPU (and rehearses on the CPU)."""

from __future__ import annotations

import shutil

import pytest
import torch

from dreamer.dynamics import ShortcutForcingLoss, rollout, sample_tau_step
from dreamer.errors import ConfigError
from dreamer.training.runtime import compiled

from .conftest import tiny_batch, tiny_model

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on the CPU needs a C++ compiler")
CPU = torch.device("cpu")
TIGHT = {"rtol": 1e-4, "atol": 1e-5}


def _loss_and_grads(net, model, loss_fn, z, acts, mask, seed: int):
    g = torch.Generator().manual_seed(seed)
    tau, step = sample_tau_step(model.cfg, z.shape[0], z.shape[1], CPU, g)
    z0 = torch.randn(z.shape, generator=g)
    model.zero_grad(set_to_none=True)
    loss, _ = loss_fn(net, z, acts, mask, tau_idx_bt=tau, step_idx_bt=step, z0_btnc=z0)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_training_step_equals_eager():
    model = tiny_model(num_layers=2, action_routing=True)
    net = compiled(model, CPU, key="phase1.compile")
    loss_fn = ShortcutForcingLoss(model.cfg).eval()  # frozen running RMS: both see the same normaliser
    z, acts, mask = tiny_batch(b=4, t=5)
    for seed in (0, 1, 2):  # other bootstrap rows each time: the teacher's batch size changes
        l_eager, g_eager = _loss_and_grads(model, model, loss_fn, z, acts, mask, seed)
        l_comp, g_comp = _loss_and_grads(net, model, loss_fn, z, acts, mask, seed)
        torch.testing.assert_close(l_comp, l_eager, **TIGHT)
        assert g_comp.keys() == g_eager.keys() and len(g_eager) == len(list(model.parameters()))
        for k in g_eager:
            torch.testing.assert_close(g_comp[k], g_eager[k], msg=k, **TIGHT)


def test_compiled_kv_rollout_equals_eager():
    model = tiny_model(num_layers=2, action_routing=True).eval()
    step = compiled(model.forward_into, CPU, dynamic=True, key="phase3.compile")
    z, acts, mask = tiny_batch(b=2, t=9)
    mask[:] = True
    runs = [rollout(model, z[:, :3], acts[:, :3], mask[:, :3], acts[:, 2:8], mask[:, 2:8],
                    generator=torch.Generator().manual_seed(3), forward_into=fi) for fi in (None, step)]
    torch.testing.assert_close(runs[1], runs[0], **TIGHT)


def test_compile_without_a_compiler_is_refused_by_key(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"phase1\.compile=true on the CPU needs a C\+\+ compiler"):
        compiled(tiny_model(), CPU, key="phase1.compile")


def test_kv_cached_step_compiles_without_graph_breaks():
    """fullgraph=True raises at a graph break. Once, the uncached prefill's `is_causal=n > 1` was a SymBool under
    dynamic=True (with batch == context, as here), which SDPA refuses: every layer of the compiled step fell back."""
    model = tiny_model(num_layers=2).eval()
    step = torch.compile(model.forward_into, dynamic=True, fullgraph=True)
    z, acts, mask = tiny_batch(b=4, t=7)
    mask[:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as phase 3 with bf16
        rollout(model, z[:, :4], acts[:, :4], mask[:, :4], acts[:, 3:6], mask[:, 3:6],
                generator=torch.Generator().manual_seed(0), forward_into=step)
