"""Phase 3: PMPO imagination RL with TD(lambda) values inside the frozen world model (docs/design.md §6).

    python train_phase3.py --config configs/crafter_tiny.yaml [--phase2-checkpoint PATH] [--set phase3.steps=200]

Loads phase2_final.pt (default checkpoints/<run>/phase2_final.pt; refused if its tokenizer, latent
statistics or action space differ from the cache), freezes the tokenizer, the dynamics, the agent's
trunk, reward and continue heads and a copy of the phase-2 policy (pi_prior), and trains the policy
and value heads on imagined rollouts. Logs to TensorBoard (checkpoints/<run>/tb/phase3), writes
periodic checkpoints and checkpoints/<run>/phase3_final.pt (rerunning the command resumes), then
compares the random, phase-2 (BC) and phase-3 policies in the real env on the same seeds
(phase3_eval.json) and prints the table.
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm import trange

from dreamer.agent import entropy
from dreamer.data.loader import ClipSampler
from dreamer.envs.evaluation import flat_scalars
from dreamer.imagination import grouped_step, imagine, make_phase3_optimizer, phase3_losses, phase3_terms
from dreamer.pipeline.build import build_agent, build_dynamics, frozen
from dreamer.pipeline.checkpoints import PREFIX, save_final
from dreamer.pipeline.cli import parse_args_after
from dreamer.pipeline.data import prepare_data
from dreamer.pipeline.evaluate import evaluate_policies, final_comparison
from dreamer.training import loop, sharding
from dreamer.training.pictures import latent_rows_to_grid
from dreamer.training.runtime import compiled, releases_on_error, start
from dreamer.viewer.video import phase_video

log = logging.getLogger("phase3")


def step_generator(cfg, rank: int, step: int, device) -> torch.Generator:
    """The draws of step ``step`` depend on (seed, rank, step) only, so a resumed run repeats them."""
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + rank * 7_919 + step)


@releases_on_error
def main(argv=None) -> dict:
    cfg, args, p2_path, p2 = parse_args_after(2, "--phase2-checkpoint", __doc__, argv)  # the phase-2 final
    rt = start(cfg, "phase3", inputs=args.inputs, fresh=args.fresh)
    pc = cfg.phase3
    tokenizer, cache = prepare_data(cfg, rt)
    loop.check_compatible(p2, cache, p2_path)  # refused when the checkpoint does not fit the cache
    dynamics = frozen(build_dynamics(cfg, tokenizer, cache, rt.device, state=p2["models"]["dynamics"]))
    agent = build_agent(cfg, tokenizer, cache, rt.device, state=p2["models"]["agent"])
    # FSDP shards the frozen world model (the large part); the small trained heads stay replicated, their
    # gradients averaged by hand (grouped_step).
    sharding.shard(rt, dynamics, pc.fsdp, forward_methods=("forward_into",))
    prior = agent.freeze_for_phase3()  # pi_prior: frozen copy of the phase-2 policy head
    for m in (agent.trunk, agent.reward, agent.cont):
        m.eval()
    opt = make_phase3_optimizer(agent, pc)
    sched = loop.make_scheduler(opt, pc)
    train = ClipSampler(cache, cache.train_names, pc.context, pc.batch_size, cfg.seed, rt.rank, rt.device)
    models = {"dynamics": dynamics, "agent": agent, "prior": prior}
    start_step, _ = loop.resume(rt, PREFIX[3], models, opt, sched, cache)
    log.info("phase 3 from %s: policy + value heads (%d parameters), steps %d..%d, horizon %d, context %d", p2_path,
             sum(p.numel() for p in agent.phase3_parameters()), start_step, pc.steps, pc.horizon, pc.context)
    trunk, step_fn = agent.trunk, None
    if pc.compile:  # both are called every imagined step, on a growing history / KV cache: symbolic sizes
        trunk = compiled(agent.trunk, rt.device, dynamic=True, key="phase3.compile")
        if not sharding.is_sharded(dynamics):
            step_fn = compiled(dynamics.forward_into, rt.device, dynamic=True, key="phase3.compile")

    def dream(batch: dict, step: int):
        with rt.autocast(pc.bf16):
            return imagine(dynamics, agent, batch, pc.horizon, step_generator(cfg, rt.rank, step, rt.device),
                           trunk=trunk, forward_into=step_fn)

    if pc.diagnose:
        from diagnostics import diagnose_before_training

        batch = train.batch(start_step)
        im0 = dream(batch, start_step)
        t0 = phase3_terms(agent, prior, im0, cfg.rl)
        per_entry = float(entropy(t0.logits, im0.action_mask).detach().mean()) / (agent.chunk_len * len(agent.action_cards))

        def audit_loss() -> torch.Tensor:  # the real phase-3 loss: one rollout, both heads' losses
            t = phase3_terms(agent, prior, dream(batch, start_step), cfg.rl)
            return t.policy_loss + t.value_loss

        diagnose_before_training(3, {"tokenizer": tokenizer, **models}, batch, rt.device, optimizer=opt, cache=cache,
                                 loss_fn=audit_loss, advantages=t0.advantages, imagined_rewards=im0.rewards,
                                 imagined_latents=im0.latents[:, 1:], policy_entropy=per_entry, rl_cfg=cfg.rl,
                                 value_warmup=pc.value_warmup, step=start_step, stop=not args.no_diagnose)

    guard = loop.NonFiniteGuard(pc.max_nonfinite)
    info = loop.data_info(cache)
    sums: dict[str, float] = {}
    n_sum, imagined, t_log = 0, 0, time.perf_counter()
    for step in trange(start_step, pc.steps, desc="phase3", disable=None if rt.is_main else True, initial=start_step, total=pc.steps):
        batch = train.batch(step)
        im = dream(batch, step)
        with rt.autocast(pc.bf16):
            pol, val, m = phase3_losses(agent, prior, im, cfg.rl)
        # The policy moves only after the value warm-up and on advantages of both signs (Phase3Config).
        update_policy = step >= pc.value_warmup and min(m["adv/frac_pos"], 1 - m["adv/frac_pos"]) >= pc.min_sign_fraction
        loss = pol + val if update_policy else val
        m["policy/updated"] = float(update_policy)
        _, norms = grouped_step(opt, sched, loss, pc, guard, step, batch["provenance"])
        sums = {k: sums.get(k, 0.0) + v for k, v in m.items()}
        n_sum, imagined = n_sum + 1, imagined + im.rewards.numel() * rt.world
        done = step + 1
        if done % pc.log_every == 0 or done == pc.steps:  # metrics averaged since the last log
            avg = {k: v / n_sum for k, v in sums.items()}
            rt.scalars(done, avg, "phase3/")
            lr_pol, lr_val = sched.get_last_lr()
            rt.scalars(done, {"grad_norm_policy": norms["policy"], "grad_norm_value": norms["value"],
                              "lr_policy": lr_pol, "lr_value": lr_val, "skipped_steps": guard.total,
                              "imagined_steps_per_s": imagined / (time.perf_counter() - t_log)}, "train/phase3/")
            log.info("step %d: policy loss %.4f, value loss %.4f, A>=0 %.0f / A<0 %.0f, policy updated on %.0f%% of "
                     "steps, value-return corr %.2f (|v-R| %.3f), entropy %.3f, KL %.4f, imagined reward %.3f", done,
                     avg["loss/policy"], avg["loss/value"], avg["adv/num_pos"], avg["adv/num_neg"],
                     100 * avg["policy/updated"], avg["value/return_corr"], avg["value/abs_error"],
                     avg["policy/entropy"], avg["policy/kl_prior"], avg["imagined/reward_mean"])
            sums, n_sum, imagined, t_log = {}, 0, 0, time.perf_counter()
        if rt.is_main and (done % pc.eval_every == 0 or done == pc.steps):
            if rt.writer is not None:
                grid = latent_rows_to_grid(tokenizer, [im.context, im.latents[:, 1:]], cache.mean, cache.std,
                                           size=cfg.env.size)
                rt.writer.add_image("imagination/context|imagined", grid, done, dataformats="HWC")
            if done < pc.steps and pc.eval_episodes > 0:
                ev = evaluate_policies(rt, tokenizer, cache, {"phase3": agent}, with_random=False)
                rt.scalars(done, flat_scalars(ev["summaries"]["phase3"]), "eval/phase3/")
        if pc.diagnose and done == max(pc.value_warmup, 1) and rt.is_main:  # the warm-up is over: signs are judged
            from diagnostics import diagnose_periodic

            diagnose_periodic(rt, done, 3, {"tokenizer": tokenizer, **models}, batch, audit=False,
                              advantages=phase3_terms(agent, prior, im, cfg.rl).advantages, imagined_rewards=im.rewards,
                              imagined_latents=im.latents[:, 1:], rl_cfg=cfg.rl, value_warmup=pc.value_warmup)
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            loop.save_periodic(rt, PREFIX[3], loop.payload(cfg, done, models, opt, sched, info), pc.keep_checkpoints)

    guard.finish("phase 3")
    result: dict = {}
    final = loop.payload(cfg, pc.steps, models, opt, sched, info, {"phase": 3, "phase2_checkpoint": str(p2_path),
                                                                    "action_counts": p2.get("action_counts")})
    if rt.is_main:  # the real-env comparison needs the agent only (replicated on every rank)
        save_final(rt, 3, final)
        if pc.eval_episodes > 0:
            result, table = final_comparison(rt, tokenizer, cache, agent, p2["models"]["agent"], dynamics)
            print(table)  # the script's final output
        else:
            log.info("phase3.eval_episodes=0: no real-env comparison")
        phase_video(rt, final, tokenizer, cache)  # <run>/phase3_dream.mp4 and TensorBoard; never fails the run
    rt.close()
    return result


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
