"""Shortcut-forcing loss (docs/design.md §4) with diffusion forcing and running-RMS loss normalisation.

Every (row b, step t) gets its own signal level tau and step size Δ (see `sample_tau_step`):
    z~ = (1 - tau) z0 + tau z1,  z0 ~ N(0, I);   z1_hat = f(z~, tau, d)   (student, with gradient)
* Δ = Δ_min (flow term):       l = mean_{N,C} (z1_hat - z1)^2
* Δ > Δ_min (bootstrap term):  two teacher half-steps in ONE no-grad forward each (all bootstrap rows at
  once; other steps of those rows keep their own inputs/labels so the causal context matches):
      b'  = (f(z~, tau, Δ/2) - z~) / (1 - tau);       z' = z~ + b' Δ/2
      b'' = (f(z', tau + Δ/2, Δ/2) - z') / (1 - tau - Δ/2)
      l = (1 - tau)^2 mean_{N,C} ((z1_hat - z~)/(1 - tau) - sg((b' + b'')/2))^2
With cfg.context_fraction > 0 a share of the (b, t) is set to the sampler's context level, a flow step
(`sample_tau_step`): the nearly clean contexts the model is given when it generates.
Reduction: each per-step l is weighted by w(tau) = 0.9 tau + 0.1.  Logged terms: flow = sum_flow w l /
n_flow, bootstrap = sum_boot w l / n_boot (0 if a kind is absent), total = sum_all w l / (B*T) (the
plain mean over all steps, i.e. the two terms weighted by their step counts).
Optimised loss:
* rms_normalise=False: total.
* rms_normalise=True, rms_per_term=False (default): total / running_rms(total).  One shared statistic
  removes the overall scale while keeping the natural flow/bootstrap balance.
* rms_normalise=True, rms_per_term=True: flow / rms(flow) + bootstrap / rms(bootstrap).  CAUTION: the
  bootstrap term has a trivial zero (f = identity, all velocities 0); dividing it by its own shrinking
  RMS gives it an ever larger weight and, in our tests, training collapses onto that solution while
  the flow error stalls.  Kept for experiments only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .config import DynamicsConfig
from .sampler import context_tau_idx


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def sample_tau_step(cfg: DynamicsConfig, batch: int, time: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None, context_fraction: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (tau_idx_bt, step_idx_bt) int64: Δ = 2^-step_idx, tau = tau_idx/k_max uniform on {0,Δ,..,1-Δ}.

    cfg.bootstrap_fraction=None: step_idx ~ U{0..log2 k_max} per (b,t) (docs/design.md §4).  Otherwise a random
    subset of rows of expected size fraction*B (stochastic rounding) draws step_idx ~ U{0..log2 k_max - 1}
    per step and the other rows use Δ_min everywhere.
    Then each (b,t) with probability ``context_fraction`` (None: cfg.context_fraction) is set to the sampler's
    context level (tau_idx of 1 - cfg.context_noise, Δ_min); no random number is drawn when it is 0.
    """
    device = torch.device(device)
    gd = _gen_device(generator, device)
    jmax = cfg.min_step_idx
    if cfg.bootstrap_fraction is None:
        j = torch.randint(0, jmax + 1, (batch, time), device=gd, generator=generator)
    else:
        exp_rows = cfg.bootstrap_fraction * batch
        n_boot = int(exp_rows) + int(torch.rand((), device=gd, generator=generator).item() < exp_rows % 1)
        rows = torch.randperm(batch, device=gd, generator=generator)[:n_boot]
        j = torch.full((batch, time), jmax, dtype=torch.long, device=gd)
        j[rows] = torch.randint(0, jmax, (n_boot, time), device=gd, generator=generator)
    num_pos = 2 ** j  # 1/d positions on the tau grid
    m = (torch.rand((batch, time), device=gd, generator=generator) * num_pos).long().clamp_max(num_pos - 1)
    tau_idx = m * 2 ** (jmax - j)  # k_max * d * m
    frac = cfg.context_fraction if context_fraction is None else context_fraction
    if frac > 0:
        ctx = torch.rand((batch, time), device=gd, generator=generator) < frac
        tau_idx = torch.where(ctx, context_tau_idx(cfg.k_max, cfg.context_noise), tau_idx)
        j = torch.where(ctx, jmax, j)
    return tau_idx.to(device), j.to(device)


class RunningRMS(nn.Module):
    """Debiased EMA of x^2 per loss term; buffers are saved in checkpoints (state_dict)."""

    def __init__(self, num_terms: int, decay: float, eps: float = 1e-8) -> None:
        super().__init__()
        self.decay, self.eps = decay, eps
        self.register_buffer("sq_ema", torch.zeros(num_terms, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(num_terms, dtype=torch.long))

    def update(self, i: int, value: torch.Tensor) -> None:
        v = value.detach().to(self.sq_ema.dtype)
        self.sq_ema[i] = self.decay * self.sq_ema[i] + (1.0 - self.decay) * v * v
        self.count[i] += 1

    def rms(self, i: int) -> torch.Tensor:
        if int(self.count[i]) == 0:
            return torch.ones((), dtype=self.sq_ema.dtype, device=self.sq_ema.device)
        debias = 1.0 - self.decay ** int(self.count[i])
        return (self.sq_ema[i] / debias).sqrt().clamp_min(self.eps)

    def normalise(self, i: int, value: torch.Tensor, update: bool) -> torch.Tensor:
        if update:
            self.update(i, value)
        return value / self.rms(i).to(value.dtype)


class ShortcutForcingLoss(nn.Module):
    """`loss, metrics = loss_fn(model, z1_btnc, actions_btsd, action_mask_bts, generator=None)`.

    `model` is called as model(z, tau_idx, step_idx, actions, mask) with cache-aligned actions (a
    `DynamicsModel` or a torch.compile'd one).  The running-RMS statistics update only in training mode
    (`loss_fn.train()`, the default); `loss_fn.eval()` freezes them for held-out evaluation.
    tau_idx_bt / step_idx_bt / z0_btnc may be given explicitly (tests, paired evaluations).
    """

    FLOW, BOOT = 0, 1  # RunningRMS slots in per-term mode
    TOTAL = 0  # RunningRMS slot in shared mode

    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rms = RunningRMS(2, cfg.rms_decay)
        # Under FSDP every forward gathers weights across ranks, so every rank must call the model the same
        # number of times: the teacher passes then run (on one row, result unused) even when this rank's
        # batch has no bootstrap step. Set by train_phase1_cosmos.py when the model is sharded.
        self.same_calls_on_every_rank = False

    def _update_rms(self, flow: torch.Tensor | None, boot: torch.Tensor | None, total: torch.Tensor) -> None:
        """Feed this step's loss terms to the running RMS. Under torchrun the squared terms are averaged over
        the ranks first (one all-reduce, every rank calls it once per training step), so every rank holds
        the same statistics and rank 0's checkpoint resumes every rank exactly."""
        per_term = self.cfg.rms_per_term
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            for i, v in ((self.FLOW, flow), (self.BOOT, boot)) if per_term else ((self.TOTAL, total),):
                if v is not None:
                    self.rms.update(i, v)
            return
        sq = torch.zeros(5, dtype=torch.float64, device=total.device)  # flow^2, has flow, boot^2, has boot, total^2
        if flow is not None:
            sq[0], sq[1] = flow.detach().double() ** 2, 1.0
        if boot is not None:
            sq[2], sq[3] = boot.detach().double() ** 2, 1.0
        sq[4] = total.detach().double() ** 2
        dist.all_reduce(sq)
        if per_term:
            for slot, i in ((self.FLOW, 0), (self.BOOT, 2)):
                if sq[i + 1] > 0:
                    self.rms.update(slot, (sq[i] / sq[i + 1]).sqrt())
        else:
            self.rms.update(self.TOTAL, (sq[4] / dist.get_world_size()).sqrt())

    @torch.no_grad()
    def teacher_target(self, model: nn.Module, zt: torch.Tensor, tau_idx: torch.Tensor, step_idx: torch.Tensor,
                       boot: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sg((b' + b'')/2) (B,T,N,C) for the bootstrap steps `boot` (B,T); other steps are don't-care."""
        k = self.cfg.k_max
        tau = (tau_idx.double() / k).to(zt.dtype)[..., None, None]
        half = torch.where(boot, step_idx + 1, step_idx)  # Δ/2 label on bootstrap steps
        half_d = (0.5 ** half.double()).to(zt.dtype)[..., None, None]  # = Δ/2 on bootstrap steps
        b1 = (model(zt, tau_idx, half, actions, mask).float() - zt) / (1 - tau)
        bmask = boot[..., None, None]
        z_mid = torch.where(bmask, zt + b1 * half_d, zt)
        tau_mid_idx = torch.where(boot, tau_idx + (k * 0.5 ** half.double()).round().long(), tau_idx)
        b2 = (model(z_mid, tau_mid_idx, half, actions, mask).float() - z_mid) / (1 - tau - half_d).clamp_min(1e-6)
        return torch.where(bmask, (b1 + b2) / 2, torch.zeros_like(b1))

    def forward(self, model: nn.Module, z1_btnc: torch.Tensor, actions_btsd: torch.Tensor,
                action_mask_bts: torch.Tensor, generator: torch.Generator | None = None,
                tau_idx_bt: torch.Tensor | None = None, step_idx_bt: torch.Tensor | None = None,
                z0_btnc: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        b, t = z1_btnc.shape[:2]
        dev = z1_btnc.device
        z1 = z1_btnc.float()
        if tau_idx_bt is None or step_idx_bt is None:
            tau_idx_bt, step_idx_bt = sample_tau_step(cfg, b, t, dev, generator)
        if z0_btnc is None:
            z0_btnc = torch.randn(z1.shape, device=_gen_device(generator, dev), generator=generator).to(dev)
        tau = (tau_idx_bt.double() / cfg.k_max).float()  # (B,T)
        tau4 = tau[..., None, None]
        zt = (1 - tau4) * z0_btnc.float() + tau4 * z1
        pred = model(zt, tau_idx_bt, step_idx_bt, actions_btsd, action_mask_bts).float()  # student
        w = 0.9 * tau + 0.1
        boot = step_idx_bt < cfg.min_step_idx  # (B,T)
        flow = ~boot
        l_flow = (pred - z1).pow(2).mean((2, 3))  # (B,T)
        per_step = torch.where(flow, w * l_flow, torch.zeros_like(l_flow))
        n_flow, n_boot = int(flow.sum()), int(boot.sum())
        zero = pred.new_zeros(())
        flow_term = (per_step.sum() / n_flow) if n_flow else zero
        boot_term = zero
        if n_boot:
            rows = boot.any(1)
            target = self.teacher_target(model, zt[rows], tau_idx_bt[rows], step_idx_bt[rows], boot[rows],
                                         actions_btsd[rows], action_mask_bts[rows])
            omt = (1 - tau4[rows])
            l_boot = (omt ** 2 * ((pred[rows] - zt[rows]) / omt - target).pow(2)).mean((2, 3))  # (Bb,T)
            wl_boot = torch.where(boot[rows], w[rows] * l_boot, torch.zeros_like(l_boot))
            boot_term = wl_boot.sum() / n_boot
        elif self.same_calls_on_every_rank:
            self.teacher_target(model, zt[:1], tau_idx_bt[:1], step_idx_bt[:1], boot[:1], actions_btsd[:1],
                                action_mask_bts[:1])
        total = (flow_term * n_flow + boot_term * n_boot) / (n_flow + n_boot)
        if self.training and cfg.rms_normalise:
            self._update_rms(flow_term if n_flow else None, boot_term if n_boot else None, total)
        if cfg.rms_normalise and cfg.rms_per_term:
            loss = zero
            if n_flow:
                loss = loss + self.rms.normalise(self.FLOW, flow_term, False)
            if n_boot:
                loss = loss + self.rms.normalise(self.BOOT, boot_term, False)
        elif cfg.rms_normalise:
            loss = self.rms.normalise(self.TOTAL, total, False)
        else:
            loss = total
        metrics = {"flow": float(flow_term.detach()), "bootstrap": float(boot_term.detach()),
                   "total": float(total.detach()), "loss": float(loss.detach()),
                   "bootstrap_frac": n_boot / (b * t)}
        return loss, metrics
