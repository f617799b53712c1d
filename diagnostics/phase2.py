"""Phase-2 red flags (docs/design.md §5): BC accuracy near chance, a collapsed policy, collapsed reward
predictions, one action class dominating, and latents that require grad."""

from __future__ import annotations

import torch

from diagnostics.report import FAIL, OK, WARN, Check, verdict
from diagnostics.thresholds import Thresholds
from dreamer.training.runtime import unwrap

INPUTS = ("rl_cfg",)  # what diagnose_phase(2, ...) takes besides the models: the run's rl section (its real loss)


def top_class_fraction(actions_btsd: torch.Tensor, mask_bts: torch.Tensor, cards: list[int]) -> tuple[float, int, int]:
    """(largest fraction one class holds among valid entries, its component, its class), over components."""
    best = (0.0, 0, 0)
    for d, card in enumerate(cards):
        vals = actions_btsd[..., d][mask_bts]
        if vals.numel() == 0:
            continue
        counts = torch.bincount(vals.clamp(0, card - 1), minlength=card).float()
        frac, cls = float(counts.max() / counts.sum()), int(counts.argmax())
        if frac > best[0]:
            best = (frac, d, cls)
    return best


@torch.no_grad()
def phase2_checks(model_dict: dict, batch: dict, judged: bool, th: Thresholds) -> list[Check]:
    from dreamer.agent import bc_accuracy

    agent = unwrap(model_dict["agent"])
    lat, acts, mask = batch["latents"], batch["actions"], batch["action_mask"]
    cards = list(agent.action_cards)
    out = [verdict(not lat.requires_grad, "phase2/latents_constant", lat.requires_grad, "latents.requires_grad False",
                   "the batch latents carry a graph: they must be data (loaded from the cache, or encoded under "
                   "torch.no_grad()); gradients would flow into whatever produced them")]
    h = agent.trunk(lat.float())
    dist = agent.policy(h)
    n_entries = float(mask.sum()) * len(cards)
    later = f"(not judged before step {th.min_learning_steps})"

    acc = float(bc_accuracy(dist, acts, mask))
    chance = sum(1.0 / c for c in cards) / len(cards)
    data_frac, d_comp, d_cls = top_class_fraction(acts, mask, cards)
    expected = f"> chance {chance:.3f} + {th.bc_chance_margin:g}"
    if not judged:
        out.append(Check("phase2/bc_accuracy", OK, acc, f"{expected} {later}"))
    elif acc <= chance + th.bc_chance_margin:
        out.append(Check("phase2/bc_accuracy", FAIL, acc, expected,
                         "BC accuracy is at chance: the policy learns nothing from h_t. Check action alignment "
                         "(actions[:, t] is the chunk taken FROM latent t), that the trunk is trained, and the lr",
                         learning=True))
    elif acc <= data_frac < 1.0:
        out.append(Check("phase2/bc_accuracy", WARN, acc, f"{expected}, above majority {data_frac:.3f}",
                         "no better than always predicting the most common action: try agent.focal_gamma > 0"))
    else:
        out.append(Check("phase2/bc_accuracy", OK, acc, expected))

    ent = float(dist.entropy(mask).sum()) / max(n_entries, 1.0)
    w = mask.float().unsqueeze(-1)
    maxp = float((dist.max_prob() * w).sum()) / max(n_entries, 1.0)
    collapsed = maxp > th.collapse_max_prob and ent < th.collapse_entropy
    out.append(verdict(not collapsed, "phase2/policy_collapse", maxp,
                       f"not (max prob > {th.collapse_max_prob:g} and entropy < {th.collapse_entropy:g}); "
                       f"entropy {ent:.3g}",
                       "the policy puts all mass on one action everywhere: lower the lr, check for a huge BC weight or "
                       "logits blowing up, and for a batch dominated by one action (see phase2/data_actions)"))

    r_pred = agent.reward.predict(h).float()
    spread, data_spread = float(r_pred.std(unbiased=False)), float(batch["rewards"].float().std(unbiased=False))
    name, expected = "phase2/reward_spread", f"std of predictions >= {th.reward_spread_min:g}"
    if not judged:
        out.append(Check(name, OK, spread, f"{expected} {later}"))
    elif data_spread < th.reward_spread_min:
        out.append(Check(name, OK, spread, f"{expected} (batch rewards constant: not judged)"))
    else:
        out.append(verdict(spread >= th.reward_spread_min, name, spread, expected,
                           f"the reward head predicts one value everywhere although batch rewards vary (std "
                           f"{data_spread:.3g}): check reward_loss_weight > 0, the alignment rewards[t] = reward on "
                           "ENTERING latent t, and oversample clips with rewards (they are sparse)", learning=True))

    out.append(verdict(data_frac < th.histogram_max_frac, "phase2/data_actions", data_frac,
                       f"< {th.histogram_max_frac:g} of valid entries in one class",
                       f"class {d_cls} of component {d_comp} holds {data_frac:.0%} of the batch's actions: BC will "
                       "learn to repeat it. Use agent.focal_gamma > 0, collect with more exploration (collect.epsilon) "
                       "or rebalance the data", bad=WARN))
    pred_frac, p_comp, p_cls = top_class_fraction(dist.mode(), mask, cards)
    name, expected = "phase2/policy_actions", f"< {th.histogram_max_frac:g} of greedy actions in one class"
    if not judged or data_frac >= th.histogram_max_frac:
        note = later if not judged else "(the data itself is dominated: see phase2/data_actions)"
        out.append(Check(name, OK, pred_frac, f"{expected} {note}"))
    else:
        out.append(verdict(pred_frac < th.histogram_max_frac, name, pred_frac, expected,
                           f"the greedy policy picks class {p_cls} of component {p_comp} {pred_frac:.0%} of the time "
                           f"while the data is more varied: mode collapse; try agent.focal_gamma > 0 or a lower lr",
                           learning=True))
    return out
