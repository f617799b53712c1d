"""Phase 0's auxiliary state head (``phase0.state_weight``, docs/tokenizer.md "Objectives that keep the sprites").

Fitting by MSE alone spends the pooled latent on what dominates the squared error (terrain colours) and paints
trees, cows and tables as grass. When the episodes record Crafter's state (the extras ``local_view``,
``inventory`` and ``facing`` of dreamer/envs/collect.py), a small head reads each pooled latent z_k and predicts
the state of the frame that latent ends on (frame S·k): the semantic id of every one of the 9 × 7 view cells,
every inventory count (0-9) and the facing. Its cross-entropy, weighted by ``phase0.state_weight``, is added to
the reconstruction loss, so the encoder must keep what the state is made of. The state is a TRAINING SIGNAL
here, never an input: the fitted tokenizer still encodes pixels only, and the head exists only during phase 0
(checkpointed for resume, never saved with the tokenizer).

Shapes: z_btnc (B, T_lat, N, C); targets view_btv (B, T_lat, 63) ids, inventory_bti (B, T_lat, 16) counts,
facing_bt (B, T_lat) in 0-3, state_mask_bt (B, T_lat) (False: a latent past the episode end).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dreamer.tokenizer.cosmos import latent_steps
from dreamer.tokenizer.crafter_state import FACINGS, INVENTORY_NAMES, SEMANTIC_NAMES, VIEW_TOKENS

COUNTS = 10  # an inventory count is a class 0-9
STATE_EXTRAS = ("local_view", "inventory", "facing")


def latent_state_targets(extras: dict, num_frames: int, S: int, source: str = "episode") -> dict[str, np.ndarray]:
    """The state of the frame each latent step ends on (frame S·k, clipped to the last), from an episode's extras.

    Returns view (L, 63) int64 (cell 9·row + col, as the crafter_state tokens), inventory (L, 16) int64 clipped to
    0-9, facing (L,) int64 (index into FACINGS), state_mask (L,) True. An episode without the extras is refused."""
    missing = [k for k in STATE_EXTRAS if k not in extras]
    if missing:
        raise KeyError(f"{source}: no extras {missing}; phase0.state_weight needs Crafter episodes that record the "
                       f"state (collect them again), or set phase0.state_weight=0")
    L = latent_steps(num_frames, S)
    frames = np.minimum(np.arange(L) * S, len(extras["inventory"]) - 1)
    view = np.asarray(extras["local_view"])[frames]  # (L, 9 cols, 7 rows) -> token 9·row + col
    view = view.transpose(0, 2, 1).reshape(L, VIEW_TOKENS).astype(np.int64)
    inv = np.clip(np.asarray(extras["inventory"])[frames], 0, COUNTS - 1).astype(np.int64)
    lookup = {f: i for i, f in enumerate(FACINGS)}
    facing = np.array([lookup.get((int(x), int(y)), 3) for x, y in np.asarray(extras["facing"])[frames]], np.int64)
    return {"view": view, "inventory": inv, "facing": facing, "state_mask": np.ones(L, dtype=bool)}


def state_targets(paths: list[Path], S: int) -> dict[str, dict[str, np.ndarray]]:
    """name → :func:`latent_state_targets` of every episode file."""
    from dreamer.data.episode import load_episode

    out = {}
    for p in paths:
        ep = load_episode(p)
        out[Path(p).stem] = latent_state_targets(ep.extras, len(ep.frames), S, str(p))
    return out


class StateHead(nn.Module):
    """The state of latent step k from the pooled latent z_k, read LINEARLY: what a linear map reads, every later
    reader (the dynamics, the agent, the probe) can read too. A hidden layer of width h would carry at most h of the
    63 × 18 independent directions the view's cells need (a 256-wide one read 0.41 of the cells of a latent that
    held them all).

    ``cell_tokens`` False: everything from the flattened, layer-normalised N·C numbers (any token grid).
    ``cell_tokens`` True (a grid-aligned tokenizer, ``tokenizer.crop``: a 9-wide token grid whose first 63 tokens are
    the 9 × 7 view cells, row-major as the crafter_state tokens): each view cell's id from its own token alone, one
    linear map shared by all cells plus a bias per cell, so each token must hold its cell (63 labels per latent for
    16 × 19 weights, where the flattened read-out has 1,024 × 1,197); inventory and facing as above.
    forward → logits view (B, T, 63, 19), inventory (B, T, 16, 10), facing (B, T, 4)."""

    def __init__(self, num_tokens: int, channels: int, cell_tokens: bool = False):
        super().__init__()
        if cell_tokens and num_tokens < VIEW_TOKENS:
            raise ValueError(f"a state head on cell tokens needs >= {VIEW_TOKENS} tokens, got {num_tokens}")
        self.cell_tokens = cell_tokens
        ids = len(SEMANTIC_NAMES)
        self.sizes = (0 if cell_tokens else VIEW_TOKENS * ids, len(INVENTORY_NAMES) * COUNTS, len(FACINGS))
        self.norm = nn.LayerNorm(num_tokens * channels)
        self.out = nn.Linear(num_tokens * channels, sum(self.sizes))
        if cell_tokens:
            self.cell_norm = nn.LayerNorm(channels)
            self.cell = nn.Linear(channels, ids)
            self.cell_bias = nn.Parameter(torch.zeros(VIEW_TOKENS, ids))

    def forward(self, z_btnc: torch.Tensor) -> dict[str, torch.Tensor]:
        B, T = z_btnc.shape[:2]
        z = z_btnc.float()
        view, inv, facing = self.out(self.norm(z.flatten(2))).split(self.sizes, dim=-1)
        if self.cell_tokens:
            view = self.cell(self.cell_norm(z[:, :, :VIEW_TOKENS])) + self.cell_bias
        return {"view": view.reshape(B, T, VIEW_TOKENS, len(SEMANTIC_NAMES)),
                "inventory": inv.reshape(B, T, len(INVENTORY_NAMES), COUNTS), "facing": facing}


def view_class_weights(targets: dict[str, dict[str, np.ndarray]], names: list[str], power: float) -> torch.Tensor | None:
    """(ids,) weights of the view cells' cross-entropy: each semantic id's share of the cells of the episodes
    ``names`` (``targets`` from :func:`state_targets`) to the power −``power``, normalised so that the weighted mean
    over those cells is 1. An id never seen there gets the weight of the rarest seen one. None when power is 0."""
    if power == 0:
        return None
    ids = len(SEMANTIC_NAMES)
    counts = np.zeros(ids)
    for n in names:
        counts += np.bincount(targets[n]["view"].reshape(-1), minlength=ids)[:ids]
    share = counts / max(counts.sum(), 1)
    seen = share > 0
    if not seen.any():
        return torch.ones(ids)
    w = np.where(seen, share, share[seen].min()) ** -power
    return torch.tensor(w / (share * w).sum(), dtype=torch.float32)


def state_loss(logits: dict[str, torch.Tensor], batch: dict,
               view_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over the valid latents: view cells + inventory counts + facing (each a mean over its
    entries, summed; the view cells weighted per id by ``view_weight`` (:func:`view_class_weights`), a weighted
    mean). Returns (loss, figures: the loss and the batch's accuracies)."""
    mask = batch["state_mask"].reshape(-1)
    terms, figures = [], {}
    for key in ("view", "inventory", "facing"):
        lg, y = logits[key], batch[key]
        lg = lg.reshape(mask.shape[0], -1, lg.shape[-1])[mask]  # (n, entries, classes)
        y = y.reshape(mask.shape[0], -1)[mask]
        w = view_weight.to(lg.device) if key == "view" and view_weight is not None else None
        terms.append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), y.reshape(-1), weight=w) if len(y)
                     else lg.sum() * 0)
        figures[f"state_{key}_accuracy"] = float((lg.argmax(-1) == y).float().mean()) if len(y) else float("nan")
    loss = sum(terms)
    figures["state"] = float(loss.detach())
    return loss, figures


@torch.no_grad()
def heldout_state_accuracy(head: StateHead, z_batches: list[tuple[torch.Tensor, dict]]) -> dict[str, float]:
    """The head's accuracy on held-out latents: (z_btnc, batch) pairs → state_{view,inventory,facing}_accuracy."""
    hits: dict[str, list[float]] = {}
    was = head.training
    head.eval()
    for z, batch in z_batches:
        _, m = state_loss(head(z), batch)
        for k, v in m.items():
            if k != "state":
                hits.setdefault(k, []).append(v)
    head.train(was)
    return {k: float(np.nanmean(v)) for k, v in hits.items()}
