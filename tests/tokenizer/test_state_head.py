"""Phase 0's auxiliary state head: the targets line up with the crafter_state layout, and the head learns."""

import numpy as np
import pytest
import torch

from dreamer.tokenizer.crafter_state import FACINGS, PLAYER_TOKEN
from dreamer.tokenizer.state_head import StateHead, latent_state_targets, state_loss


def _extras(T: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"local_view": rng.integers(0, 19, (T, 9, 7)).astype(np.int16),
            "inventory": rng.integers(0, 15, (T, 16)).astype(np.int32),
            "facing": np.array([FACINGS[i % 4] for i in range(T)], np.int8)}


def test_targets_follow_the_state_tokens_layout_and_the_latent_frames():
    ex = _extras(11)
    t = latent_state_targets(ex, num_frames=11, S=4)  # latents end on frames 0, 4, 8, 10 (clipped)
    assert t["view"].shape == (4, 63) and t["inventory"].shape == (4, 16) and t["state_mask"].all()
    for k, f in enumerate((0, 4, 8, 10)):
        assert t["view"][k, PLAYER_TOKEN] == ex["local_view"][f, 4, 3]  # token 9·row + col = local_view[col, row]
        assert t["view"][k, 9 * 2 + 7] == ex["local_view"][f, 7, 2]
        assert (t["inventory"][k] == np.clip(ex["inventory"][f], 0, 9)).all()
        assert FACINGS[t["facing"][k]] == tuple(ex["facing"][f])
    with pytest.raises(KeyError, match="ep.npz.*inventory"):
        latent_state_targets({"local_view": ex["local_view"], "facing": ex["facing"]}, 11, 1, "ep.npz")


def _walk_extras(T: int, seed: int) -> dict:
    """A player walking over one fixed random 24 × 20 world: the view is the 9 × 7 window at its position."""
    rng = np.random.default_rng(seed)
    world = rng.integers(0, 19, (24, 20))
    pos = np.stack([np.cumsum(rng.integers(-1, 2, T)) % 15, np.cumsum(rng.integers(-1, 2, T)) % 13], 1)
    return {"local_view": np.stack([world[x : x + 9, y : y + 7] for x, y in pos]).astype(np.int16),
            "inventory": np.repeat(pos[:, :1] % 10, 16, axis=1).astype(np.int32),
            "facing": np.array([FACINGS[i % 4] for i in range(T)], np.int8)}


def test_the_head_reads_a_state_that_the_latent_carries():
    """Latents that hold the state (a token per view cell and per inventory item, its one-hot mixed by a fixed
    random rotation): a few dozen steps of the head alone read it on held-out steps; from latents that are noise
    (which it can memorise) it reads nothing held out. The loss can fail."""
    torch.manual_seed(0)
    T, n_fit = 1000, 850
    t = {k: torch.from_numpy(v)[None] for k, v in latent_state_targets(_walk_extras(T, seed=1), T, 1).items()}
    tokens = torch.cat([torch.nn.functional.one_hot(t["view"], 19),
                        torch.nn.functional.pad(torch.nn.functional.one_hot(t["inventory"], 10), (0, 9))], 2).float()
    carried = tokens @ torch.linalg.qr(torch.randn(19, 19))[0]  # (1, T, 79 tokens, 19 channels)
    fit, held = ({k: v[:, sl] for k, v in t.items()} for sl in (slice(0, n_fit), slice(n_fit, None)))
    accs = []
    for z in (carried, torch.randn_like(carried)):
        head = StateHead(79, 19)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3)
        for _ in range(60):
            loss, train = state_loss(head(z[:, :n_fit]), fit)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accs.append(state_loss(head(z[:, n_fit:]), held)[1])
    assert train["state_view_accuracy"] > 0.8  # the noise is memorised...
    assert accs[0]["state_view_accuracy"] > 0.95 and accs[0]["state_inventory_accuracy"] > 0.95
    assert accs[1]["state_view_accuracy"] < 0.2 and accs[1]["state_inventory_accuracy"] < 0.3  # ...chance held out


def test_on_cell_tokens_each_view_cell_is_read_from_its_own_token():
    """cell_tokens: a view cell's logits depend on its own token only (a grid-aligned tokenizer must hold the
    cell there); the inventory still reads every token."""
    head = StateHead(81, 16, cell_tokens=True)
    z = torch.randn(1, 1, 81, 16, requires_grad=True)
    out = head(z)
    out["view"][0, 0, 40].sum().backward()
    touched = z.grad[0, 0].abs().sum(-1) > 0
    assert touched[40] and touched.sum() == 1
    z.grad = None
    head(z)["inventory"][0, 0, 3].sum().backward()
    assert (z.grad[0, 0].abs().sum(-1) > 0).sum() > 1
    with pytest.raises(ValueError, match="63 tokens"):
        StateHead(16, 16, cell_tokens=True)


def test_view_class_weights_favour_rare_ids_and_keep_the_loss_scale():
    """phase0.state_class_power: id weights share^-power, a weighted mean of 1 over the cells; power 0 is the plain
    loss; a head that misses only the rare cells pays more with the weights than without."""
    from dreamer.tokenizer.state_head import view_class_weights

    view = np.full((50, 63), 2, np.int64)  # grass everywhere
    view[:, 0] = 14  # one cow cell per latent: 1 / 63 of the cells
    targets = {"a": {"view": view}}
    assert view_class_weights(targets, ["a"], 0.0) is None
    w = view_class_weights(targets, ["a"], 0.5)
    share = np.bincount(view.reshape(-1), minlength=19) / view.size
    assert abs(float((torch.tensor(share, dtype=torch.float32) * w).sum()) - 1) < 1e-5
    assert w[14] / w[2] == pytest.approx((62 / 1) ** 0.5, rel=1e-4)
    assert w[0] == pytest.approx(float(w[14]))  # never seen: the rarest seen id's weight

    B, T = 2, 3
    batch = {"view": torch.from_numpy(view[: B * T]).view(B, T, 63), "inventory": torch.zeros(B, T, 16, dtype=torch.long),
             "facing": torch.zeros(B, T, dtype=torch.long), "state_mask": torch.ones(B, T, dtype=torch.bool)}
    logits = {"view": torch.zeros(B, T, 63, 19), "inventory": torch.zeros(B, T, 16, 10), "facing": torch.zeros(B, T, 4)}
    logits["view"][..., 2] = 5.0  # grass everywhere: right on 62 cells, wrong on the cow
    plain, _ = state_loss(logits, batch)
    weighted, _ = state_loss(logits, batch, w)
    assert weighted > plain
