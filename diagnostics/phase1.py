"""Phase-1 red flags (docs/design.md §4): non-finite loss, gradient norm out of [1e-6, 100], and an
action-shuffle ratio not above 1 once the model has trained."""

from __future__ import annotations

import math

import torch

from diagnostics.gradflow import AuditResult
from diagnostics.report import OK, WARN, Check, verdict
from diagnostics.thresholds import Thresholds
from dreamer.training.runtime import unwrap


def phase1_checks(model_dict: dict, batch: dict, device: torch.device, audit: AuditResult | None, judged: bool,
                  th: Thresholds) -> list[Check]:
    from dreamer.dynamics import ShortcutForcingLoss, heldout_metrics

    dyn = model_dict["dynamics"]
    loss_mod = model_dict.get("loss") or ShortcutForcingLoss(unwrap(dyn).cfg).to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    m = heldout_metrics(dyn, loss_mod, batch, context_len=1, horizons=(), generator=gen)  # no grad, RNG untouched
    out = []
    loss = audit.loss if audit is not None and audit.loss is not None else m["loss_true"]
    out.append(verdict(math.isfinite(loss), "phase1/loss_finite", loss, "finite",
                       "the shortcut loss is not finite: look for inf/nan latents, a tau of exactly 1 in a "
                       "division (1 - tau), or fp16 overflow; train with bf16 autocast, not fp16 weights"))
    if audit is not None and audit.grad_norm is not None:
        gn = audit.grad_norm
        if gn > th.grad_norm_max:
            hint = ("gradient norm above the red-flag level: lower lr, keep grad_clip, check the loss scale "
                    "(rms_normalise) and the latent standardisation")
        else:
            hint = ("gradient norm vanishing: the graph is cut or the loss is flat; read grad_audit/trainable_grads")
        out.append(verdict(th.grad_norm_min <= gn <= th.grad_norm_max, "phase1/grad_norm", gn,
                           f"in [{th.grad_norm_min:g}, {th.grad_norm_max:g}]", hint))
    ratio = m["action_shuffle_ratio"]
    name, expected = "phase1/action_shuffle_ratio", f"> {th.shuffle_ratio_min:g} once trained"
    if math.isnan(ratio):
        out.append(Check(name, WARN, ratio, expected, "needs a sample batch of at least 2 clips with a non-zero loss"))
    elif not judged:
        out.append(Check(name, OK, ratio, f"{expected} (not judged before step {th.min_learning_steps})"))
    else:
        out.append(verdict(ratio > th.shuffle_ratio_min, name, ratio, expected,
                           "the model ignores the actions (shuffling them does not hurt): check the action alignment "
                           "(step t is conditioned on actions[:, t-1]), that action_mask is not all False, and that "
                           "the data's actions vary; train longer", learning=True))
    return out
