"""How far can phase 3's update move a policy when the world is perfect? A check where the answer is known.

    python -m diagnostics.pmpo_bandit --checkpoint checkpoints/<run>/phase2_final.pt --action place_stone \
        [--steps 150] [--set pmpo.beta=0.03]

The agent of a phase-2 (or phase-3) checkpoint reads real held-out and training clips; its policy samples
a chunk at each of ``phase3.horizon`` steps of a training clip, and a world that knows the answer pays
r_{t+1} = 1 whenever the chunk's first sub-step takes ``--action`` (component 0), 0 otherwise, with every
continue 1. Everything else is phase 3's: the λ-returns with the value head, PMPO with the prior's KL, the
value warm-up and the sign gate (``pmpo.*``), the two-group optimizer and schedule (``phase3.*``), batches
of ``phase3.batch_size``. The features are the real clips' (nothing is dreamed), so what this measures is
the update alone: the policy's mean probability of the action on held-out clips, every ``--every`` steps.
A phase 3 that cannot raise it cannot learn from any dream; how far it rises at ``pmpo.beta`` says how much
room the prior leaves.
"""

from __future__ import annotations

import argparse
import logging

import torch

from dreamer.data.loader import ClipSampler
from dreamer.imagination import grouped_step, make_phase3_optimizer, phase3_terms, policy_gate
from dreamer.imagination.rollout import Imagined
from dreamer.training.optim import NonFiniteGuard, make_scheduler

log = logging.getLogger(__name__)


def action_index(names: list[str], action: str) -> int:
    """``action`` as an index of component 0: a name of the action space or a number."""
    if action in names:
        return names.index(action)
    try:
        i = int(action)
    except ValueError:
        raise ValueError(f"--action {action!r}: not one of the action names {names} nor an index") from None
    if not 0 <= i < len(names):
        raise ValueError(f"--action {i}: out of range for {len(names)} action values")
    return i


def value_names(world) -> list[str]:
    """Names of action component 0's values where the key map knows them (Crafter's), else their indices."""
    from dreamer.viewer.keys import keymap_for

    known = keymap_for(world.action_space, world.cfg.env.env_id).value_names.get(0)
    return list(known) if known else [str(i) for i in range(world.action_space.cards[0])]


def bandit(world, target: int, steps: int, every: int = 25, seed: int = 0) -> list[dict]:
    """Rows {step, p_action, kl}: the policy's held-out probability of ``target`` as phase 3's update
    trains it on a world that pays 1 for it (see the module docstring). Trains ``world.agent`` in place (the prior is
    its policy as given) and sets ``world.cfg.phase3.steps`` to ``steps`` (the schedule's length)."""
    cfg, agent, cache = world.cfg, world.agent, world.cache
    pc, dev = cfg.phase3, world.device
    pc.steps = steps
    H, c = pc.horizon, pc.context
    prior = agent.freeze_for_phase3()
    for p in agent.phase3_parameters():
        p.requires_grad_(True)
    opt = make_phase3_optimizer(agent, pc)
    sched, guard = make_scheduler(opt, pc), NonFiniteGuard(3)
    train = ClipSampler(cache, cache.train_names, c + H, pc.batch_size, seed, 0, dev)
    held = ClipSampler(cache, cache.val_names or cache.train_names, c + H, 64, seed + 1, 0, dev).batch(0)
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        h_val = agent.trunk(held["latents"].float())[:, c - 1:-1]  # (B, H, d)

    def p_action() -> float:
        with torch.no_grad():
            return float(torch.softmax(agent.policy(h_val).logits[0].float(), -1)[..., 0, target].mean())

    rows = [{"step": 0, "p_action": p_action(), "kl": 0.0}]
    for step in range(steps):
        z = train.batch(step)["latents"].float()
        with torch.no_grad():
            h = agent.trunk(z)[:, c - 1:]  # (B, H+1, d): h_0 at the last context step
            a = agent.policy(h[:, :H]).sample(gen)  # (B, H, S, D)
        b = a.shape[0]
        im = Imagined(latents=z[:, c - 1:], actions=a, action_mask=torch.ones(a.shape[:3], dtype=torch.bool, device=dev),
                      rewards=(a[..., 0, 0] == target).float(), continues=torch.ones(b, H, device=dev), features=h, context=z[:, :c])
        t = phase3_terms(agent, prior, im, cfg.rl, cfg.pmpo)
        policy_on = policy_gate(cfg.pmpo, step, t.advantages)  # the value warm-up and the sign gate, as phase 3
        grouped_step(opt, sched, t.value_loss + (t.policy_loss if policy_on else 0.0 * t.policy_loss), pc,
                     guard, step)
        if (step + 1) % every == 0 or step + 1 == steps:
            rows.append({"step": step + 1, "p_action": p_action(), "kl": float(t.kl.detach().mean())})
            log.info("step %d: p(action) %.3f, KL to the prior %.4f", step + 1, rows[-1]["p_action"], rows[-1]["kl"])
    return rows


def main(argv=None) -> list[dict]:
    from dreamer.viewer.load import load_world

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a phase-2 or phase-3 checkpoint (it holds the agent)")
    p.add_argument("--action", required=True, help="the rewarded value of action component 0: a name or an index")
    p.add_argument("--steps", type=int, default=None, help="phase-3 updates (default the config's phase3.steps)")
    p.add_argument("--every", type=int, default=25, help="report every this many steps")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        world = load_world(args.checkpoint, args.config, args.set, args.device, need_agent=True)
        target = action_index(value_names(world), args.action)
        steps = args.steps if args.steps is not None else world.cfg.phase3.steps
        if steps < 1 or args.every < 1:
            raise ValueError(f"--steps {steps} and --every {args.every} must be >= 1")
        rows = bandit(world, target, steps, args.every)
    except (OSError, ValueError) as e:
        raise SystemExit(f"pmpo_bandit: {e}") from e
    cfg = world.cfg
    print(f"a world that pays 1 for {args.action!r} (index {target}); pmpo.beta {cfg.pmpo.beta}, phase3.lr "
          f"{cfg.phase3.lr}, batch {cfg.phase3.batch_size} x horizon {cfg.phase3.horizon}")
    for r in rows:
        print(f"step {r['step']:5d}: held-out p(action) {r['p_action']:.3f}, KL to the prior {r['kl']:.4f}")
    return rows


if __name__ == "__main__":
    from dreamer.errors import run_cli

    run_cli(main)
