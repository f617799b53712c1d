"""Phase 3: PMPO imagination RL with TD(lambda) values inside the frozen world model (SPEC section 6).

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

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import trange

from dreamer.agent import Agent, AgentConfig, entropy
from dreamer.configuration import from_dict
from dreamer.data.loader import ClipSampler
from dreamer.data.prepare import prepare_data
from dreamer.dynamics import DynamicsConfig, DynamicsModel
from dreamer.imagination import grouped_step, imagine, make_phase3_optimizer, phase3_losses, phase3_terms
from dreamer.imagination.compare import compare_policies, comparison_table, flat_scalars
from dreamer.training import loop, sharding
from dreamer.training.checkpoint import atomic_save, atomic_write_bytes, load_checkpoint, strip_compiled_prefix
from dreamer.training.pictures import latent_rows_to_grid
from dreamer.training.runtime import parse_args, start
from dreamer.viewer.video import phase_video

log = logging.getLogger("phase3")
FINAL, PHASE2, EVAL_JSON = "phase3_final.pt", "phase2_final.pt", "phase3_eval.json"


def load_phase2(path: Path, cfg) -> dict:
    """The phase-2 checkpoint; ``cfg.dynamics`` / ``cfg.agent`` become the ones it was trained with."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("dynamics", "agent") if k not in ckpt.get("models", {})]
    if missing:
        raise ValueError(f"checkpoint {path} lacks models {missing} (has {sorted(ckpt.get('models', {}))}); "
                         f"phase 3 needs the {PHASE2} written by train_phase2.py")
    for key, cls in (("dynamics", DynamicsConfig), ("agent", AgentConfig)):
        trained = from_dict(cls, ckpt["config"][key], key)
        if trained != getattr(cfg, key):
            log.warning("%s config of %s differs from the given config; using the checkpoint's: %s", key, path, trained)
            setattr(cfg, key, trained)
    return ckpt


def build_models(ckpt: dict, cfg, tokenizer, cache, path: Path, device) -> tuple[DynamicsModel, Agent]:
    """Dynamics and agent with the phase-2 weights (refused when the checkpoint does not fit the cache)."""
    loop.check_compatible(ckpt, cache, path)
    cards, S = list(cache.action_space.cards), cache.chunk_len
    dynamics = DynamicsModel(cfg.dynamics, tokenizer.num_tokens, tokenizer.channels, cards, S)
    agent = Agent(cfg.agent, tokenizer.num_tokens, tokenizer.channels, cards, S)
    dynamics.load_state_dict(strip_compiled_prefix(ckpt["models"]["dynamics"]))
    agent.load_state_dict(strip_compiled_prefix(ckpt["models"]["agent"]))
    return dynamics.to(device), agent.to(device)


def step_generator(cfg, rank: int, step: int, device) -> torch.Generator:
    """The draws of step ``step`` depend on (seed, rank, step) only, so a resumed run repeats them."""
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + rank * 7_919 + step)


def evaluate(rt, tokenizer, cache, agents: dict, with_random: bool) -> dict:
    cfg = rt.cfg
    seeds = [cfg.eval.seed + i for i in range(cfg.phase3.eval_episodes)]
    context = min(cfg.data.clip_len, cfg.agent.max_time)  # the history length the trunk was trained on
    out = compare_policies(cfg.env, seeds, tokenizer, cache, agents, cfg.eval.max_steps, with_random, context)
    return {"seeds": seeds, "max_steps": cfg.eval.max_steps, "context": context, **out}


def main(argv=None) -> dict:
    cfg, args = parse_args(__doc__, argv, lambda p: p.add_argument(
        "--phase2-checkpoint", default=None, help=f"phase-2 checkpoint (default <run dir>/{PHASE2})"))
    p2_path = Path(args.phase2_checkpoint) if args.phase2_checkpoint else cfg.run_dir / PHASE2
    p2 = load_phase2(p2_path, cfg)  # before start(): the saved config must name the models it carries
    rt = start(cfg, "phase3")
    pc = cfg.phase3
    tokenizer, cache = prepare_data(cfg, rt)
    dynamics, agent = build_models(p2, cfg, tokenizer, cache, p2_path, rt.device)
    dynamics.requires_grad_(False).eval()
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
    start_step, _ = loop.resume(rt, "phase3", models, opt, sched, cache)
    log.info("phase 3 from %s: policy + value heads (%d parameters), steps %d..%d, horizon %d, context %d", p2_path,
             sum(p.numel() for p in agent.phase3_parameters()), start_step, pc.steps, pc.horizon, pc.context)
    trunk = agent.trunk
    if pc.compile and rt.device.type == "cuda":
        trunk = torch.compile(agent.trunk, dynamic=True)  # called every imagined step on a growing history
    elif pc.compile:
        log.warning("compile=true ignored on %s (torch.compile is used on CUDA only)", rt.device)

    def dream(batch: dict, step: int):
        with rt.autocast(pc.bf16):
            return imagine(dynamics, agent, batch, pc.horizon, step_generator(cfg, rt.rank, step, rt.device),
                           trunk=trunk)

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
                                 stop=not args.no_diagnose)

    guard = loop.NonFiniteGuard(pc.max_nonfinite)
    info = loop.data_info(cache)
    sums: dict[str, float] = {}
    n_sum, imagined, t_log = 0, 0, time.perf_counter()
    for step in trange(start_step, pc.steps, desc="phase3", disable=not rt.is_main, initial=start_step, total=pc.steps):
        batch = train.batch(step)
        im = dream(batch, step)
        with rt.autocast(pc.bf16):
            pol, val, m = phase3_losses(agent, prior, im, cfg.rl)
        loss = val if step < pc.value_warmup else pol + val  # value warm-up: see Phase3Config.value_warmup
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
            log.info("step %d: policy loss %.4f, value loss %.4f, A>=0 %.0f / A<0 %.0f, entropy %.3f, KL %.4f, "
                     "imagined reward %.3f", done, avg["loss/policy"], avg["loss/value"], avg["adv/num_pos"],
                     avg["adv/num_neg"], avg["policy/entropy"], avg["policy/kl_prior"], avg["imagined/reward_mean"])
            sums, n_sum, imagined, t_log = {}, 0, 0, time.perf_counter()
        if rt.is_main and (done % pc.eval_every == 0 or done == pc.steps):
            if rt.writer is not None:
                grid = latent_rows_to_grid(tokenizer, [im.context, im.latents[:, 1:]], cache.mean, cache.std,
                                           size=cfg.env.size)
                rt.writer.add_image("imagination/context|imagined", grid, done, dataformats="HWC")
            if done < pc.steps and pc.eval_episodes > 0:
                ev = evaluate(rt, tokenizer, cache, {"phase3": agent}, with_random=False)
                rt.scalars(done, flat_scalars(ev["summaries"]["phase3"]), "eval/phase3/")
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            loop.save_periodic(rt, "phase3", loop.payload(cfg, done, models, opt, sched, info), pc.keep_checkpoints)

    result: dict = {}
    final = loop.payload(cfg, pc.steps, models, opt, sched, info, {"phase": 3, "phase2_checkpoint": str(p2_path)})
    if rt.is_main:  # the real-env comparison needs the agent only (replicated on every rank)
        atomic_save(final, rt.run_dir / FINAL)
        loop.save_periodic(rt, "phase3", final, pc.keep_checkpoints)
        log.info("wrote %s", rt.run_dir / FINAL)
        if pc.eval_episodes > 0:
            result = final_comparison(rt, tokenizer, cache, agent, p2)
        else:
            log.info("phase3.eval_episodes=0: no real-env comparison")
        phase_video(rt, final, tokenizer, cache)  # <run>/phase3_dream.mp4 and TensorBoard; never fails the run
    rt.close()
    return result


def final_comparison(rt, tokenizer, cache, agent: Agent, p2: dict) -> dict:
    """Random, phase-2 (BC) and phase-3 policies on the same seeds: JSON, TensorBoard, log and stdout."""
    bc = Agent(rt.cfg.agent, agent.num_tokens, agent.latent_dim, agent.action_cards, agent.chunk_len)
    bc.load_state_dict(strip_compiled_prefix(p2["models"]["agent"]))
    out = evaluate(rt, tokenizer, cache, {"phase2_bc": bc.to(rt.device), "phase3": agent}, with_random=True)
    for name, s in out["summaries"].items():
        rt.scalars(rt.cfg.phase3.steps, flat_scalars(s), f"eval/final/{name}/")
    atomic_write_bytes(rt.run_dir / EVAL_JSON, json.dumps(out, indent=1, default=float).encode())
    table = comparison_table(out["summaries"])
    log.info("real-env comparison, %d episodes per policy (%s):\n%s", len(out["seeds"]), rt.run_dir / EVAL_JSON, table)
    print(table)  # the script's final output
    return out


if __name__ == "__main__":
    main()
