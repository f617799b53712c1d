"""Phase-2 losses (docs/design.md §5): behaviour cloning (optionally focal), reward two-hot, continue BCE.

Batch format (docs/design.md §3): `latents` (B,T,N,C) float, `actions` int64 (B,T,S,D), `action_mask`
bool (B,T,S), `rewards` float (B,T) received on entering latent t, `continues` float (B,T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AgentConfig, RLConfig
from .model import Agent
from .policy import PolicyDist
from .rl import lambda_returns, value_loss

BATCH_KEYS = ("latents", "actions", "action_mask", "rewards", "continues")


def _entry_weights(mask_bts: Tensor | None, like_btsd: Tensor) -> Tensor:
    """(B,T,S,D) float weights: 1 on valid (sub-step, component) entries."""
    if mask_bts is None:
        return torch.ones_like(like_btsd, dtype=torch.float32)
    return mask_bts.to(torch.float32).unsqueeze(-1).expand(like_btsd.shape)


def bc_loss(
    dist: PolicyDist,
    actions_btsd: Tensor,
    mask_bts: Tensor | None,
    focal_gamma: float = 0.0,
) -> Tensor:
    """Behaviour-cloning loss of the policy distribution ``dist`` (over (B, T, S) chunks), a scalar.

    Per (sub-step, component) entry: CE = -log pi(a); focal variant (1 - pi(a))^gamma * CE (equal to
    CE at gamma = 0). The result is the MEAN over valid entries, i.e. over valid sub-steps x D
    components (so it is -mean log pi per entry). Masked sub-steps contribute nothing, whatever
    action they hold; with no valid entry at all the loss is 0 (still connected to the graph).
    """
    if focal_gamma < 0:
        raise ValueError(f"bc_loss: focal_gamma must be >= 0, got {focal_gamma}")
    logp = dist.entry_log_probs(actions_btsd, mask_bts)  # (B,T,S,D)
    ce = -logp
    if focal_gamma > 0:
        ce = (1.0 - logp.exp()).clamp(min=0.0).pow(focal_gamma) * ce
    w = _entry_weights(mask_bts, ce)
    return (ce * w).sum() / w.sum().clamp(min=1.0)


@torch.no_grad()
def bc_accuracy(dist: PolicyDist, actions_btsd: Tensor, mask_bts: Tensor | None) -> Tensor:
    """Fraction of valid (sub-step, component) entries whose most likely action is the action (scalar)."""
    correct = (dist.mode() == actions_btsd).float()
    w = _entry_weights(mask_bts, correct)
    return (correct * w).sum() / w.sum().clamp(min=1.0)


def check_batch(batch: dict[str, Tensor], agent: Agent) -> None:
    """Raise a clear error naming the key if the batch does not match the batch format (docs/design.md §3) / the agent."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"phase2 batch: missing key(s) {missing}; have {sorted(batch)}")
    lat, act, msk = batch["latents"], batch["actions"], batch["action_mask"]
    if lat.dim() != 4 or lat.shape[2:] != (agent.num_tokens, agent.latent_dim):
        raise ValueError(
            f"phase2 batch['latents']: expected (B,T,{agent.num_tokens},{agent.latent_dim}), got {tuple(lat.shape)}"
        )
    bt = lat.shape[:2]
    want = (*bt, agent.chunk_len, len(agent.action_cards))
    if tuple(act.shape) != want:
        raise ValueError(f"phase2 batch['actions']: expected shape {want}, got {tuple(act.shape)}")
    if act.dtype != torch.int64:
        raise ValueError(f"phase2 batch['actions']: expected int64, got {act.dtype}")
    if tuple(msk.shape) != want[:3] or msk.dtype != torch.bool:
        raise ValueError(f"phase2 batch['action_mask']: expected bool {want[:3]}, got {msk.dtype} {tuple(msk.shape)}")
    for k in ("rewards", "continues"):
        if batch[k].shape != bt:
            raise ValueError(f"phase2 batch[{k!r}]: expected shape {tuple(bt)}, got {tuple(batch[k].shape)}")


def data_value_loss(agent: Agent, h_btd: Tensor, rewards_bt: Tensor, continues_bt: Tensor, rl: RLConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The value of the behaviour policy: two-hot CE of v(sg(h_t)) against the λ-returns of the clip's real
    rewards, R_t = r_{t+1} + γ c_{t+1} ((1 − λ) v_{t+1} + λ R_{t+1}), bootstrapped from sg(v) at the clip's
    last step (γ = rl.gamma(S)). The features are detached: the value never shapes the trunk. Returns
    (loss, values (B, T) detached, returns (B, T−1))."""
    v_logits = agent.value(h_btd.detach())  # (B, T, K)
    v_sg = agent.value.twohot.decode(v_logits).detach()
    returns = lambda_returns(rewards_bt[:, 1:], v_sg, continues_bt[:, 1:], rl.gamma(agent.chunk_len), rl.lam)
    return value_loss(agent.value.twohot, v_logits[:, :-1], returns), v_sg, returns


def phase2_loss(
    agent: Agent, batch: dict[str, Tensor], cfg: AgentConfig, compute_metrics: bool = True, rl: RLConfig | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Phase-2 loss = bc_w * BC + reward_w * two-hot CE(rewards[t] | h_t) + continue_w * BCE
    + value_w * the behaviour policy's value (:func:`data_value_loss`, discounts of ``rl``).

    Rows whose action mask is all False (last latent of an episode) are excluded from BC but still train
    the reward and continue heads. Returns (loss, metrics) where metrics holds python floats:
    loss, bc_loss, reward_loss, continue_loss, bc_accuracy, policy_entropy (nats per valid
    (sub-step, component) entry), max_action_prob (mean over valid entries), reward_mae,
    reward_pred_std (std of predicted rewards over the batch), continue_accuracy, and
    reward_mae_nonzero only when the batch holds nonzero rewards, value_loss and value_return_corr. With
    compute_metrics=False the metrics dict is empty (no host sync).
    """
    check_batch(batch, agent)
    actions, mask = batch["actions"], batch["action_mask"]
    rewards, continues = batch["rewards"].float(), batch["continues"].float()

    h_btd = agent.trunk(batch["latents"].float())
    dist = agent.policy(h_btd)
    bc = bc_loss(dist, actions, mask, cfg.focal_gamma)
    r_logits_btk = agent.reward(h_btd)
    reward_loss = agent.reward.loss(r_logits_btk, rewards).mean()
    c_logits_bt = agent.cont(h_btd).float()
    continue_loss = F.binary_cross_entropy_with_logits(c_logits_bt, continues)
    v_loss, v_sg, v_returns = data_value_loss(agent, h_btd, rewards, continues, rl or RLConfig())
    loss = (
        cfg.bc_loss_weight * bc
        + cfg.reward_loss_weight * reward_loss
        + cfg.continue_loss_weight * continue_loss
        + cfg.value_loss_weight * v_loss
    )
    if not compute_metrics:
        return loss, {}

    with torch.no_grad():
        n_entries = (mask.float().sum() * len(agent.action_cards)).clamp(min=1.0)
        r_pred = agent.reward.twohot.decode(r_logits_btk)
        err = (r_pred - rewards).abs()
        nonzero = (rewards != 0).float()
        values = torch.stack([
            loss.detach().float(),
            bc.detach().float(),
            reward_loss.detach(),
            continue_loss.detach(),
            bc_accuracy(dist, actions, mask),
            dist.entropy(mask).sum() / n_entries,
            (dist.max_prob() * _entry_weights(mask, actions)).sum() / n_entries,
            err.mean(),
            r_pred.std(unbiased=False),
            ((c_logits_bt > 0) == (continues > 0.5)).float().mean(),
            v_loss.detach(),
            torch.corrcoef(torch.stack([v_sg[:, :-1].flatten(), v_returns.flatten()]))[0, 1].nan_to_num(0.0),
            (err * nonzero).sum(),
            nonzero.sum(),
        ]).tolist()
    names = [
        "loss", "bc_loss", "reward_loss", "continue_loss", "bc_accuracy", "policy_entropy",
        "max_action_prob", "reward_mae", "reward_pred_std", "continue_accuracy", "value_loss", "value_return_corr",
    ]
    metrics = dict(zip(names, values[: len(names)], strict=True))
    err_nz, n_nz = values[len(names) :]
    if n_nz > 0:
        metrics["reward_mae_nonzero"] = err_nz / n_nz
    return loss, metrics
