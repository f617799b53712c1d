"""Phase-3 red flags (docs/design.md §6) from the imagination tensors the caller passes in:

* ``advantages`` (B, H): A_t = R_t - v_t. All zero fails; so does one sign only (fewer than 10, or fewer than
  ``min_advantage_fraction`` of the pairs, in D+ (A >= 0) or D- (A < 0)) once the value warm-up is over
  (``value_warmup`` steps when given, else ``min_learning_steps``): before it, a warning.
* ``imagined_rewards`` (B, H): always 0, non-finite, or carrying a graph, fail.
* ``imagined_latents`` (B, H, N, C), the imagined steps (standardised like the data): non-finite or
  carrying a graph fail; drift away from the data's per-channel statistics over the horizon warns /
  fails. Drift at step h = max(RMS_c (mean_hc - mean_c) / std_c, RMS_c ln(std_hc / std_c)): imagined
  mean / std per channel c over (batch, tokens) at step h against the sample batch's, RMS over channels.
* ``policy_entropy``: nats per (sub-step, component) entry; computed from the policy on the sample
  batch when not given. Below 0.1 fails.
"""

from __future__ import annotations

import torch

from diagnostics.report import FAIL, OK, WARN, Check, verdict
from diagnostics.thresholds import Thresholds
from dreamer.training.runtime import unwrap

INPUTS = ("advantages", "imagined_rewards", "imagined_latents", "policy_entropy", "rl_cfg", "pmpo_cfg",
          "value_warmup")


def _absent(name: str, key: str) -> Check:
    return Check(name, WARN, "not given", f"pass {key}=... to diagnose_phase(3, ...)",
                 f"{key} was not passed, so this red flag is not checked; the phase-3 script passes the tensors of "
                 "one imagination rollout (see docs/diagnostics.md)")


def latent_drift(imagined_bhnc: torch.Tensor, data_btnc: torch.Tensor) -> torch.Tensor:
    """Per-step drift (H,) of imagined latents from the data's per-channel mean / std.

    A channel constant in the data (e.g. a padding channel of the crafter_state tokenizer, 0 once standardised)
    has no spread to compare with: its shift is measured in standardised units (std 1) and it is left out of
    the scale term. Channels that vary are judged as before."""
    C = data_btnc.shape[-1]
    d = data_btnc.detach().float().reshape(-1, C)
    m_c, sd = d.mean(0), d.std(0)
    const = sd < 1e-6
    s_c = torch.where(const, torch.ones_like(sd), sd.clamp_min(1e-6))
    x = imagined_bhnc.detach().float().transpose(0, 1).reshape(imagined_bhnc.shape[1], -1, C)  # (H, B*N, C)
    m_hc, s_hc = x.mean(1), x.std(1).clamp_min(1e-6)
    shift = ((m_hc - m_c) / s_c).pow(2).mean(-1).sqrt()  # RMS over channels, (H,)
    varying = ~const
    if not varying.any():
        return shift
    scale = (s_hc[:, varying] / s_c[varying]).log().pow(2).mean(-1).sqrt()
    return torch.maximum(shift, scale)


def check_advantages(adv: torch.Tensor, th: Thresholds, judged: bool = True, judged_from: int | None = None) -> list[Check]:
    a = adv.detach().float()
    zero = bool((a.abs() <= th.advantage_zero).all())
    pos, neg = int((a >= 0).sum()), int((a < 0).sum())
    need = max(th.min_advantage_count, int(th.min_advantage_fraction * a.numel()))
    out = [verdict(not zero, "phase3/advantages_nonzero", float(a.abs().max()), "some |A| > 0",
                   "all advantages are 0: returns equal values everywhere. Imagined rewards are 0 and the value head "
                   "predicts them perfectly, or R and v are the same tensor; check rewards and lambda_returns inputs")]
    few = min(pos, neg) < need
    # During the value warm-up the value may not track the returns yet, and one sign is expected: warn, don't stop.
    later = "" if judged else f" (judged as a failure from step {judged_from or th.min_learning_steps})"
    out.append(verdict(not few, "phase3/advantage_signs", min(pos, neg),
                       f">= {need} in D+ (A>=0) and in D- (A<0); have {pos} / {neg}{later}",
                       f"PMPO needs both signs: {pos} advantages >= 0 and {neg} < 0. Use more imagined (batch, time) "
                       "pairs (phase3.batch_size x horizon), and check that rewards and values are not constant; at the "
                       "start, a value head still at zero gives only A >= 0 (pmpo.value_warmup helps)",
                       bad=FAIL if judged else WARN, learning=True))
    return out


def check_rewards(r: torch.Tensor, th: Thresholds) -> list[Check]:
    finite = bool(torch.isfinite(r).all())
    top = float(r.detach().float().abs().max()) if finite else float("nan")
    return [
        verdict(finite and top > th.imagined_reward_zero, "phase3/imagined_rewards", top,
                f"finite, some |r| > {th.imagined_reward_zero:g}",
                "imagined rewards are always 0 (or non-finite): the reward head is untrained / zero-initialised "
                "(load phase2_final.pt), or rewards are read from the wrong step (r_{t+1} from h_{t+1})"),
        verdict(not r.requires_grad, "phase3/imagined_rewards_constant", r.requires_grad, "requires_grad False",
                "imagined rewards carry a graph into the reward head / dynamics: compute them under torch.no_grad() "
                "(the world model is frozen in phase 3)"),
    ]


def check_latents(z: torch.Tensor, data: torch.Tensor, th: Thresholds) -> list[Check]:
    if z.dim() != 4 or z.shape[-1] != data.shape[-1]:
        return [Check("phase3/imagined_latents", FAIL, "x".join(map(str, z.shape)), "(B, H, N, C)",
                      f"imagined_latents must be (B, H, N, C) with C={data.shape[-1]}, got {tuple(z.shape)}")]
    out = [verdict(not z.requires_grad, "phase3/imagined_latents_constant", z.requires_grad, "requires_grad False",
                   "imagined latents carry a graph into the dynamics model: roll out under torch.no_grad(); no "
                   "gradient may flow through the world model in phase 3")]
    if not bool(torch.isfinite(z).all()):
        out.append(Check("phase3/imagined_drift", FAIL, "non-finite", "finite imagined latents",
                         "the rollout produced inf/nan latents: the dynamics sampler diverges (check sample_steps, "
                         "context noise, and the latent statistics of the phase-1 checkpoint)"))
        return out
    drift = latent_drift(z, data)
    top, at = float(drift.max()), int(drift.argmax())
    over = (drift > th.drift_warn).nonzero()
    start = int(over[0]) if len(over) else None
    status = FAIL if top > th.drift_fail else WARN if top > th.drift_warn else OK
    hint = "" if status == OK else (
        f"imagined latents leave the data distribution from step {start} (worst {top:.2f} at step {at}): the "
        "dynamics model is undertrained or sampled differently from training (sample_steps, context_noise); "
        "shorten phase3.horizon or train phase 1 longer")
    out.append(Check("phase3/imagined_drift", status, top,
                     f"< {th.drift_warn:g} (fail > {th.drift_fail:g}); step 0: {float(drift[0]):.2f}", hint))
    return out


@torch.no_grad()
def policy_entropy_on_batch(agent, batch: dict) -> float:
    agent = unwrap(agent)
    dist = agent.policy(agent.trunk(batch["latents"].float()))
    mask = batch["action_mask"]
    return float(dist.entropy(mask).sum()) / max(float(mask.sum()) * len(agent.action_cards), 1.0)


def phase3_checks(model_dict: dict, batch: dict, inputs: dict, th: Thresholds, judged: bool = True,
                  step: int | None = None) -> list[Check]:
    out: list[Check] = []
    adv = inputs.get("advantages")
    warmup = inputs.get("value_warmup")
    signs_judged = judged if warmup is None else (step is None or step >= warmup)
    out += check_advantages(adv, th, signs_judged, warmup) if adv is not None else [
        _absent("phase3/advantages", "advantages")]
    r = inputs.get("imagined_rewards")
    out += check_rewards(r, th) if r is not None else [_absent("phase3/imagined_rewards", "imagined_rewards")]
    z = inputs.get("imagined_latents")
    out += check_latents(z, batch["latents"], th) if z is not None else [
        _absent("phase3/imagined_drift", "imagined_latents")]
    ent = inputs.get("policy_entropy")
    source = "given"
    if ent is None:
        ent, source = policy_entropy_on_batch(model_dict["agent"], batch), "on the sample batch"
    ent = float(torch.as_tensor(ent).float().mean())
    out.append(verdict(ent >= th.entropy_min, "phase3/policy_entropy", ent,
                       f">= {th.entropy_min:g} nats per entry ({source})",
                       "the policy has collapsed to near-deterministic choices: lower the policy lr, raise the KL "
                       "weight pmpo.beta towards the prior, check that advantages have both signs"))
    return out
