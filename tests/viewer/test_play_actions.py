"""diagnostics.play_actions: through the play page's API, a world model that follows its actions is told from one
that ignores them. The world is the crafter_state reference (its decoder draws the cells, so a moved view shows)."""

from __future__ import annotations

import pytest
import torch

from diagnostics import play_actions
from dreamer.dynamics import DynamicsModel
from dreamer.viewer.load import World
from dreamer.viewer.session import PlaySession

ROWS, COLS = 7, 9  # the view cells are tokens 9 * row + col


@pytest.fixture(scope="module")
def state_world(state_world_parts):
    cfg, tok, cache, path = state_world_parts(20, 3)
    return {"cfg": cfg, "tok": tok, "cache": cache, "path": path}


def _world(w, moves: bool) -> World:
    torch.manual_seed(0)
    model = DynamicsModel(w["cfg"].dynamics, w["tok"].num_tokens, w["tok"].channels, list(w["cache"].action_space.cards), 1)
    with torch.no_grad():
        model.action_emb.weight.zero_()  # the action reaches the model through the routing maps alone
        model.latent_in.weight.copy_(torch.eye(32, w["tok"].channels) * 5)
        model.latent_out.weight.copy_(torch.eye(w["tok"].channels, 32))
        model.latent_out.bias.zero_()
        if moves:  # a hand-made world model: noop keeps the view, move_left / move_right scroll it one cell
            for p in model.blocks.parameters():
                p.zero_()  # the residual stream carries the routed tokens to the output unchanged
            model.routing[0] = torch.eye(model.num_tokens) * 20.0
            for action, dc in ((1, -1), (2, 1)):
                for r in range(ROWS):
                    for c in range(COLS):
                        src = c + dc
                        if 0 <= src < COLS:
                            model.routing[action, COLS * r + c, COLS * r + src] = 20.0
    return World(w["path"], w["cfg"], w["tok"], w["cache"], model.eval(), None, torch.device("cpu"))


def _contrast(world, seed=0):
    session = PlaySession(world, context=2, seed=seed)
    with play_actions.serving(session) as url:
        return play_actions.action_contrast(url, play_actions.pick_starts(session, 3, seed), presses=4)


def test_a_model_blind_to_actions_scores_about_one(state_world):
    out = _contrast(_world(state_world, moves=False))
    assert out["noise_differ"] > 0  # two noop dreams differ by the sampler's noise
    assert not out["ok"] and out["contrast"] < play_actions.MIN_CONTRAST, out
    assert "WARNING" in play_actions.line(out)


def test_a_model_driven_by_actions_passes(state_world):
    out = _contrast(_world(state_world, moves=True))
    assert out["ok"] and out["contrast"] >= play_actions.MIN_CONTRAST, out
    assert "follows the actions" in play_actions.line(out)


def test_cli_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="play_actions: .*nothing.pt"):
        play_actions.main(["--checkpoint", str(tmp_path / "nothing.pt")])
