"""Phase 0: fit the Cosmos tokenizer to the episode frames through the pooled bottleneck (docs/tokenizer.md).

    python train_phase0_tokenizer.py --config configs/crafter_small.yaml [--set phase0.steps=500]

Trains ``AutoencoderKLCosmos`` (a fresh ``tokenizer.preset``, or fine-tunes ``phase0.init_from`` /
``tokenizer.pretrained`` when those hold weights) as encode → pool → unpool → decode on clips of
1 + S·k frames, logs held-out reconstructions to TensorBoard (checkpoints/<run>/tb/phase0), writes
periodic checkpoints, and saves the fitted tokenizer with ``save_pretrained`` into
``phase0.out_dir`` (default checkpoints/<run>/tokenizer). Phases 1–3 load it frozen through
``tokenizer.pretrained``. Rerunning the command resumes.

With ``tokenizer.kind: crafter_state`` (the privileged-state reference, dreamer/tokenizer/crafter_state.py)
there is nothing to fit: the phase collects the episodes (when ``data.collect`` and too few are there), logs
that, and exits.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import trange

from dreamer.agent.losses import bc_accuracy, bc_loss
from dreamer.data.cache import _split
from dreamer.data.episode import load_episode
from dreamer.pipeline.checkpoints import PREFIX as PHASE_PREFIX
from dreamer.pipeline.cli import parse_args
from dreamer.pipeline.data import episode_paths
from dreamer.presets import to_dict
from dreamer.tokenizer import CosmosTokenizerWrapper
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
from dreamer.training import loop
from dreamer.training.checkpoint import latest_checkpoint
from dreamer.training.runtime import releases_on_error, start, unwrap, wrap_model

log = logging.getLogger("phase0")
PREFIX = PHASE_PREFIX[0]


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
    """The pooled autoencoder and, when phase0.action_weight > 0, the auxiliary action head on its latents:
    one module, so DDP averages the head's gradients too. forward(frames) → (recon, target, z, logits | None)."""

    def __init__(self, model: PooledAutoencoder, head: ActionHead | None):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, frames):
        recon, target, z = self.model(frames)
        return recon, target, z, (self.head(z) if self.head is not None else None)


@torch.no_grad()
def heldout_action_accuracy(objective: FitObjective, batches: list[dict]) -> float:
    """The action head's accuracy on the held-out clips' valid action entries."""
    hit, n = 0.0, 0.0
    for b in batches:
        *_, logits = objective(b["frames"])
        w = b["action_mask"].float().sum() * len(logits)
        hit += float(bc_accuracy(logits, b["actions"], b["action_mask"])) * float(w)
        n += float(w)
    return hit / max(n, 1.0)


def evaluate(rt, objective: FitObjective, batches, step: int, tag: str = "eval/tokenizer/") -> dict:
    metrics, (orig, recon) = evaluate_reconstruction(objective.model, batches, rt.cfg.phase0.bf16)
    if objective.head is not None:
        objective.eval()
        metrics["action_accuracy"] = heldout_action_accuracy(objective, batches)
        objective.train()
    loop.check_heldout("phase 0", metrics, batches, f" (step {step})", ("psnr", "mse", "action_accuracy"))
    rt.scalars(step, metrics, tag)
    if rt.writer is not None:
        rt.writer.add_image("tokenizer/heldout_original|reconstruction", side_by_side(orig, recon), step,
                            dataformats="HWC")
    return metrics


def no_fitting(cfg, rt) -> dict:
    """A tokenizer with nothing to fit (crafter_state): collect the episodes, as phase 0 does, and stop."""
    from dreamer.tokenizer.crafter_state import check_episode_files

    paths = episode_paths(cfg, rt)
    check_episode_files(paths)  # old episodes without the state extras: say so now, not in phase 1
    log.info("tokenizer.kind=%s needs no fitting (a fixed encoding of the privileged game state): %d episodes in %s; "
             "go on with phase 1", cfg.tokenizer.kind, len(paths), cfg.data.episodes_dir)
    rt.barrier()
    rt.close()
    return {"kind": cfg.tokenizer.kind, "fitted": False, "episodes": len(paths)}


@releases_on_error
def main(argv=None) -> dict:
    cfg, args = parse_args(__doc__, argv)
    rt = start(cfg, "phase0", fresh=args.fresh)
    if cfg.tokenizer.kind != "cosmos":
        return no_fitting(cfg, rt)
    pc = cfg.phase0
    out = output_dir(cfg)
    if latest_checkpoint(rt.run_dir, PREFIX) is None and out.exists() and not pc.init_from:
        raise FileExistsError(
            f"{out} already holds a fitted tokenizer and {rt.run_dir} has no {PREFIX} checkpoint to resume: delete "
            f"{out} to fit again, or set phase0.init_from={out} to keep fitting it")
    source = init_source(cfg, out)
    vae, desc = build_trainable_vae(cfg.tokenizer.preset, source, cfg.tokenizer.temporal_compression)
    if pc.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    model = PooledAutoencoder(vae, cfg.tokenizer.resolution, cfg.tokenizer.pool).to(rt.device)
    S = model.S

    paths = episode_paths(cfg, rt)
    frames = load_frames(paths)
    train_names, val_names = _split(sorted(frames), cfg.data.val_fraction, cfg.data.split_seed)  # the cache's split
    if not val_names:
        log.warning("no held-out episodes (data.val_fraction=%s, %d episodes): evaluating on training episodes",
                    cfg.data.val_fraction, len(frames))
        val_names = train_names
    acts, head = None, None
    if pc.action_weight > 0:  # the auxiliary behaviour head (phase0.action_weight)
        acts = aligned_actions(paths, S)
        cards = list(load_episode(paths[0]).action_space.cards)
        head = ActionHead(model.num_tokens, int(vae.config.latent_channels), cards, S).to(rt.device)
    objective = FitObjective(model, head)
    train = FrameClipSampler({n: frames[n] for n in train_names}, pc.clip_frames, S, pc.batch_size, cfg.seed, rt.rank,
                             acts)
    val = FrameClipSampler({n: frames[n] for n in val_names}, pc.clip_frames, S, pc.eval_clips, cfg.seed + 1, 0, acts)
    picks = val.draw(10**6)
    heldout = [val.collate(picks[i : i + pc.batch_size], rt.device) for i in range(0, len(picks), pc.batch_size)]

    opt = loop.make_optimizer(objective.parameters(), pc)
    sched = loop.make_scheduler(opt, pc)
    models = {"vae": vae} if head is None else {"vae": vae, "action_head": head}
    start_step, ckpt = loop.resume(rt, PREFIX, models, opt, sched)
    log.info("tokenizer: %s, %.2fM parameters, S=%d, %d tokens x %d channels; %d train / %d held-out episodes; "
             "steps %d..%d", desc, sum(p.numel() for p in vae.parameters()) / 1e6, S,
             model.num_tokens,
             int(vae.config.latent_channels), len(train_names), len(val_names), start_step, pc.steps)
    baseline = (ckpt or {}).get("baseline")
    if baseline is None and rt.is_main:
        baseline = evaluate(rt, objective, heldout, start_step, "eval/tokenizer_init/")
        log.info("before fitting (%s): held-out PSNR %.2f dB through the pooled bottleneck (pooled pixels: %.2f dB)",
                 desc, baseline["psnr"], baseline["psnr_pooled_pixels"])

    net = wrap_model(rt, objective, pc.compile)
    guard = loop.NonFiniteGuard(pc.max_nonfinite)
    n_frames, t0, metrics = 0, time.perf_counter(), dict((ckpt or {}).get("eval") or {})
    curve = [tuple(c) for c in (ckpt or {}).get("curve") or []]  # (step, held-out PSNR) of every evaluation
    last = (ckpt or {}).get("stopped_at") or pc.steps  # where fitting ends: the last step, or a plateau
    extra = {"phase": 0, "baseline": baseline, "source": desc}
    for step in trange(start_step, last, desc="phase0", disable=None if rt.is_main else True, initial=start_step, total=pc.steps):
        batch = train.batch(step, rt.device)
        with rt.autocast(pc.bf16):
            recon, target, _, logits = net(batch["frames"])
        loss, m = reconstruction_loss(recon, target, pc.perceptual_weight)
        if logits is not None:
            action_loss = bc_loss(logits, batch["actions"], batch["action_mask"])
            loss = loss + pc.action_weight * action_loss
            m.update(action=float(action_loss.detach()), total=float(loss.detach()))
        _, norms = loop.optimizer_step(opt, sched, loss, pc, guard, step, batch["provenance"])
        n_frames += batch["frames"].shape[0] * batch["frames"].shape[1] * rt.world
        done = step + 1
        if done % pc.log_every == 0 or done == pc.steps:
            rt.scalars(done, m, "loss/tokenizer/")
            rt.scalars(done, {"grad_norm": norms["total"], "lr": sched.get_last_lr()[0],
                              "frames_per_s": n_frames / (time.perf_counter() - t0), "skipped_steps": guard.total},
                       "train/")
            n_frames, t0 = 0, time.perf_counter()
        stop = False
        if rt.is_main and (done % pc.eval_every == 0 or done == pc.steps):
            metrics = evaluate(rt, objective, heldout, done)
            curve.append((done, metrics["psnr"]))
            stop = plateaued(curve, pc.patience, pc.min_delta)
            acc = f", held-out action accuracy {metrics['action_accuracy']:.3f}" if "action_accuracy" in metrics else ""
            log.info("step %d: held-out PSNR %.2f dB (before fitting %.2f, pooled pixels %.2f), train mse %.4f%s%s",
                     done, metrics["psnr"], baseline["psnr"], metrics["psnr_pooled_pixels"], m["mse"], acc,
                     f"; no gain of {pc.min_delta} dB in {pc.patience} evaluations: stopping" if stop else "")
        if rt.broadcast_flag(stop):
            last = done
            break
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            loop.save_periodic(rt, PREFIX, loop.payload(cfg, done, models, opt, sched, None,
                                                        dict(extra, eval=metrics, curve=curve)), pc.keep_checkpoints)

    guard.finish("phase 0")
    if rt.is_main and start_step >= last and out.exists():
        log.info("phase 0 already complete (%d steps): %s is up to date; raise phase0.steps to keep fitting", last,
                 out)
    elif rt.is_main:
        if not metrics:
            metrics = evaluate(rt, objective, heldout, last)
        stopped = {"stopped_at": last} if last < pc.steps else {}
        final = loop.payload(cfg, last, models, opt, sched, None, dict(extra, eval=metrics, curve=curve, **stopped))
        loop.save_periodic(rt, PREFIX, final, pc.keep_checkpoints)
        info = {"step": last, "source": desc, "preset": cfg.tokenizer.preset, "temporal_compression": S,
                "resolution": cfg.tokenizer.resolution, "pool": cfg.tokenizer.pool, "eval": metrics,
                "before_fitting": baseline, "curve": curve, "episodes": {"train": train_names, "val": val_names},
                "phase0": to_dict(pc)}
        save_tokenizer(unwrap(vae), out, info)
        # The handoff: the wrapper loads the folder frozen and sees exactly these weights.
        frozen = CosmosTokenizerWrapper(cfg=dataclasses.replace(cfg.tokenizer, pretrained=str(out)))
        ident = frozen.identity()
        log.info("wrote %s (weights %s): held-out PSNR %.2f dB vs %.2f dB before fitting", out,
                 ident["weights_sha256"][:12], metrics["psnr"], baseline["psnr"])
        if not cfg.tokenizer.pretrained or Path(cfg.tokenizer.pretrained).resolve() != out.resolve():
            log.info("phases 1-3 use it with --set tokenizer.pretrained=%s (and a fresh data.cache_dir)", out)
        metrics = dict(metrics, before_fitting=baseline, weights_sha256=ident["weights_sha256"])
    rt.barrier()
    rt.close()
    return metrics


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
