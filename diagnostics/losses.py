"""The loss each phase's audit runs when no ``loss_fn`` is given.

* phase 1: ``ShortcutForcingLoss`` on the batch (a fixed generator: the global RNG is untouched);
* phase 2: ``dreamer.agent.phase2_loss`` with the run's λ-return discounts (``rl_cfg``, the config's ``rl``);
* phase 3: a *proxy*: the library's phase-3 loss (``dreamer.imagination.phase3_terms``: PMPO with the
  KL to the frozen prior, two-hot TD(λ) value loss) on the sample batch instead of an imagined
  rollout (h from the frozen trunk, rewards / continues from the frozen heads), with the run's ``rl_cfg`` and
  ``pmpo_cfg``. It audits the agent's wiring, not the rollout; pass ``loss_fn`` (a closure over
  ``dreamer.imagination.imagine``) to audit the real loss.

Without ``rl_cfg`` / ``pmpo_cfg`` the defaults are used, and the loss's description says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dreamer.training.runtime import unwrap


def phase1_loss(model_dict: dict, batch: dict, device: torch.device) -> Callable[[], torch.Tensor]:
    from dreamer.dynamics import ShortcutForcingLoss

    dyn = model_dict["dynamics"]
    loss_mod = model_dict.get("loss") or ShortcutForcingLoss(unwrap(dyn).cfg).to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def fn() -> torch.Tensor:
        loss, _ = loss_mod(dyn, batch["latents"], batch["actions"], batch["action_mask"], generator=gen)
        return loss

    return fn


def phase2_loss_fn(model_dict: dict, batch: dict, rl_cfg=None) -> Callable[[], torch.Tensor]:
    from dreamer.agent import RLConfig, phase2_loss

    agent = model_dict["agent"]
    rl = rl_cfg if rl_cfg is not None else RLConfig()

    def fn() -> torch.Tensor:
        loss, _ = phase2_loss(agent, batch, unwrap(agent).cfg, compute_metrics=False, rl=rl)
        return loss

    return fn


def phase3_proxy_loss(model_dict: dict, batch: dict, rl_cfg=None, pmpo_cfg=None) -> Callable[[], torch.Tensor]:
    """The library's phase-3 loss (:func:`dreamer.imagination.phase3_terms`) on the sample batch read as a
    trajectory: latents z_0..z_{T-1}, the batch's action chunks, rewards / continues from the frozen heads."""
    from dreamer.agent import RLConfig
    from dreamer.imagination import Imagined, PMPOConfig, phase3_terms

    agent, prior = unwrap(model_dict["agent"]), model_dict["prior"]
    rl = rl_cfg if rl_cfg is not None else RLConfig()
    pmpo = pmpo_cfg if pmpo_cfg is not None else PMPOConfig()

    def fn() -> torch.Tensor:
        z = batch["latents"].float()  # (B, T, N, C)
        h_btd = agent.trunk(z)  # the frozen trunk
        with torch.no_grad():
            r_bt, c_bt = agent.reward.predict(h_btd[:, 1:]), agent.cont.predict(h_btd[:, 1:])  # r_1.., c_1..
        trajectory = Imagined(latents=z, actions=batch["actions"][:, :-1], action_mask=batch["action_mask"][:, :-1],
                              rewards=r_bt, continues=c_bt, features=h_btd, context=z[:, :1])
        t = phase3_terms(agent, prior, trajectory, rl, pmpo)
        return t.policy_loss + t.value_loss

    return fn


def default_loss_fn(phase: int, model_dict: dict, batch: dict, device: torch.device, rl_cfg=None, pmpo_cfg=None):
    """(loss closure, a short description of it)."""
    if phase == 1:
        return phase1_loss(model_dict, batch, device), "ShortcutForcingLoss on the sample batch"
    if phase == 2:
        note = "" if rl_cfg is not None else " (rl_cfg not given: default discounts)"
        return phase2_loss_fn(model_dict, batch, rl_cfg), f"dreamer.agent.phase2_loss on the sample batch{note}"
    missing = [k for k, v in (("rl_cfg", rl_cfg), ("pmpo_cfg", pmpo_cfg)) if v is None]
    note = f" ({' and '.join(missing)} not given: defaults)" if missing else ""
    return (phase3_proxy_loss(model_dict, batch, rl_cfg, pmpo_cfg),
            f"phase-3 proxy (PMPO + value loss on the sample batch){note}")
