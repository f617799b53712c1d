"""Phase 2: agent trunk + policy/reward/continue heads by behaviour cloning on cached latents (SPEC section 5).

    python train_phase2.py --config configs/crafter_tiny.yaml \
        [--checkpoint checkpoints/crafter_tiny/phase1_cosmos_final.pt] [--set phase2.steps=2000]

Loads the phase-1 dynamics (frozen, carried forward), refuses a checkpoint whose tokenizer, latent
statistics or action space differ from the cache, trains the agent, logs to TensorBoard
(checkpoints/<run>/tb/phase2), writes periodic checkpoints and checkpoints/<run>/phase2_final.pt, then
evaluates the BC policy in the real env next to a uniform random policy and a policy sampling the data's
action frequencies without looking at the frames, all on the same seeds (phase2_eval.json).
Rerunning the command resumes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import trange

from dreamer.agent import Agent, entry_log_probs, mode, phase2_loss, sample
from dreamer.agent.acting import run_agent_episodes, run_frequency_episodes, run_random_episodes
from dreamer.configuration import from_dict
from dreamer.data.loader import ClipSampler
from dreamer.data.prepare import prepare_data
from dreamer.dynamics import DynamicsConfig, DynamicsModel
from dreamer.training import loop, sharding
from dreamer.training.checkpoint import atomic_save, atomic_write_bytes, load_checkpoint, strip_compiled_prefix
from dreamer.training.runtime import parse_args, start, wrap_model
from dreamer.viewer.video import phase_video

log = logging.getLogger("phase2")
FINAL, EVAL_JSON, PHASE1_FINAL = "phase2_final.pt", "phase2_eval.json", "phase1_cosmos_final.pt"
MAX_HELDOUT_CLIPS = 512  # held-out figures use at most this many clips (evenly spread over the val split)


class Phase2Objective(nn.Module):
    """The agent with phase2_loss as its forward, so DDP / torch.compile wrap one module."""

    def __init__(self, agent: Agent):
        super().__init__()
        self.agent = agent

    def forward(self, batch: dict, compute_metrics: bool = True):
        return phase2_loss(self.agent, batch, self.agent.cfg, compute_metrics)


def load_phase1(path: Path, cfg) -> dict:
    """The phase-1 checkpoint; ``cfg.dynamics`` becomes the one the dynamics was trained with."""
    ckpt = load_checkpoint(path)
    if "dynamics" not in ckpt.get("models", {}):
        raise ValueError(f"checkpoint {path} holds no 'dynamics' model (models: {sorted(ckpt.get('models', {}))}); "
                         f"pass the phase-1 checkpoint ({PHASE1_FINAL})")
    trained = from_dict(DynamicsConfig, ckpt["config"]["dynamics"], "dynamics")
    if trained != cfg.dynamics:
        log.warning("dynamics config of %s differs from the given config; using the checkpoint's: %s", path, trained)
        cfg.dynamics = trained
    return ckpt


def frozen_dynamics(ckpt: dict, cfg, tokenizer, cache, device) -> DynamicsModel:
    model = DynamicsModel(cfg.dynamics, tokenizer.num_tokens, tokenizer.channels, list(cache.action_space.cards),
                          cache.chunk_len)
    model.load_state_dict(strip_compiled_prefix(ckpt["models"]["dynamics"]))
    return model.to(device).requires_grad_(False).eval()


def action_counts(cache, names: list[str]) -> list[np.ndarray]:
    """How often each action of each component is taken at the valid sub-steps of ``names``: D arrays (card_d,)."""
    counts = [np.zeros(c, dtype=np.int64) for c in cache.action_space.cards]
    for n in names:
        e = cache.episode(n)
        valid = np.asarray(e.actions)[np.asarray(e.action_mask)]  # (V, D)
        for d, c in enumerate(counts):
            c += np.bincount(valid[:, d], minlength=len(c))
    return counts


def heldout_clips(cache, names: list[str], T: int) -> list[tuple[str, int, int, int]]:
    """(episode, start, length, first_counted) covering every latent step of ``names`` exactly once."""
    clips = []
    for n in names:
        L = len(cache.episode(n))
        for s in range(0, L, T):
            start = min(s, max(0, L - T))  # the last clip is shifted back to full length; count new rows only
            clips.append((n, start, min(T, L), s - start))
    if len(clips) > MAX_HELDOUT_CLIPS:
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, MAX_HELDOUT_CLIPS).round().astype(int)]
    return clips


def _stack(cache, part: list, key: str, length: int, device) -> torch.Tensor:
    """(B, length, ...) tensor of one cache array for the clips ``part`` [(episode, start, ...)]."""
    rows = [np.asarray(getattr(cache.episode(n), key)[s : s + length]) for n, s, *_ in part]
    return torch.from_numpy(np.stack(rows)).to(device)


@torch.no_grad()
def heldout(agent: Agent, cache, names: list[str], T: int, majority: np.ndarray, batch_size: int, device,
            gen: torch.Generator) -> tuple[dict, dict]:
    """Held-out BC accuracy / NLL, majority-action accuracy, reward and continue figures; and the
    data's and the policy's (sampled) actions at the valid entries (V, D) for histograms."""
    agent.eval()
    sums = dict.fromkeys(("hit", "maj", "nll", "n", "rerr", "rerr_nz", "n_nz", "cont", "rows"), 0.0)
    acts: dict[str, list] = {"data": [], "policy": []}
    maj = torch.as_tensor(majority, device=device)
    by_len: dict[int, list] = {}
    for c in heldout_clips(cache, names, T):
        by_len.setdefault(c[2], []).append(c)
    for length, group in by_len.items():
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            lat = cache.standardise(_stack(cache, part, "latents", length, device))  # (B, T, N, C)
            actions, mask = _stack(cache, part, "actions", length, device), _stack(cache, part, "action_mask", length, device)
            rewards, continues = (_stack(cache, part, k, length, device) for k in ("rewards", "continues"))
            keep = torch.stack([torch.arange(length, device=device) >= f for *_, f in part])  # (B, T) rows counted
            valid = (mask & keep[..., None])[..., None].expand(actions.shape)  # (B, T, S, D)
            h = agent.trunk(lat)
            logits = agent.policy(h)
            err = (agent.reward.predict(h) - rewards).abs()
            nonzero = keep & (rewards != 0)
            sums["hit"] += ((mode(logits) == actions) & valid).sum().item()
            sums["maj"] += ((actions == maj) & valid).sum().item()
            sums["nll"] -= entry_log_probs(logits, actions, mask)[valid].sum().item()
            sums["n"] += valid.sum().item()
            sums["rerr"] += err[keep].sum().item()
            sums["rerr_nz"] += err[nonzero].sum().item()
            sums["n_nz"] += nonzero.sum().item()
            sums["cont"] += ((agent.cont(h) > 0) == (continues > 0.5))[keep].sum().item()
            sums["rows"] += keep.sum().item()
            acts["data"].append(actions[valid].view(-1, actions.shape[-1]).cpu())
            acts["policy"].append(sample(logits, gen)[valid].view(-1, actions.shape[-1]).cpu())
    agent.train()
    n, rows = max(sums["n"], 1.0), max(sums["rows"], 1.0)
    metrics = {"bc_accuracy": sums["hit"] / n, "majority_accuracy": sums["maj"] / n, "bc_nll": sums["nll"] / n,
               "reward_mae": sums["rerr"] / rows, "continue_accuracy": sums["cont"] / rows, "entries": sums["n"]}
    if sums["n_nz"]:
        metrics["reward_mae_nonzero"] = sums["rerr_nz"] / sums["n_nz"]
    return metrics, {k: torch.cat(v) if v else torch.zeros(0, len(majority), dtype=torch.long) for k, v in acts.items()}


def log_histograms(rt, names: tuple[str, ...], acts: dict, step: int) -> None:
    if rt.writer is None:
        return
    for d, name in enumerate(names):
        for who, a_vd in acts.items():
            if a_vd.numel():
                rt.writer.add_histogram(f"actions/{name}/{who}", a_vd[:, d].float(), step)


def evaluate_env(rt, cfg, tokenizer, agent: Agent, cache, counts: list[np.ndarray]) -> dict:
    """On seeds eval.seed + i: the BC policy (sampled), the uniform random policy, and the data's action
    frequencies sampled blindly (what BC gets without using the frames); writes phase2_eval.json."""
    from dreamer.envs.evaluation import summarise

    seeds = [cfg.eval.seed + i for i in range(cfg.phase2.eval_episodes)]
    context = min(cfg.data.clip_len, agent.cfg.max_time)  # the history length the trunk was trained on
    t0 = time.perf_counter()
    bc = run_agent_episodes(cfg.env, seeds, tokenizer, agent, cache.mean, cache.std, max_steps=cfg.eval.max_steps,
                            context=context, progress=rt.is_main)
    rnd = run_random_episodes(cfg.env, seeds, cards=cache.action_space.cards, max_steps=cfg.eval.max_steps,
                              progress=rt.is_main)
    freq = run_frequency_episodes(cfg.env, seeds, counts, max_steps=cfg.eval.max_steps, progress=rt.is_main)
    runs = {"bc": bc, "random": rnd, "data_frequency": freq}
    out = {"seeds": seeds, "max_steps": cfg.eval.max_steps, "context": context, "seconds": time.perf_counter() - t0,
           **{who: summarise(r) for who, r in runs.items()}, "episodes": runs}
    atomic_write_bytes(rt.run_dir / EVAL_JSON, json.dumps(out, indent=1, default=float).encode())
    for who in runs:
        s = out[who]
        rt.scalars(cfg.phase2.steps, {k: v for k, v in s.items() if isinstance(v, (int, float))}, f"env/{who}/")
        log.info("real env, %s policy over %d episodes: %s", who, len(seeds),
                 {k: v for k, v in s.items() if isinstance(v, (int, float))})
    return out


def main(argv=None) -> dict:
    cfg, args = parse_args(__doc__, argv, lambda p: p.add_argument(
        "--checkpoint", default=None, help=f"phase-1 checkpoint (default <run dir>/{PHASE1_FINAL})"))
    ckpt_path = Path(args.checkpoint) if args.checkpoint else cfg.run_dir / PHASE1_FINAL
    phase1 = load_phase1(ckpt_path, cfg)  # before start(): the saved config must name the dynamics it carries
    rt = start(cfg, "phase2")
    pc = cfg.phase2
    tokenizer, cache = prepare_data(cfg, rt)
    loop.check_compatible(phase1, cache, ckpt_path)
    S, space = cache.chunk_len, cache.action_space
    dynamics = frozen_dynamics(phase1, cfg, tokenizer, cache, rt.device)
    del phase1
    agent = Agent(cfg.agent, tokenizer.num_tokens, tokenizer.channels, list(space.cards), S).to(rt.device)
    agent.value.requires_grad_(False)  # created here (zero output), trained in phase 3
    objective = Phase2Objective(agent)
    sharded = sharding.shard(rt, objective, pc.fsdp)  # before the optimizer, which must hold the shards
    opt = loop.make_optimizer(agent.parameters(), pc)
    sched = loop.make_scheduler(opt, pc)
    train = ClipSampler(cache, cache.train_names, cfg.data.clip_len, pc.batch_size, cfg.seed, rt.rank, rt.device)
    val_names = cache.val_names or cache.train_names
    if not cache.val_names:
        log.warning("the cache has no val split (data.val_fraction=0): held-out figures use the training episodes")
    models = {"dynamics": dynamics, "agent": agent}
    start_step, _ = loop.resume(rt, "phase2", models, opt, sched, cache)
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
    gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    metrics: dict = {}
    for step in trange(start_step, pc.steps, desc="phase2", disable=not rt.is_main, initial=start_step, total=pc.steps):
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
            metrics, acts = heldout(agent, cache, val_names, cfg.data.clip_len, majority, pc.batch_size, rt.device, gen)
            rt.scalars(done, metrics, "eval/agent/")
            log_histograms(rt, space.names, acts, done)
            log.info("step %d: held-out BC accuracy %.3f (majority action %.3f), NLL %.3f, reward MAE %.4f, "
                     "continue accuracy %.3f", done, metrics["bc_accuracy"], metrics["majority_accuracy"],
                     metrics["bc_nll"], metrics["reward_mae"], metrics["continue_accuracy"])
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            loop.save_periodic(rt, "phase2", loop.payload(cfg, done, models, opt, sched, info), pc.keep_checkpoints)

    result: dict = {"heldout": metrics}
    if not metrics and (rt.is_main or sharded):  # resumed at the end: the held-out figures of the final weights
        metrics, _ = heldout(agent, cache, val_names, cfg.data.clip_len, majority, pc.batch_size, rt.device, gen)
        result["heldout"] = metrics
    final = loop.payload(cfg, pc.steps, models, opt, sched, info, {"phase": 2, "eval": result})  # every rank
    if rt.is_main:
        atomic_save(final, rt.run_dir / FINAL)
        loop.save_periodic(rt, "phase2", final, pc.keep_checkpoints)
        log.info("wrote %s", rt.run_dir / FINAL)
        if pc.eval_episodes > 0:
            if sharded:  # rank 0 plays alone: an unsharded copy of the final weights
                agent = Agent(cfg.agent, tokenizer.num_tokens, tokenizer.channels, list(space.cards), S).to(rt.device)
                agent.load_state_dict(final["models"]["agent"])
            result["env"] = evaluate_env(rt, cfg, tokenizer, agent.eval(), cache, counts)
            env = {k: result["env"][k] for k in ("bc", "random", "data_frequency")}
            final["eval"] = {"heldout": metrics, "env": json.loads(json.dumps(env, default=float))}  # plain types
            atomic_save(final, rt.run_dir / FINAL)
        phase_video(rt, final, tokenizer, cache)  # <run>/phase2_dream.mp4 and TensorBoard; never fails the run
    rt.close()
    return result


if __name__ == "__main__":
    main()
