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


def train(kind: str, steps: int, seed: int = 0, routing: str | None = "shared", gate: bool = False,
          context_fraction: float = 0.0) -> dict[str, float]:
    """``routing``: None (the paper's design), or what the action's maps move (dynamics.routing_input); ``gate`` and
    ``context_fraction``: dynamics.routing_gate and dynamics.context_fraction."""
    torch.manual_seed(seed)
    cfg = DynamicsConfig(d_model=32, num_layers=4, num_heads=2, num_kv_heads=1, num_registers=1, max_time=8,
                         k_max=16, bootstrap_fraction=0.0, action_routing=routing is not None,
                         routing_input=routing or "shared", routing_gate=gate, context_fraction=context_fraction)
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


@pytest.mark.parametrize("routing", ["shared", None])
def test_learns_an_action_that_moves_the_view(routing):
    """The view scrolls by the action: copy-last is wrong after every move. With action routing 300 steps put the
    one-step error below half of copy-last and every horizon below it. (Routing the previous step's own embedding
    went further here, h 1 0.26-0.27x against 0.36-0.42x over two seeds each, but not on real latents, where the
    presets keep the shared one: docs/design.md §4. It is not rerun here, to keep this file within a minute.)
    Without routing (the paper's design) the model learns no move at all in a CPU budget: 2,000 steps plateau at
    0.88x copy-last with a shuffle ratio of 1.22 -- this side asserts that the fault is still there, so a fix shows."""
    m = train("scroll", 300 if routing else 150, routing=routing)  # the fault shows in half the steps
    ok, line = verdict(m, shuffle_min=1.5)
    if routing is None:
        assert not ok and m["open_loop_mse_h1"] > 0.8 * m["copy_last_mse_h1"], line
    else:
        assert ok and m["open_loop_mse_h1"] < 0.5 * m["copy_last_mse_h1"], line


@pytest.mark.parametrize("gate", [True, False])
def test_learns_an_action_that_may_not_take_effect(gate):
    """A move into a wall does not move the view (``blocked``), as in Crafter: the next latent is still determined by
    the last one and the action, but each move now has two possible outcomes. Routing alone does not learn it: 300
    steps stay at 0.92-1.00x copy-last at h 1 (two seeds; 0.98x after 900 with context_fraction 0.5), and the model
    blends the two futures token by token.
    With the routing gate, which reads from the previous step whether the action takes effect, and half of the
    positions trained on clean contexts (context_fraction 0.5), h 1 falls to 0.35-0.36x (two seeds; 0.39-0.45x
    with the gate alone). The side without the gate asserts the fault is still there, so a fix shows."""
    m = train("blocked", 300 if gate else 150, routing="shared", gate=gate, context_fraction=0.5 if gate else 0.0)
    ok, line = verdict(m, shuffle_min=1.5)
    if gate:
        assert ok and m["open_loop_mse_h1"] < 0.5 * m["copy_last_mse_h1"], line
    else:
        assert m["open_loop_mse_h1"] > 0.8 * m["copy_last_mse_h1"], line


def _scrolled(view, dr: int, dc: int):
    """The view moved by (dr, dc), and which tokens it fixes: every one but the row / column that came into view."""
    keep = torch.ones(GRID, GRID, dtype=torch.bool)
    if dr:
        keep[-1 if dr > 0 else 0] = False
    if dc:
        keep[:, -1 if dc > 0 else 0] = False
    return torch.roll(view, shifts=(-dr, -dc), dims=(0, 1)), keep


def test_scrolling_latents_answer_is_known():
    b = scrolling_latents(16, 5, GRID, C, seed=3)
    z = b["latents"].view(16, 5, GRID, GRID, C)
    a = b["actions"][:, :, 0, 0]
    from dreamer.data.synthetic import MOVES

    for t in range(1, 5):
        for i in range(16):
            dr, dc = MOVES[int(a[i, t - 1])]
            shifted, keep = _scrolled(z[i, t - 1], dr, dc)
            assert torch.equal(shifted[keep], z[i, t][keep])
    with pytest.raises(ValueError, match="kind"):
        scrolling_latents(2, 2, kind="teleport")


def test_blocked_latents_stay_exactly_when_the_move_meets_a_wall():
    from dreamer.data.synthetic import MOVES, material_codes

    b = scrolling_latents(32, 6, GRID, C, seed=4, kind="blocked")
    z = b["latents"].view(32, 6, GRID, GRID, C)
    a = b["actions"][:, :, 0, 0]
    wall = torch.from_numpy(material_codes(6, C))[0]  # material 0
    moves = stays = 0
    for t in range(1, 6):
        for i in range(32):
            dr, dc = MOVES[int(a[i, t - 1])]
            if (dr, dc) == (0, 0):
                continue
            blocked = torch.equal(z[i, t - 1, GRID // 2 + dr, GRID // 2 + dc], wall)
            same = torch.equal(z[i, t], z[i, t - 1])
            shifted, keep = _scrolled(z[i, t - 1], dr, dc)
            assert same if blocked else torch.equal(shifted[keep], z[i, t][keep])
            moves, stays = moves + 1, stays + blocked
    assert 0 < stays < moves  # both outcomes occur


def test_verdict_says_what_fails():
    good = {"open_loop_mse_h1": 0.02, "copy_last_mse_h1": 0.05, "open_loop_mse_h2": 0.03, "copy_last_mse_h2": 0.06,
            "action_shuffle_ratio": 1.6}
    ok, line = verdict(good)
    assert ok and "h1 0.0200 vs copy-last 0.0500 (0.40x)" in line and "WARNING" not in line
    ok, line = verdict({**good, "open_loop_mse_h2": 0.12, "action_shuffle_ratio": 1.004})
    assert not ok and "NOT better than copying the last latent at h2" in line and "IGNORES the actions" in line
    assert not verdict({"action_shuffle_ratio": 2.0})[0]  # nothing measured is no pass
