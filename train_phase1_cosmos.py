"""Phase 1: train the dynamics model with shortcut forcing on cached Cosmos latents (docs/design.md §4).

    python train_phase1_cosmos.py --config configs/crafter_tiny.yaml [--set phase1.steps=2000]

Builds or reuses the latent cache, trains, logs to TensorBoard (checkpoints/<run>/tb/phase1), writes
periodic checkpoints and checkpoints/<run>/phase1_cosmos_final.pt. Rerunning the command resumes.
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm import trange

from dreamer.data.loader import ClipSampler
from dreamer.dynamics import ShortcutForcingLoss, heldout_metrics, rollout, verdict
from dreamer.pipeline.build import build_dynamics
from dreamer.pipeline.checkpoints import PREFIX, save_final
from dreamer.pipeline.cli import parse_args
from dreamer.pipeline.data import prepare_data
from dreamer.training import loop, sharding
from dreamer.training.pictures import latent_rows_to_grid
from dreamer.training.runtime import releases_on_error, start, wrap_model
from dreamer.viewer.video import phase_video

log = logging.getLogger("phase1")


def evaluate(rt, model, loss_fn, tokenizer, cache, val: ClipSampler, step: int) -> dict:
    """Held-out quality against the training-free baselines, and an open-loop picture grid."""
    pc, gen = rt.cfg.phase1, torch.Generator(device=rt.device).manual_seed(rt.cfg.seed)
    model.eval()
    sums: dict[str, float] = {}
    batches = [val.batch(10**6 + i) for i in range(pc.eval_batches)]
    for b in batches:
        m = heldout_metrics(model, loss_fn, b, pc.eval_context, generator=gen)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / pc.eval_batches
    loop.check_heldout("phase 1", sums, batches, f" (step {step})")
    batch = batches[0]
    c = pc.eval_context
    pred = rollout(model, batch["latents"][:, :c], batch["actions"][:, :c], batch["action_mask"][:, :c],
                   batch["actions"][:, c - 1 : -1], batch["action_mask"][:, c - 1 : -1], generator=gen)
    grid = latent_rows_to_grid(tokenizer, [batch["latents"][:, :c], pred, batch["latents"][:, c:]],
                               cache.mean, cache.std, size=rt.cfg.env.size)
    if rt.writer is not None:
        rt.writer.add_image("dynamics/open_loop_context|predicted|true", grid, step, dataformats="HWC")
    model.train()
    return sums


@releases_on_error
def main(argv=None) -> dict:
    cfg, args = parse_args(__doc__, argv)
    rt = start(cfg, "phase1", fresh=args.fresh)
    pc = cfg.phase1
    tokenizer, cache = prepare_data(cfg, rt)
    model = build_dynamics(cfg, tokenizer, cache, rt.device)
    loss_fn = ShortcutForcingLoss(cfg.dynamics).to(rt.device)  # holds the running-RMS buffers
    sharded = sharding.shard(rt, model, pc.fsdp, forward_methods=("forward_into",))  # before the optimizer
    loss_fn.same_calls_on_every_rank = sharded
    opt = loop.make_optimizer(model.parameters(), pc)
    sched = loop.make_scheduler(opt, pc)
    clip_len = pc.clip_len or cfg.data.clip_len
    train = ClipSampler(cache, cache.train_names, clip_len, pc.batch_size, cfg.seed, rt.rank, rt.device)
    val = ClipSampler(cache, cache.val_names or cache.train_names, clip_len, pc.batch_size, cfg.seed + 1,
                      0, rt.device)
    models = {"dynamics": model, "loss": loss_fn}
    start_step, _ = loop.resume(rt, PREFIX[1], models, opt, sched, cache)
    log.info("dynamics: %.2fM parameters; training steps %d..%d", sum(p.numel() for p in model.parameters()) / 1e6,
             start_step, pc.steps)

    if pc.diagnose:
        from diagnostics import diagnose_before_training

        diagnose_before_training(1, {"tokenizer": tokenizer, "dynamics": model, "loss": loss_fn}, train.batch(0),
                                 rt.device, optimizer=opt, cache=cache, stop=not args.no_diagnose)

    net = wrap_model(rt, model, pc.compile, key="phase1.compile")
    guard = loop.NonFiniteGuard(pc.max_nonfinite)
    info = loop.data_info(cache)
    tokens, t0 = 0, time.perf_counter()
    metrics: dict = {}
    for step in trange(start_step, pc.steps, desc="phase1", disable=None if rt.is_main else True, initial=start_step, total=pc.steps):
        batch = train.batch(step)
        if pc.compile and model.validate_inputs:  # compiled, the model skips its data-dependent checks: here instead
            model.check_actions(batch["actions"], batch["action_mask"])
        with rt.autocast(pc.bf16):
            loss, m = loss_fn(net, batch["latents"], batch["actions"], batch["action_mask"])
        _, norms = loop.optimizer_step(opt, sched, loss, pc, guard, step, batch["provenance"])
        tokens += batch["latents"].shape[0] * batch["latents"].shape[1] * batch["latents"].shape[2] * rt.world
        done = step + 1
        if done % pc.log_every == 0 or done == pc.steps:
            dt = time.perf_counter() - t0
            rt.scalars(done, {"total": m["total"], "flow": m["flow"], "bootstrap": m["bootstrap"]}, "loss/dynamics/")
            rt.scalars(done, {"grad_norm": norms["total"], "lr": sched.get_last_lr()[0], "latent_tokens_per_s": tokens / dt,
                              "skipped_steps": guard.total}, "train/")
            tokens, t0 = 0, time.perf_counter()
        if (rt.is_main or sharded) and (done % pc.eval_every == 0 or done == pc.steps):  # FSDP: every rank
            metrics = evaluate(rt, model, loss_fn, tokenizer, cache, val, done)
            if pc.diagnose:
                from diagnostics import diagnose_periodic

                diagnose_periodic(rt, done, 1, {"tokenizer": tokenizer, "dynamics": model, "loss": loss_fn}, batch,
                                  optimizer=opt)
            rt.scalars(done, metrics, "eval/dynamics/")
            log.info("step %d: one-step mse %.4f (copy-last %.4f), action-shuffle ratio %.3f", done,
                     metrics.get("one_step_mse", float("nan")), metrics.get("copy_last_one_step_mse", float("nan")),
                     metrics.get("action_shuffle_ratio", float("nan")))
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:
            loop.save_periodic(rt, PREFIX[1], loop.payload(cfg, done, models, opt, sched, info), pc.keep_checkpoints)

    guard.finish("phase 1")
    if not metrics and (rt.is_main or sharded):  # resumed at the end: the held-out figures of the final weights
        metrics = evaluate(rt, model, loss_fn, tokenizer, cache, val, pc.steps)
    final = loop.payload(cfg, pc.steps, models, opt, sched, info, {"phase": 1, "eval": metrics})  # every rank
    if rt.is_main:
        save_final(rt, 1, final)
        ok, line = verdict(metrics)
        (log.info if ok else log.warning)("world model (held-out, %d steps): %s", pc.steps, line)
        phase_video(rt, final, tokenizer, cache)  # <run>/phase1_dream.mp4 and TensorBoard; never fails the run
    rt.close()
    return metrics


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
