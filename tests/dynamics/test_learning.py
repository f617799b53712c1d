"""Phase 1 must learn where the answer is known (docs/design.md §4, "What phase 1 needs").

Synthetic latents whose next step is fully determined (dreamer.data.synthetic.scrolling_latents), a few hundred
steps of the real model and loss, judged by the held-out figures phase 1 logs: open-loop error against copying
the last latent, and the action-shuffle ratio. A dynamics model whose time path or action path is broken (actions
misaligned with the latents, a mask that drops them, a causal mask that hides the context) fails here.
"""

from __future__ import annotations

import pytest
import torch

from dreamer.data.synthetic import scrolling_latents
from dreamer.dynamics import DynamicsConfig, DynamicsModel, ShortcutForcingLoss, heldout_metrics, verdict

GRID, C = 4, 8


def train(kind: str, steps: int, seed: int = 0, routing: str | None = "shared") -> dict[str, float]:
    """``routing``: None (the paper's design), or what the action's maps move (dynamics.routing_input)."""
    torch.manual_seed(seed)
    cfg = DynamicsConfig(d_model=32, num_layers=4, num_heads=2, num_kv_heads=1, num_registers=1, max_time=8,
                         k_max=16, bootstrap_fraction=0.0, action_routing=routing is not None,
                         routing_input=routing or "shared")
    model = DynamicsModel(cfg, GRID * GRID, C, [5], 1)
    loss_fn = ShortcutForcingLoss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(steps):
        b = scrolling_latents(8, 6, GRID, C, seed=step, kind=kind)
        loss, _ = loss_fn(model, b["latents"], b["actions"], b["action_mask"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    val = scrolling_latents(32, 6, GRID, C, seed=10**6, kind=kind)
    return heldout_metrics(model, loss_fn, val, 2, horizons=(1, 2, 4), generator=torch.Generator().manual_seed(0))


def test_learns_to_copy_its_context():
    m = train("copy", 150)
    for h in (1, 2, 4):  # copy-last is exact here: the model must reproduce the context, not drift from it
        assert m[f"open_loop_mse_h{h}"] < 0.02, m


def test_learns_what_the_action_does():
    m = train("action_code", 150)
    ok, line = verdict(m, shuffle_min=5.0)
    assert ok, line
    for h in (1, 2, 4):
        assert m[f"open_loop_mse_h{h}"] < 0.05 * m[f"copy_last_mse_h{h}"], line


@pytest.mark.parametrize("routing", ["own", "shared", None])
def test_learns_an_action_that_moves_the_view(routing):
    """The view scrolls by the action: copy-last is wrong after every move. With action routing 300 steps put the
    one-step error below half of copy-last and every horizon below it; routing the previous step's own embedding
    goes further here (h 1 0.26-0.27x against 0.36-0.42x, two seeds each), though not on real latents, where the
    presets keep the shared one (docs/design.md §4).
    Without routing (the paper's design) the model learns no move at all in a CPU budget: 2,000 steps plateau at
    0.88x copy-last with a shuffle ratio of 1.22 -- this side asserts that the fault is still there, so a fix shows."""
    m = train("scroll", 300, routing=routing)
    ok, line = verdict(m, shuffle_min=1.5)
    if routing is None:
        assert not ok and m["open_loop_mse_h1"] > 0.8 * m["copy_last_mse_h1"], line
    else:
        bound = 0.35 if routing == "own" else 0.5
        assert ok and m["open_loop_mse_h1"] < bound * m["copy_last_mse_h1"], line


def test_scrolling_latents_answer_is_known():
    b = scrolling_latents(16, 5, GRID, C, seed=3)
    z = b["latents"].view(16, 5, GRID, GRID, C)
    a = b["actions"][:, :, 0, 0]
    from dreamer.data.synthetic import MOVES

    for t in range(1, 5):
        for i in range(16):
            dr, dc = MOVES[int(a[i, t - 1])]
            shifted = torch.roll(z[i, t - 1], shifts=(-dr, -dc), dims=(0, 1))
            # every token but the row / column that came into view is the shifted last latent
            keep = torch.ones(GRID, GRID, dtype=torch.bool)
            if dr:
                keep[-1 if dr > 0 else 0] = False
            if dc:
                keep[:, -1 if dc > 0 else 0] = False
            assert torch.equal(shifted[keep], z[i, t][keep])
    with pytest.raises(ValueError, match="kind"):
        scrolling_latents(2, 2, kind="teleport")


def test_verdict_says_what_fails():
    good = {"open_loop_mse_h1": 0.02, "copy_last_mse_h1": 0.05, "open_loop_mse_h2": 0.03, "copy_last_mse_h2": 0.06,
            "action_shuffle_ratio": 1.6}
    ok, line = verdict(good)
    assert ok and "h1 0.0200 vs copy-last 0.0500 (0.40x)" in line and "WARNING" not in line
    ok, line = verdict({**good, "open_loop_mse_h2": 0.12, "action_shuffle_ratio": 1.004})
    assert not ok and "NOT better than copying the last latent at h2" in line and "IGNORES the actions" in line
    assert not verdict({"action_shuffle_ratio": 2.0})[0]  # nothing measured is no pass
