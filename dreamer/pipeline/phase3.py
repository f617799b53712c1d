"""Phase 3 (docs/design.md §6): PMPO imagination RL with TD(λ) values inside the frozen world model.

What is its own (the rest is :mod:`dreamer.pipeline.runner`): the frozen tokenizer, dynamics, trunk, reward and
continue heads and π_prior (a frozen copy of the phase-2 policy); the imagined batch and its PMPO and value losses
(:mod:`dreamer.imagination`); the two-group optimizer step; the imagination picture and the periodic real-env
figures; and at the end the random, BC and phase-3 policies compared in the real env (``phase3_eval.json``).
"""

from __future__ import annotations

import logging

import torch

from dreamer.data.loader import ClipSampler
from dreamer.imagination import grouped_step, imagine, make_phase3_optimizer, phase3_losses, phase3_terms, policy_gate
from dreamer.pipeline.build import build_agent, build_dynamics, frozen, imagining
from dreamer.pipeline.data import prepare_data
from dreamer.pipeline.evaluate import curve_point, final_comparison
from dreamer.pipeline.runner import Phase
from dreamer.training import sharding
from dreamer.training.checkpoint import check_compatible
from dreamer.training.optim import make_scheduler
from dreamer.training.pictures import latent_rows_to_grid
from dreamer.training.runtime import compiled

log = logging.getLogger("phase3")


def step_generator(cfg, rank: int, step: int, device) -> torch.Generator:
    """The draws of step ``step`` depend on (seed, rank, step) only, so a resumed run repeats them."""
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + rank * 7_919 + step)


class Phase3(Phase):
    number = 3
    after = (2, "--phase2-checkpoint")  # the phase-2 final checkpoint
    unit = "imagined_steps"

    def build(self) -> None:
        rt, cfg, pc, p2 = self.rt, self.cfg, self.pc, self.handoff
        self.tokenizer, self.cache = prepare_data(rt)
        check_compatible(p2, self.cache, self.handoff_path)  # refused when the checkpoint does not fit the cache
        self.dynamics = imagining(frozen(build_dynamics(cfg, self.tokenizer, self.cache, rt.device,
                                                        state=p2["models"]["dynamics"])), pc.sample_steps)
        self.agent = agent = build_agent(cfg, self.tokenizer, self.cache, rt.device, state=p2["models"]["agent"])
        self.bc_state, self.action_counts = p2["models"]["agent"], p2.get("action_counts")
        self.handoff = None
        # FSDP shards the frozen world model (the large part); the small trained heads stay replicated, their
        # gradients averaged by hand (grouped_step).
        sharding.shard(rt, self.dynamics, pc.fsdp, forward_methods=("forward_into",))
        self.prior = agent.freeze_for_phase3()  # pi_prior: frozen copy of the phase-2 policy head
        for m in (agent.trunk, agent.reward, agent.cont):
            m.eval()
        self.opt = make_phase3_optimizer(agent, pc)
        self.sched = make_scheduler(self.opt, pc)
        self.train = ClipSampler(self.cache, self.cache.train_names, pc.context, pc.batch_size, cfg.seed, rt.rank,
                                 rt.device)
        self.models = {"dynamics": self.dynamics, "agent": agent, "prior": self.prior}
        self.trunk, self.step_fn = agent.trunk, None
        self.im = None  # the last imagined batch (its picture, its throughput, the diagnostics after the warm-up)

    def resumed(self, start_step: int, ckpt) -> None:
        pc = self.pc
        log.info("phase 3 from %s: policy + value heads (%d parameters), steps %d..%d, horizon %d, context %d",
                 self.handoff_path, sum(p.numel() for p in self.agent.phase3_parameters()), start_step, pc.steps,
                 pc.horizon, pc.context)

    def wrap(self) -> None:
        if self.pc.compile:  # both are called every imagined step, on a growing history / KV cache: symbolic sizes
            self.trunk = compiled(self.agent.trunk, self.rt.device, dynamic=True, key="phase3.compile")
            if not sharding.is_sharded(self.dynamics):
                self.step_fn = compiled(self.dynamics.forward_into, self.rt.device, dynamic=True, key="phase3.compile")

    def dream(self, batch: dict, step: int):
        rt = self.rt
        with rt.autocast(self.pc.bf16):
            return imagine(self.dynamics, self.agent, batch, self.pc.horizon,
                           step_generator(self.cfg, rt.rank, step, rt.device), trunk=self.trunk,
                           forward_into=self.step_fn)

    def diagnose(self, batch: dict, step: int, stop: bool) -> None:
        from diagnostics import diagnose_before_training

        agent, prior, rl = self.agent, self.prior, self.cfg.rl
        im0 = self.dream(batch, step)
        t0 = phase3_terms(agent, prior, im0, rl, self.cfg.pmpo)
        per_entry = float(t0.dist.entropy(im0.action_mask).detach().mean()) / (agent.chunk_len * len(agent.action_cards))

        def audit_loss() -> torch.Tensor:  # the real phase-3 loss: one rollout, both heads' losses
            t = phase3_terms(agent, prior, self.dream(batch, step), rl, self.cfg.pmpo)
            return t.policy_loss + t.value_loss

        diagnose_before_training(3, {"tokenizer": self.tokenizer, **self.models}, batch, self.rt.device,
                                 optimizer=self.opt, cache=self.cache, loss_fn=audit_loss, advantages=t0.advantages,
                                 imagined_rewards=im0.rewards, imagined_latents=im0.latents[:, 1:],
                                 policy_entropy=per_entry, rl_cfg=rl, value_warmup=self.cfg.pmpo.value_warmup, step=step,
                                 stop=stop)

    def batch(self, step: int) -> dict:
        return self.train.batch(step)

    def loss(self, batch: dict, step: int, log_now: bool):
        pc = self.pc
        self.im = im = self.dream(batch, step)
        with self.rt.autocast(pc.bf16):
            t, m = phase3_losses(self.agent, self.prior, im, self.cfg.rl, self.cfg.pmpo)
        # The policy moves only after the value warm-up and on advantages of both signs (imagination/pmpo.py).
        update_policy = policy_gate(self.cfg.pmpo, step, t.advantages)
        m["policy/updated"] = float(update_policy)
        return (t.policy_loss + t.value_loss if update_policy else t.value_loss), m

    def optimizer_step(self, loss, step: int, batch: dict, guard) -> dict[str, float]:
        _, norms = grouped_step(self.opt, self.sched, loss, self.pc, guard, step, batch["provenance"])
        return norms

    def count(self, batch: dict) -> int:
        return self.im.rewards.numel()

    def logged(self, done: int, avg: dict) -> None:
        log.info("step %d: policy loss %.4f, value loss %.4f, A>=0 %.0f / A<0 %.0f, policy updated on %.0f%% of steps, "
                 "value-return corr %.2f (|v-R| %.3f), entropy %.3f, KL %.4f, imagined reward %.3f", done,
                 avg["loss/policy"], avg["loss/value"], avg["adv/num_pos"], avg["adv/num_neg"],
                 100 * avg["policy/updated"], avg["value/return_corr"], avg["value/abs_error"], avg["policy/entropy"],
                 avg["policy/kl_prior"], avg["imagined/reward_mean"])

    def evaluate(self, step: int) -> dict:
        """The imagination picture and, before the last step, a point of the phase-3 policy's real-env curve (logged
        under env/pmpo/…, so nothing is returned for eval/phase3/)."""
        rt, im = self.rt, self.im
        if not rt.is_main:
            return {}
        if rt.writer is not None and im is not None:
            grid = latent_rows_to_grid(self.tokenizer, [im.context, im.latents[:, 1:]], self.cache.mean,
                                       self.cache.std, size=self.cfg.env.size)
            rt.writer.add_image("eval/phase3/context|imagined", grid, step, dataformats="HWC")
        if step < self.pc.steps and self.pc.eval_episodes > 0:
            curve_point(rt, self.tokenizer, self.agent, self.cache, self.pc.eval_episodes, step, "pmpo")
        return {}

    def after_step(self, done: int, batch: dict) -> None:
        pc, rt = self.pc, self.rt
        if pc.diagnose and done == max(self.cfg.pmpo.value_warmup, 1) and rt.is_main:  # the warm-up is over: signs are judged
            from diagnostics import diagnose_periodic

            im = self.im
            diagnose_periodic(rt, done, 3, {"tokenizer": self.tokenizer, **self.models}, batch, audit=False,
                              advantages=phase3_terms(self.agent, self.prior, im, self.cfg.rl, self.cfg.pmpo).advantages,
                              imagined_rewards=im.rewards, imagined_latents=im.latents[:, 1:], rl_cfg=self.cfg.rl,
                              value_warmup=self.cfg.pmpo.value_warmup)

    def final_extra(self, metrics: dict) -> dict:
        return {"phase": 3, "phase2_checkpoint": str(self.handoff_path), "action_counts": self.action_counts}

    def finish(self, final: dict, metrics: dict) -> dict:
        if self.pc.eval_episodes <= 0:
            log.info("phase3.eval_episodes=0: no real-env comparison")
            return {}
        result, table = final_comparison(self.rt, self.tokenizer, self.cache, self.agent, self.bc_state,
                                         self.dynamics)
        return {**result, "table": table}  # the command prints the table as its final output
