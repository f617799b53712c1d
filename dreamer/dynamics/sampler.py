"""Shortcut sampling and autoregressive rollouts of the dynamics model (docs/design.md §4), inference only.

One new latent: start from pure noise z ~ N(0, I), K steps with Δ = 1/K (step_idx = log2 K):
    z1_hat = f(z, tau, d);  z <- z + (z1_hat - z) / (1 - tau) * d;  tau <- tau + d
so after K steps (last tau = 1 - d) z equals the last clean prediction z1_hat exactly.

Context corruption: every context latent (given or generated) is mixed ONCE, when it enters the
context, as  tau_c z + (1 - tau_c) eps  with tau_c = round((1 - context_noise) k_max) / k_max, the grid
level nearest to 1 - context_noise (0.1 -> 58/64 = 0.906 for k_max = 64), and labelled with that
tau_idx and the Δ_min step index.  The label therefore matches the actual corruption exactly.

`Rollout` generates step by step (for phase-3 imagination); `rollout` is the one-call convenience.
Cached (`use_kv_cache=True`) and uncached paths draw the same random numbers in the same order and agree
up to float error.  Everything runs under torch.no_grad() (not inference_mode, so the outputs can be
fed to trainable heads later).  Random draws use the optional `generator` (on its own device).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .model import DynamicsModel


def context_tau_idx(k_max: int, context_noise: float) -> int:
    return round((1.0 - context_noise) * k_max)


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, device=dev, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


@torch.no_grad()
def shortcut_sample(predict: Callable[[torch.Tensor, int, int], torch.Tensor], z_noise: torch.Tensor,
                    k_max: int, sample_steps: int) -> torch.Tensor:
    """K-step shortcut sampler.  predict(z, tau_idx, step_idx) -> z1_hat (same shape as z)."""
    if sample_steps < 1 or sample_steps & (sample_steps - 1) or sample_steps > k_max:
        raise ValueError(f"sample_steps={sample_steps} must be a power of two <= k_max={k_max}")
    step_idx = int(math.log2(sample_steps))
    d = 1.0 / sample_steps
    z = z_noise
    for i in range(sample_steps):
        tau_idx = i * (k_max // sample_steps)
        tau = tau_idx / k_max
        z1_hat = predict(z, tau_idx, step_idx)
        z = z + (z1_hat - z) / (1.0 - tau) * d
    return z


def _default_actions(model: DynamicsModel, b: int, t: int, ref: torch.Tensor, actions, mask):
    """Fill in None actions (all masked = no action) / None mask (all valid)."""
    s, dd = model.chunk_len, len(model.action_cards)
    if actions is None:
        return (torch.zeros(b, t, s, dd, dtype=torch.long, device=ref.device),
                torch.zeros(b, t, s, dtype=torch.bool, device=ref.device))
    if mask is None:
        mask = torch.ones(actions.shape[:3], dtype=torch.bool, device=actions.device)
    return actions.to(ref.device), mask.to(ref.device).bool()


class Rollout:
    """Step-wise autoregressive generation from a context.

    context_z_btnc (B,Tc,N,C) standardised latents; context_actions_btsd (B,Tc,S,D) CACHE-ALIGNED
    (row k = chunk from context latent k to k+1; the last row is ignored, the chunk out of the last
    context latent is the one given to the first `step`); None = action-free.  `step(chunk_bsd,
    mask_bs)` applies `chunk_bsd` from the current last latent and returns the new latent (B,N,C);
    chunk None = no action, mask None = all sub-steps valid.  Total length (context + generated) is
    limited by cfg.max_time.  `history_btnc` returns the clean context followed by the generated steps.
    """

    @torch.no_grad()
    def __init__(self, model: DynamicsModel, context_z_btnc: torch.Tensor,
                 context_actions_btsd: torch.Tensor | None = None, context_mask_bts: torch.Tensor | None = None,
                 use_kv_cache: bool = True, generator: torch.Generator | None = None,
                 sample_steps: int | None = None, context_noise: float | None = None,
                 forward_into: Callable | None = None) -> None:
        cfg = model.cfg
        self.model, self.use_kv_cache, self.generator = model, use_kv_cache, generator
        # model.forward_into, or a torch.compile'd version of it (phase3.compile: train_phase3.py)
        self.forward_into = forward_into if forward_into is not None else model.forward_into
        self.sample_steps = cfg.sample_steps if sample_steps is None else sample_steps
        noise = cfg.context_noise if context_noise is None else context_noise
        self.ctx_tau_idx = context_tau_idx(cfg.k_max, noise)
        self.ctx_tau = self.ctx_tau_idx / cfg.k_max
        z = context_z_btnc.float()
        b, tc = z.shape[:2]
        if tc < 1:
            raise ValueError("Rollout: context must hold at least one latent step")
        if tc > cfg.max_time:
            raise ValueError(f"Rollout: context length {tc} > DynamicsConfig.max_time={cfg.max_time}")
        acts, mask = _default_actions(model, b, tc, z, context_actions_btsd, context_mask_bts)
        act_in, mask_in = model.into_actions(acts, mask)
        self._clean = [z]
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._ctx = None  # (z corrupted, act_in, mask_in) for the uncached path
        self.cache = model.new_cache() if use_kv_cache else None
        self._ctx_len = 0
        self._append(z, act_in, mask_in)

    @property
    def length(self) -> int:
        """Number of latent steps so far (context + generated)."""
        return self._ctx_len + (1 if self._pending is not None else 0)

    @property
    def history_btnc(self) -> torch.Tensor:
        parts = self._clean + ([self._pending[0][:, None]] if self._pending is not None else [])
        return torch.cat(parts, 1)

    def _labels(self, b: int, t: int, tau_idx: int, step_idx: int, ref: torch.Tensor):
        return (torch.full((b, t), tau_idx, dtype=torch.long, device=ref.device),
                torch.full((b, t), step_idx, dtype=torch.long, device=ref.device))

    def _append(self, z_btnc, act_in, mask_in) -> None:
        """Corrupt clean latents (one fresh eps each) and add them to the context."""
        zc = self.ctx_tau * z_btnc + (1.0 - self.ctx_tau) * _randn(z_btnc.shape, z_btnc, self.generator)
        b, t = zc.shape[:2]
        tau_idx, step_idx = self._labels(b, t, self.ctx_tau_idx, self.model.cfg.min_step_idx, zc)
        if self.cache is not None:
            self.forward_into(zc, tau_idx, step_idx, act_in, mask_in, self.cache, update_cache=True)
        else:
            parts = (zc, tau_idx, step_idx, act_in, mask_in)
            self._ctx = parts if self._ctx is None else tuple(torch.cat([a, p], 1) for a, p in zip(self._ctx, parts))
        self._ctx_len += t

    @torch.no_grad()
    def step(self, action_chunk_bsd: torch.Tensor | None = None, mask_bs: torch.Tensor | None = None) -> torch.Tensor:
        model, cfg = self.model, self.model.cfg
        if self.length + 1 > cfg.max_time:
            raise ValueError(f"Rollout: length {self.length + 1} would exceed DynamicsConfig.max_time={cfg.max_time}")
        if self._pending is not None:
            zp, ap, mp = self._pending
            self._pending = None
            self._clean.append(zp[:, None])
            self._append(zp[:, None], ap[:, None], mp[:, None])
        ref = self._clean[0]
        b = ref.shape[0]
        a = None if action_chunk_bsd is None else action_chunk_bsd[:, None]
        m = None if mask_bs is None else mask_bs[:, None]
        act, mask = _default_actions(model, b, 1, ref, a, m)
        act, mask = act[:, 0], mask[:, 0]
        z_noise = _randn((b,) + tuple(ref.shape[2:]), ref, self.generator)

        def predict(z_bnc: torch.Tensor, tau_idx: int, step_idx: int) -> torch.Tensor:
            ti, si = self._labels(b, 1, tau_idx, step_idx, z_bnc)
            if self.cache is not None:
                return self.forward_into(z_bnc[:, None], ti, si, act[:, None], mask[:, None],
                                         self.cache, update_cache=False)[:, 0].float()
            zc, tic, sic, ac, mc = self._ctx
            out = self.forward_into(torch.cat([zc, z_bnc[:, None]], 1), torch.cat([tic, ti], 1),
                                     torch.cat([sic, si], 1), torch.cat([ac, act[:, None]], 1),
                                     torch.cat([mc, mask[:, None]], 1))
            return out[:, -1].float()

        z_next = shortcut_sample(predict, z_noise, cfg.k_max, self.sample_steps)
        self._pending = (z_next, act, mask)
        return z_next


@torch.no_grad()
def rollout(model: DynamicsModel, context_z_btnc: torch.Tensor, context_actions_btsd: torch.Tensor | None = None,
            context_mask_bts: torch.Tensor | None = None, future_actions_bhsd: torch.Tensor | None = None,
            future_mask_bhs: torch.Tensor | None = None, horizon: int | None = None, use_kv_cache: bool = True,
            generator: torch.Generator | None = None, sample_steps: int | None = None,
            context_noise: float | None = None, forward_into: Callable | None = None) -> torch.Tensor:
    """Generate H latents after the context -> (B,H,N,C).

    future_actions_bhsd[:, h] is the chunk applied from latent Tc-1+h to latent Tc+h (for a cache batch
    with T = Tc + H: context_actions = actions[:, :Tc], future_actions = actions[:, Tc-1:Tc-1+H]).
    future_actions None = action-free (then `horizon` is required).
    """
    if future_actions_bhsd is not None:
        h_avail = future_actions_bhsd.shape[1]
        horizon = h_avail if horizon is None else horizon
        if horizon > h_avail:
            raise ValueError(f"rollout: horizon={horizon} > future_actions steps={h_avail}")
    elif horizon is None:
        raise ValueError("rollout: give future_actions_bhsd or horizon")
    ro = Rollout(model, context_z_btnc, context_actions_btsd, context_mask_bts, use_kv_cache=use_kv_cache,
                 generator=generator, sample_steps=sample_steps, context_noise=context_noise,
                 forward_into=forward_into)
    out = []
    for h in range(horizon):
        if future_actions_bhsd is None:
            out.append(ro.step(None, None))
        else:
            m = None if future_mask_bhs is None else future_mask_bhs[:, h]
            out.append(ro.step(future_actions_bhsd[:, h], m))
    return torch.stack(out, 1)
