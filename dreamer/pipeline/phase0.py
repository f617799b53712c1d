"""Phase 0 (docs/tokenizer.md): fit the Cosmos tokenizer to the episode frames through the pooled bottleneck.

What is its own (the rest is :mod:`dreamer.pipeline.runner`): the trainable VAE (a fresh ``tokenizer.preset``, or
``phase0.init_from`` / ``tokenizer.pretrained`` when those hold weights) as encode → pool → unpool → decode on
clips of 1 + S·k frames with the optional action head, held-out PSNR and reconstructions, stopping on a plateau,
and the handoff: the fitted tokenizer saved with ``save_pretrained`` into ``phase0.out_dir`` (default
<run dir>/tokenizer), which phases 1–3 load frozen through ``tokenizer.pretrained``.

With ``tokenizer.kind: crafter_state`` (the privileged-state reference) there is nothing to fit: the phase collects
the episodes (when ``data.collect`` and too few are there), logs that, and ends.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from dreamer.agent.losses import bc_accuracy, bc_loss
from dreamer.data.cache import split_names
from dreamer.data.episode import load_episode
from dreamer.pipeline.checkpoints import PREFIX
from dreamer.pipeline.data import episode_paths
from dreamer.pipeline.runner import Phase
from dreamer.presets import to_dict
from dreamer.tokenizer import CosmosTokenizerWrapper
from dreamer.tokenizer.cosmos import preprocess
from dreamer.tokenizer.crafter_state import VIEW
from dreamer.tokenizer.fit import (
    ActionHead,
    FrameClipSampler,
    PooledAutoencoder,
    aligned_actions,
    build_trainable_vae,
    evaluate_reconstruction,
    load_frames,
    plateaued,
    reconstruction_loss,
    save_tokenizer,
    side_by_side,
)
from dreamer.tokenizer.state_head import (
    StateHead,
    heldout_state_accuracy,
    state_loss,
    state_targets,
    view_class_weights,
)
from dreamer.training.checkpoint import latest_checkpoint
from dreamer.training.optim import check_heldout, make_optimizer, make_scheduler
from dreamer.training.runtime import unwrap, wrap_model

log = logging.getLogger("phase0")


def output_dir(cfg) -> Path:
    """Where the fitted tokenizer goes: phase0.out_dir, default <run dir>/tokenizer."""
    return Path(cfg.phase0.out_dir) if cfg.phase0.out_dir else cfg.run_dir / "tokenizer"


def init_source(cfg, out: Path) -> str | None:
    """Weights to start from: phase0.init_from, else tokenizer.pretrained unless it names this phase's own
    output (a preset such as crafter_small points tokenizer.pretrained at it for phases 1–3), else None."""
    if cfg.phase0.init_from:
        return cfg.phase0.init_from
    pre = cfg.tokenizer.pretrained
    if pre and Path(pre).resolve() != out.resolve():
        return pre
    return None


class FitObjective(nn.Module):
    """The pooled autoencoder and its auxiliary heads on the latents (the action head when phase0.action_weight > 0,
    the state head when phase0.state_weight > 0): one module, so DDP averages the heads' gradients too.
    forward(frames) → (recon, target, z, the action head's PolicyDist | None, the state head's logits | None)."""

    def __init__(self, model: PooledAutoencoder, head: ActionHead | None, state_head: StateHead | None = None):
        super().__init__()
        self.model, self.head, self.state_head = model, head, state_head

    def forward(self, frames):
        recon, target, z = self.model(frames)
        return (recon, target, z, self.head(z) if self.head is not None else None,
                self.state_head(z) if self.state_head is not None else None)


@torch.no_grad()
def heldout_action_accuracy(objective: FitObjective, batches: list[dict]) -> float:
    """The action head's accuracy on the held-out clips' valid action entries."""
    hit, n = 0.0, 0.0
    for b in batches:
        dist = objective(b["frames"])[3]  # the action head's PolicyDist
        w = b["action_mask"].float().sum() * len(dist.cards)
        hit += float(bc_accuracy(dist, b["actions"], b["action_mask"])) * float(w)
        n += float(w)
    return hit / max(n, 1.0)


class Phase0(Phase):
    number = 0
    unit = "frames"
    loss_keys = ("mse", "one_minus_ssim", "action", "state", "total")  # every batch figure of the fit is a loss

    def early_result(self) -> dict | None:
        """A tokenizer with nothing to fit (crafter_state): collect the episodes, as phase 0 does, and stop."""
        cfg = self.cfg
        if cfg.tokenizer.kind == "cosmos":
            return None
        from dreamer.tokenizer.crafter_state import check_episode_files

        paths = episode_paths(self.rt)
        check_episode_files(paths)  # old episodes without the state extras: say so now, not in phase 1
        log.info("tokenizer.kind=%s needs no fitting (a fixed encoding of the privileged game state): %d episodes in "
                 "%s; go on with phase 1", cfg.tokenizer.kind, len(paths), cfg.data.episodes_dir)
        return {"kind": cfg.tokenizer.kind, "fitted": False, "episodes": len(paths)}

    def build(self) -> None:
        rt, cfg, pc = self.rt, self.cfg, self.pc
        self.out = out = output_dir(cfg)
        if latest_checkpoint(rt.run_dir, PREFIX[0]) is None and out.exists() and not pc.init_from:
            raise FileExistsError(
                f"{out} already holds a fitted tokenizer and {rt.run_dir} has no {PREFIX[0]} checkpoint to resume: "
                f"delete {out} to fit again, or set phase0.init_from={out} to keep fitting it")
        self.vae, self.desc = vae, _ = build_trainable_vae(cfg.tokenizer.preset, init_source(cfg, out),
                                                           cfg.tokenizer.temporal_compression)
        if pc.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        model = PooledAutoencoder(vae, cfg.tokenizer.resolution, cfg.tokenizer.pool, cfg.tokenizer.crop,
                                  framewise=cfg.tokenizer.window_latents == 0).to(rt.device)
        S = model.S
        self.paths = paths = episode_paths(rt)
        self.frames = frames = load_frames(paths)
        self.train_names, self.val_names = split_names(sorted(frames), cfg.data.val_fraction, cfg.data.split_seed)
        if not self.val_names:  # the cache's split, so phase 0 holds out what phases 1-3 hold out
            log.warning("no held-out episodes (data.val_fraction=%s, %d episodes): evaluating on training episodes",
                        cfg.data.val_fraction, len(frames))
            self.val_names = self.train_names
        acts, head, state_head, self.view_weight = None, None, None, None
        if pc.action_weight > 0:  # the auxiliary behaviour head (phase0.action_weight)
            acts = aligned_actions(paths, S)
            cards = list(load_episode(paths[0]).action_space.cards)
            head = ActionHead(model.num_tokens, int(vae.config.latent_channels), cards, S).to(rt.device)
        if pc.state_weight > 0:  # the auxiliary state head (phase0.state_weight): Crafter's state as a training signal
            targets = state_targets(paths, S)
            acts = {n: {**(acts or {}).get(n, {}), **targets[n]} for n in targets}
            cell_tokens = bool(cfg.tokenizer.crop) and model.num_tokens == VIEW[0] ** 2  # 9 x 9: a token per cell
            state_head = StateHead(model.num_tokens, int(vae.config.latent_channels), cell_tokens).to(rt.device)
            self.view_weight = view_class_weights(targets, self.train_names, pc.state_class_power)
            if self.view_weight is not None:
                self.view_weight = self.view_weight.to(rt.device)  # once, not every step
            log.info("state head (phase0.state_weight=%g): view cells read %s%s", pc.state_weight,
                     "from their own tokens (grid-aligned)" if cell_tokens else "from all tokens",
                     "" if self.view_weight is None else
                     f", each id weighted by its share^-{pc.state_class_power:g} (weights "
                     f"{self.view_weight.min():.2f}-{self.view_weight.max():.2f})")
        self.model, self.objective = model, FitObjective(model, head, state_head)
        self.train = FrameClipSampler({n: frames[n] for n in self.train_names}, pc.clip_frames, S, pc.batch_size,
                                      cfg.seed, rt.rank, acts)
        val = FrameClipSampler({n: frames[n] for n in self.val_names}, pc.clip_frames, S, pc.eval_clips, cfg.seed + 1,
                               0, acts)
        picks = val.draw(10**6)
        self.heldout = [val.collate(picks[i : i + pc.batch_size], rt.device) for i in range(0, len(picks), pc.batch_size)]
        self.opt = make_optimizer(self.objective.parameters(), pc)
        self.sched = make_scheduler(self.opt, pc)
        self.models = {"vae": vae, **({"action_head": head} if head else {}),
                       **({"state_head": state_head} if state_head else {})}

    def resumed(self, start_step: int, ckpt) -> None:
        rt, pc, ckpt = self.rt, self.pc, ckpt or {}
        log.info("tokenizer: %s, %.2fM parameters, S=%d, %d tokens x %d channels; %d train / %d held-out episodes; "
                 "steps %d..%d", self.desc, sum(p.numel() for p in self.vae.parameters()) / 1e6, self.model.S,
                 self.model.num_tokens, int(self.vae.config.latent_channels), len(self.train_names),
                 len(self.val_names), start_step, pc.steps)
        self.baseline = ckpt.get("baseline")
        if self.baseline is None and rt.is_main:
            self.baseline = self.evaluate(start_step, "eval/phase0/init/")
            log.info("before fitting (%s): held-out PSNR %.2f dB through the pooled bottleneck (pooled pixels: %.2f "
                     "dB)", self.desc, self.baseline["psnr"], self.baseline["psnr_pooled_pixels"])
        self.metrics = dict(ckpt.get("eval") or {})
        self.curve = [tuple(c) for c in ckpt.get("curve") or []]  # (step, held-out PSNR) of every evaluation
        self.last = ckpt.get("stopped_at") or pc.steps  # where fitting ends: the last step, or a plateau
        self.start_step = start_step

    def last_step(self) -> int:
        return self.last

    def wrap(self) -> None:
        self.net = wrap_model(self.rt, self.objective, self.pc.compile)

    def batch(self, step: int) -> dict:
        return self.train.batch(step, self.rt.device)

    def loss(self, batch: dict, step: int, log_now: bool):
        pc = self.pc
        with self.rt.autocast(pc.bf16):
            recon, target, _, logits, state_logits = self.net(batch["frames"])
        loss, m = reconstruction_loss(recon, target, pc.perceptual_weight, pc.l1_weight, pc.peak_weight)
        if logits is not None:
            action_loss = bc_loss(logits, batch["actions"], batch["action_mask"])
            loss = loss + pc.action_weight * action_loss
            m.update(action=float(action_loss.detach()), total=float(loss.detach()))
        if state_logits is not None:
            s_loss, s_m = state_loss(state_logits, batch, self.view_weight)
            loss = loss + pc.state_weight * s_loss
            m.update(s_m, total=float(loss.detach()))
        self.train_mse = m["mse"]
        return loss, m

    def count(self, batch: dict) -> int:
        return batch["frames"].shape[0] * batch["frames"].shape[1]

    def evaluate(self, step: int, images: str = "eval/phase0/") -> dict:
        """Held-out PSNR (and the action head's accuracy) with a picture of reconstructions; rank 0 only. The
        initial evaluation (``images`` eval/phase0_init/) logs its own figures; the runner logs the others."""
        rt, objective = self.rt, self.objective
        metrics, (orig, recon) = evaluate_reconstruction(objective.model, self.heldout, self.pc.bf16)
        if objective.head is not None:
            objective.eval()
            metrics["action_accuracy"] = heldout_action_accuracy(objective, self.heldout)
            objective.train()
        if objective.state_head is not None:
            objective.eval()
            with torch.no_grad():
                metrics.update(heldout_state_accuracy(objective.state_head,
                                                      [(objective.model(b["frames"])[2], b) for b in self.heldout]))
            objective.train()
        check_heldout("phase 0", metrics, self.heldout, f" (step {step})", ("psnr", "mse", "action_accuracy"))
        if images != "eval/phase0/":
            rt.scalars(step, metrics, images)
        if rt.writer is not None:
            rt.writer.add_image(f"{images}heldout_original|reconstruction", side_by_side(orig, recon), step,
                                dataformats="HWC")
        return metrics

    def after_eval(self, done: int, metrics: dict, batch: dict) -> bool:
        if not self.rt.is_main:
            return False
        pc = self.pc
        self.curve.append((done, metrics["psnr"]))
        stop = plateaued(self.curve, pc.patience, pc.min_delta)
        acc = f", held-out action accuracy {metrics['action_accuracy']:.3f}" if "action_accuracy" in metrics else ""
        if "state_view_accuracy" in metrics:
            acc += (f", held-out state head: view cells {metrics['state_view_accuracy']:.3f}, inventory "
                    f"{metrics['state_inventory_accuracy']:.3f}, facing {metrics['state_facing_accuracy']:.3f}")
        log.info("step %d: held-out PSNR %.2f dB (before fitting %.2f, pooled pixels %.2f), train mse %.4f%s%s", done,
                 metrics["psnr"], self.baseline["psnr"], metrics["psnr_pooled_pixels"], self.train_mse, acc,
                 f"; no gain of {pc.min_delta} dB in {pc.patience} evaluations: stopping" if stop else "")
        return stop

    def extra(self, metrics: dict) -> dict:
        return {"phase": 0, "baseline": self.baseline, "source": self.desc, "eval": metrics, "curve": self.curve}

    def final_extra(self, metrics: dict) -> dict:
        last = self.stopped_at or self.last
        return {**self.extra(metrics), **({"stopped_at": last} if last < self.pc.steps else {})}

    def done_already(self, start_step: int) -> bool:
        if start_step >= self.last and self.out.exists():  # every rank decides alike: no payload to gather
            log.info("phase 0 already complete (%d steps): %s is up to date; raise phase0.steps to keep fitting",
                     self.last, self.out)
            return True
        return False

    def finish(self, final: dict, metrics: dict) -> dict:
        cfg, out, last = self.cfg, self.out, final["step"]
        info = {"step": last, "source": self.desc, "preset": cfg.tokenizer.preset,
                "temporal_compression": self.model.S, "resolution": cfg.tokenizer.resolution,
                "crop": cfg.tokenizer.crop, "pool": cfg.tokenizer.pool,  # the geometry the wrapper checks on load
                "eval": metrics, "before_fitting": self.baseline, "curve": self.curve,
                "episodes": {"train": self.train_names, "val": self.val_names}, "phase0": to_dict(self.pc)}
        probe = self.probe()
        if probe:
            info["probe"] = probe
        save_tokenizer(unwrap(self.vae), out, info)
        # The handoff: the wrapper loads the folder frozen and sees exactly these weights.
        ident = CosmosTokenizerWrapper(cfg=dataclasses.replace(cfg.tokenizer, pretrained=str(out))).identity()
        log.info("wrote %s (weights %s): held-out PSNR %.2f dB vs %.2f dB before fitting", out,
                 ident["weights_sha256"][:12], metrics["psnr"], self.baseline["psnr"])
        if not cfg.tokenizer.pretrained or Path(cfg.tokenizer.pretrained).resolve() != out.resolve():
            log.info("phases 1-3 use it with --set tokenizer.pretrained=%s (and a fresh data.cache_dir)", out)
        return dict(metrics, before_fitting=self.baseline, weights_sha256=ident["weights_sha256"],
                    **({"probe": {k: v["summary"] for k, v in probe.items()}} if probe else {}))

    def probe(self) -> dict | None:
        """The held-out state probe on the fitted latents next to the frame's token-grid colours and the state
        encoder (diagnostics.probe.tokenizer_probe), when the episodes record Crafter's state and phase0.probe_stride
        > 0; logged as one line per figure and kept in phase0.json."""
        from diagnostics.probe import tokenizer_probe

        cfg, stride = self.cfg, self.pc.probe_stride
        extras = {Path(p).stem: load_episode(p).extras for p in self.paths} if stride > 0 else {}
        if not extras or any(k not in e for e in extras.values() for k in ("local_view", "inventory", "facing")):
            if stride > 0:
                log.info("no state probe: the episodes do not record Crafter's state (local_view, inventory, facing)")
            return None
        model, res, device = self.model, cfg.tokenizer.resolution, self.rt.device
        model.eval()

        def encode(windows_bthwc):
            with self.rt.autocast(self.pc.bf16):
                return model.encode(preprocess(windows_bthwc.to(device), res, cfg.tokenizer.crop))

        out = tokenizer_probe(encode, self.frames, extras, self.train_names, self.val_names, model.S,
                              cfg.tokenizer.window_latents, stride, seed=cfg.seed)
        model.train()
        names = {"latents": "the fitted latents", "pixels": "the frame's token-grid colours", "state": "the state encoder"}
        for fig, what in (("inventory", "inventory accuracy"), ("in_front_balanced", "in front of the player, balanced"),
                          ("creatures_balanced", "cow and zombie in front, balanced")):
            log.info("state probe (held out, every %d-th latent), %s: %s", stride, what,
                     ", ".join(f"{v['summary'][fig]:.3f} {names[k]}" for k, v in out.items()))
        return out
