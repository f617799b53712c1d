"""Phase 2: agent trunk + policy/reward/continue heads by behaviour cloning on cached latents (docs/design.md §5).

    python train_phase2.py --config configs/crafter_tiny.yaml \
        [--checkpoint checkpoints/crafter_tiny/phase1_cosmos_final.pt] [--set phase2.steps=2000]

Loads the phase-1 dynamics (frozen, carried forward), refuses a checkpoint whose tokenizer, latent
statistics or action space differ from the cache, trains the agent, logs to TensorBoard
(checkpoints/<run>/tb/phase2), writes periodic checkpoints and checkpoints/<run>/phase2_final.pt (with phase2.keep_best also
phase2_best.pt, the weights of the lowest held-out BC NLL), then
evaluates the BC policy in the real env next to a uniform random policy and a policy sampling the data's
action frequencies without looking at the frames, all on the same seeds (phase2_eval.json).
Rerunning the command resumes.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from torch import nn
from tqdm import trange

from dreamer.agent import Agent, phase2_loss
from dreamer.agent.heldout import action_counts, heldout, log_histograms
from dreamer.data.loader import ClipSampler
from dreamer.pipeline.build import build_agent, build_dynamics, frozen
from dreamer.pipeline.checkpoints import BEST, FINAL, PREFIX, best_so_far, save_best, save_final
from dreamer.pipeline.cli import parse_args_after
from dreamer.pipeline.data import prepare_data
from dreamer.pipeline.evaluate import curve_point, evaluate_bc
from dreamer.training import loop, sharding
from dreamer.training.checkpoint import atomic_save
from dreamer.training.runtime import releases_on_error, start, wrap_model
from dreamer.viewer.video import phase_video

log = logging.getLogger("phase2")
HELDOUT_KEYS = ("bc_nll", "bc_accuracy", "reward_mae_zero", "continue_accuracy")  # finite on any held-out data


class Phase2Objective(nn.Module):
    """The agent with phase2_loss as its forward, so DDP / torch.compile wrap one module."""

    def __init__(self, agent: Agent, rl):
        super().__init__()
        self.agent, self.rl = agent, rl

    def forward(self, batch: dict, compute_metrics: bool = True):
        return phase2_loss(self.agent, batch, self.agent.cfg, compute_metrics, self.rl)


@releases_on_error
def main(argv=None) -> dict:
    cfg, args, ckpt_path, phase1 = parse_args_after(1, "--checkpoint", __doc__, argv)  # the phase-1 final
    rt = start(cfg, "phase2", inputs=args.inputs, fresh=args.fresh)
    pc = cfg.phase2
    tokenizer, cache = prepare_data(cfg, rt)
    loop.check_compatible(phase1, cache, ckpt_path)
    dynamics = frozen(build_dynamics(cfg, tokenizer, cache, rt.device, state=phase1["models"]["dynamics"]))
    del phase1
    agent = build_agent(cfg, tokenizer, cache, rt.device)
    objective = Phase2Objective(agent, cfg.rl)
    sharded = sharding.shard(rt, objective, pc.fsdp)  # before the optimizer, which must hold the shards
    opt = loop.make_optimizer(agent.parameters(), pc)
    sched = loop.make_scheduler(opt, pc)
    train = ClipSampler(cache, cache.train_names, cfg.data.clip_len, pc.batch_size, cfg.seed, rt.rank, rt.device)
    val_names = cache.val_names or cache.train_names
    if not cache.val_names:
        log.warning("the cache has no val split (data.val_fraction=0): held-out figures use the training episodes")
    models = {"dynamics": dynamics, "agent": agent}
    start_step, _ = loop.resume(rt, PREFIX[2], models, opt, sched, cache)
    counts = action_counts(cache, cache.train_names)
    majority = np.array([int(c.argmax()) for c in counts], dtype=np.int64)
    log.info("agent: %.2fM parameters; majority action %s; training steps %d..%d",
             sum(p.numel() for p in agent.parameters()) / 1e6, majority.tolist(), start_step, pc.steps)

    if pc.diagnose:
        from diagnostics import diagnose_before_training

        diagnose_before_training(2, {"tokenizer": tokenizer, "dynamics": dynamics, "agent": agent}, train.batch(0),
                                 rt.device, optimizer=opt, cache=cache, stop=not args.no_diagnose)

    net = wrap_model(rt, objective, pc.compile)
    guard = loop.NonFiniteGuard(pc.max_nonfinite)
    info = loop.data_info(cache)
    best_nll, best_step = best_so_far(rt, 2, "bc_nll") if pc.keep_best else (float("inf"), None)
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    metrics: dict = {}
    for step in trange(start_step, pc.steps, desc="phase2", disable=None if rt.is_main else True, initial=start_step, total=pc.steps):
        done = step + 1
        log_now = done % pc.log_every == 0 or done == pc.steps
        batch = train.batch(step)
        with rt.autocast(pc.bf16):
            loss, m = net(batch, compute_metrics=log_now)
        _, norms = loop.optimizer_step(opt, sched, loss, pc, guard, step, batch["provenance"])
        if log_now:
            rt.scalars(done, {k: m[k] for k in ("loss", "bc_loss", "reward_loss", "continue_loss")}, "loss/agent/")
            rt.scalars(done, {k: v for k, v in m.items() if not k.endswith("loss")}, "agent/")
            rt.scalars(done, {"grad_norm": norms["total"], "lr": sched.get_last_lr()[0], "skipped_steps": guard.total},
                       "train/")
        if (rt.is_main or sharded) and (done % pc.eval_every == 0 or done == pc.steps):  # FSDP: every rank
            metrics, acts = heldout(agent, cache, val_names, cfg.data.clip_len, majority, pc.batch_size, rt.device, gen,
                                    cfg.rl)
            loop.check_heldout("phase 2", metrics, [{"provenance": val_names}], f" (step {done})", HELDOUT_KEYS)
            rt.scalars(done, metrics, "eval/agent/")
            log_histograms(rt.writer, cache.action_space.names, acts, done)
            log.info("step %d: held-out BC accuracy %.3f (majority action %.3f), NLL %.3f; reward MAE on rewarded "
                     "steps %.3f (constant 0: %.3f), elsewhere %.4f; continue accuracy %.4f (base rate %.4f); value-"
                     "return corr %.2f", done, metrics["bc_accuracy"], metrics["majority_accuracy"], metrics["bc_nll"],
                     metrics.get("reward_mae_nonzero", float("nan")),
                     metrics.get("reward_mae_nonzero_constant", float("nan")), metrics["reward_mae_zero"],
                     metrics["continue_accuracy"], metrics["continue_base_rate_accuracy"],
                     metrics.get("value_return_corr", float("nan")))
        if pc.env_eval_every and done % pc.env_eval_every == 0 and done < pc.steps and rt.is_main and not sharded:
            curve_point(rt, tokenizer, agent, cache, pc.env_eval_episodes, done, "eval/phase2/bc/")
        evaluated = done % pc.eval_every == 0 or done == pc.steps
        if pc.keep_best and evaluated and rt.broadcast_flag(rt.is_main and metrics["bc_nll"] < best_nll):
            best = loop.payload(cfg, done, models, data_info=info, extra={"eval": {"heldout": metrics}})  # every rank
            if rt.is_main:  # rank 0 judged (its held-out figures), every rank gathered
                best_nll, best_step = metrics["bc_nll"], done
                log.info("step %d: lowest held-out BC NLL so far (%.3f): wrote %s", done, best_nll,
                         save_best(rt, 2, best))
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            loop.save_periodic(rt, PREFIX[2], loop.payload(cfg, done, models, opt, sched, info), pc.keep_checkpoints)

    guard.finish("phase 2")
    result: dict = {"heldout": metrics}
    if not metrics and (rt.is_main or sharded):  # resumed at the end: the held-out figures of the final weights
        metrics, _ = heldout(agent, cache, val_names, cfg.data.clip_len, majority, pc.batch_size, rt.device, gen,
                             cfg.rl)
        result["heldout"] = metrics
    if pc.keep_best:
        result["best"] = {"step": best_step, "bc_nll": best_nll}
        log.info("lowest held-out BC NLL %.3f at step %s: %s", best_nll, best_step, rt.run_dir / BEST[2])
    final = loop.payload(cfg, pc.steps, models, opt, sched, info, {"phase": 2, "eval": result,  # every rank
                                                                    "action_counts": [c.tolist() for c in counts]})
    if rt.is_main:
        save_final(rt, 2, final)
        if pc.eval_episodes > 0:
            if sharded:  # rank 0 plays alone: an unsharded copy of the final weights
                agent = build_agent(cfg, tokenizer, cache, rt.device, state=final["models"]["agent"])
            result["env"] = evaluate_bc(rt, tokenizer, agent.eval(), cache, counts)
            env = {k: result["env"][k] for k in ("bc", "random", "data_frequency") if k in result["env"]}
            final["eval"] = {**{k: v for k, v in result.items() if k != "env"},
                             "env": json.loads(json.dumps(env, default=float))}  # plain types
            atomic_save(final, rt.run_dir / FINAL[2])
        phase_video(rt, final, tokenizer, cache)  # <run>/phase2_dream.mp4 and TensorBoard; never fails the run
    rt.close()
    return result


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
