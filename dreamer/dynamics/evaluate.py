"""Held-out quality of the dynamics model against training-free baselines (docs/design.md §4).

`heldout_metrics(model, loss_fn, batch, context_len)` returns floats:
* loss_true / loss_shuffled / action_shuffle_ratio: unnormalised shortcut loss (metrics["total"]) with
  the true action chunks and with the chunks (and masks) rolled by one row across the batch, on the SAME
  tau / d / noise draws.  ratio > 1 means the model uses the actions (needs B >= 2, else NaN).
* open_loop_mse_h{h} and copy_last_mse_h{h} for h in horizons (<= T - context_len): mean squared error
  of the sampled latent at context_len-1+h against the truth, and of "copy the last context latent".
  h = 1 is the one-step error (also reported as one_step_mse / copy_last_one_step_mse).
"""

from __future__ import annotations

import torch

from .model import DynamicsModel
from .sampler import rollout
from .shortcut import ShortcutForcingLoss, sample_tau_step


@torch.no_grad()
def heldout_metrics(model: DynamicsModel, loss_fn: ShortcutForcingLoss, batch: dict, context_len: int,
                    horizons: tuple[int, ...] = (1, 2, 4, 8), generator: torch.Generator | None = None,
                    use_kv_cache: bool = True) -> dict[str, float]:
    for key in ("latents", "actions", "action_mask"):
        if key not in batch:
            raise KeyError(f"heldout_metrics: batch has no key {key!r}")
    z, acts, mask = batch["latents"].float(), batch["actions"], batch["action_mask"]
    b, t = z.shape[:2]
    if not 1 <= context_len < t:
        raise ValueError(f"heldout_metrics: context_len={context_len} must be in [1, T={t})")
    out: dict[str, float] = {}
    was_training = loss_fn.training
    loss_fn.eval()  # never update the running-RMS statistics on held-out data
    try:
        tau_idx, step_idx = sample_tau_step(loss_fn.cfg, b, t, z.device, generator, context_fraction=0.0)
        gd = generator.device if generator is not None else z.device
        z0 = torch.randn(z.shape, device=gd, generator=generator).to(z.device)
        _, m_true = loss_fn(model, z, acts, mask, tau_idx_bt=tau_idx, step_idx_bt=step_idx, z0_btnc=z0)
        _, m_shuf = loss_fn(model, z, acts.roll(1, 0), mask.roll(1, 0), tau_idx_bt=tau_idx,
                            step_idx_bt=step_idx, z0_btnc=z0)
    finally:
        loss_fn.train(was_training)
    out["loss_true"], out["loss_shuffled"] = m_true["total"], m_shuf["total"]
    out["action_shuffle_ratio"] = m_shuf["total"] / m_true["total"] if b >= 2 and m_true["total"] > 0 else float("nan")
    hs = [h for h in horizons if h <= t - context_len]
    if hs:
        hmax = max(hs)
        c = context_len
        gen = rollout(model, z[:, :c], acts[:, :c], mask[:, :c], acts[:, c - 1:c - 1 + hmax],
                      mask[:, c - 1:c - 1 + hmax], use_kv_cache=use_kv_cache, generator=generator)
        for h in hs:
            truth = z[:, c - 1 + h]
            out[f"open_loop_mse_h{h}"] = float((gen[:, h - 1] - truth).pow(2).mean())
            out[f"copy_last_mse_h{h}"] = float((z[:, c - 1] - truth).pow(2).mean())
        if 1 in hs:
            out["one_step_mse"] = out["open_loop_mse_h1"]
            out["copy_last_one_step_mse"] = out["copy_last_mse_h1"]
    return out


def verdict(metrics: dict[str, float], shuffle_min: float = 1.1) -> tuple[bool, str]:
    """A plain account of held-out figures from :func:`heldout_metrics`: (beats the baselines, one line).

    The world model passes when its open-loop error is below copying the last latent at EVERY horizon it was
    measured at and the action-shuffle ratio is at least ``shuffle_min`` (it uses the actions). The line lists
    each horizon as ``h1 0.052 vs copy-last 0.057 (0.91x)`` and names what fails.
    """
    hs = sorted(int(k.removeprefix("open_loop_mse_h")) for k in metrics if k.startswith("open_loop_mse_h"))
    parts, worse = [], []
    for h in hs:
        ol, cl = metrics[f"open_loop_mse_h{h}"], metrics.get(f"copy_last_mse_h{h}", float("nan"))
        ratio = ol / cl if cl > 0 else float("nan")
        parts.append(f"h{h} {ol:.4f} vs copy-last {cl:.4f} ({ratio:.2f}x)")
        if not ratio < 1.0:
            worse.append(f"h{h}")
    shuffle = metrics.get("action_shuffle_ratio", float("nan"))
    ok = bool(hs) and not worse and shuffle >= shuffle_min
    line = "open-loop error " + ("; ".join(parts) if parts else "not measured") + f"; action-shuffle ratio {shuffle:.3f}"
    problems = []
    if worse:
        problems.append(f"NOT better than copying the last latent at {', '.join(worse)}")
    if not shuffle >= shuffle_min:
        problems.append(f"it IGNORES the actions (shuffle ratio {shuffle:.3f} < {shuffle_min})")
    line += (": the world model beats copy-last and uses the actions" if ok
             else ": WARNING, " + " and ".join(problems) + " (docs/design.md §4, 'What phase 1 needs')")
    return ok, line
