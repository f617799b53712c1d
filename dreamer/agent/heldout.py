"""Phase-2 held-out figures on the cache's val split: BC accuracy and NLL against the majority-action
baseline, reward and continue errors, and the data's and the policy's actions for histograms.

Every val latent step is counted exactly once (:func:`heldout_clips`); the baseline's action
frequencies come from the training split (:func:`action_counts`).
"""

from __future__ import annotations

import numpy as np
import torch

from dreamer.tags import tag

from .model import Agent

MAX_HELDOUT_CLIPS = 512  # held-out figures use at most this many clips (evenly spread over the val split)


def action_counts(cache, names: list[str]) -> list[np.ndarray]:
    """How often each action of each component is taken at the valid sub-steps of ``names``: D arrays (card_d,)."""
    counts = [np.zeros(c, dtype=np.int64) for c in cache.action_space.cards]
    for n in names:
        e = cache.episode(n)
        valid = np.asarray(e.actions)[np.asarray(e.action_mask)]  # (V, D)
        for d, c in enumerate(counts):
            c += np.bincount(valid[:, d], minlength=len(c))
    return counts


def heldout_clips(cache, names: list[str], T: int) -> list[tuple[str, int, int, int]]:
    """(episode, start, length, first_counted) covering every latent step of ``names`` exactly once."""
    clips = []
    for n in names:
        L = len(cache.episode(n))
        for s in range(0, L, T):
            start = min(s, max(0, L - T))  # the last clip is shifted back to full length; count new rows only
            clips.append((n, start, min(T, L), s - start))
    if len(clips) > MAX_HELDOUT_CLIPS:
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, MAX_HELDOUT_CLIPS).round().astype(int)]
    return clips


def _stack(cache, part: list, key: str, length: int, device) -> torch.Tensor:
    """(B, length, ...) tensor of one cache array for the clips ``part`` [(episode, start, ...)]."""
    rows = [np.asarray(getattr(cache.episode(n), key)[s : s + length]) for n, s, *_ in part]
    return torch.from_numpy(np.stack(rows)).to(device)


@torch.no_grad()
def heldout(agent: Agent, cache, names: list[str], T: int, majority: np.ndarray, batch_size: int, device,
            gen: torch.Generator, rl=None) -> tuple[dict, dict]:
    """Held-out BC accuracy / NLL, majority-action accuracy, reward, continue and value figures; and the
    data's and the policy's (sampled) actions at the valid entries (V, D) for histograms.

    Reward: mean absolute error on the steps with a non-zero reward and on the others, next to the constant
    predictor 0 (the most common reward). Continue: accuracy next to the base rate (always the commoner
    answer) and the share of terminal steps predicted terminal. Value: correlation of the value head with
    the clips' λ-returns of the data (the behaviour policy's value, as phase 2 fits it; ``rl`` discounts)."""
    from .losses import data_value_loss

    agent.eval()
    sums = dict.fromkeys(("hit", "maj", "nll", "n", "rerr", "rerr_nz", "n_nz", "r_abs_nz", "cont", "rows", "term",
                          "term_hit"), 0.0)
    v_pairs: list[torch.Tensor] = []
    acts: dict[str, list] = {"data": [], "policy": []}
    maj = torch.as_tensor(majority, device=device)
    by_len: dict[int, list] = {}
    for c in heldout_clips(cache, names, T):
        by_len.setdefault(c[2], []).append(c)
    for length, group in by_len.items():
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            lat = cache.standardise(_stack(cache, part, "latents", length, device))  # (B, T, N, C)
            actions, mask = _stack(cache, part, "actions", length, device), _stack(cache, part, "action_mask", length, device)
            rewards, continues = (_stack(cache, part, k, length, device) for k in ("rewards", "continues"))
            keep = torch.stack([torch.arange(length, device=device) >= f for *_, f in part])  # (B, T) rows counted
            valid = (mask & keep[..., None])[..., None].expand(actions.shape)  # (B, T, S, D)
            h = agent.trunk(lat)
            dist = agent.policy(h)
            err = (agent.reward.predict(h) - rewards).abs()
            nonzero = keep & (rewards != 0)
            sums["hit"] += ((dist.mode() == actions) & valid).sum().item()
            sums["maj"] += ((actions == maj) & valid).sum().item()
            sums["nll"] -= dist.entry_log_probs(actions, mask)[valid].sum().item()
            sums["n"] += valid.sum().item()
            sums["rerr"] += err[keep].sum().item()
            sums["rerr_nz"] += err[nonzero].sum().item()
            sums["n_nz"] += nonzero.sum().item()
            sums["r_abs_nz"] += rewards[nonzero].abs().sum().item()
            cont_pred = agent.cont(h) > 0
            sums["cont"] += (cont_pred == (continues > 0.5))[keep].sum().item()
            terminal = keep & (continues < 0.5)
            sums["term"] += terminal.sum().item()
            sums["term_hit"] += (~cont_pred & terminal).sum().item()
            sums["rows"] += keep.sum().item()
            if rl is not None and length > 1:
                _, v, ret = data_value_loss(agent, h, rewards.float(), continues.float(), rl)
                v_pairs.append(torch.stack([v[:, :-1][keep[:, :-1]], ret[keep[:, :-1]]]))
            acts["data"].append(actions[valid].view(-1, actions.shape[-1]).cpu())
            acts["policy"].append(dist.sample(gen)[valid].view(-1, actions.shape[-1]).cpu())
    agent.train()
    n, rows = max(sums["n"], 1.0), max(sums["rows"], 1.0)
    zero_rows = max(rows - sums["n_nz"], 1.0)
    base = sums["term"] / rows
    metrics = {"bc_accuracy": sums["hit"] / n, "majority_accuracy": sums["maj"] / n, "bc_nll": sums["nll"] / n,
               "reward_mae": sums["rerr"] / rows, "reward_mae_zero": (sums["rerr"] - sums["rerr_nz"]) / zero_rows,
               "continue_accuracy": sums["cont"] / rows, "continue_base_rate_accuracy": max(base, 1 - base),
               "entries": sums["n"]}
    if sums["n_nz"]:
        metrics["reward_mae_nonzero"] = sums["rerr_nz"] / sums["n_nz"]
        metrics["reward_mae_nonzero_constant"] = sums["r_abs_nz"] / sums["n_nz"]  # the constant predictor 0
    if sums["term"]:
        metrics["continue_terminal_recall"] = sums["term_hit"] / sums["term"]
    if v_pairs:
        vr = torch.cat(v_pairs, 1)
        metrics["value_return_corr"] = float(torch.corrcoef(vr)[0, 1].nan_to_num(0.0)) if vr.shape[1] > 1 else 0.0
        metrics["value_abs_error"] = float((vr[0] - vr[1]).abs().mean())
    return metrics, {k: torch.cat(v) if v else torch.zeros(0, len(majority), dtype=torch.long) for k, v in acts.items()}


def log_histograms(writer, names: tuple[str, ...], acts: dict, step: int, phase: int = 2) -> None:
    """One TensorBoard histogram per action component and source (``acts`` from :func:`heldout`):
    ``eval/<phase>/actions/<component>/<source>``."""
    if writer is None:
        return
    for d, name in enumerate(names):
        for who, a_vd in acts.items():
            if a_vd.numel():
                writer.add_histogram(tag("eval", phase, f"actions/{name}/{who}"), a_vd[:, d].float(), step)
