"""Phase 2 (docs/design.md §5): the agent's trunk and policy, reward, continue and value heads by behaviour cloning
on the cached latents, the phase-1 dynamics frozen and carried forward.

What is its own (the rest is :mod:`dreamer.pipeline.runner`): the agent and its BC loss, the held-out figures
against the majority action, the lowest-NLL checkpoint (``phase2.keep_best``), the real-env curve
(``phase2.env_eval_every``) and, at the end, the BC policy in the real env next to the random and frame-blind
policies (``phase2_eval.json``).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from torch import nn

from dreamer.agent import Agent, phase2_loss
from dreamer.agent.heldout import action_counts, heldout, log_histograms
from dreamer.data.loader import ClipSampler
from dreamer.pipeline.build import build_agent, build_dynamics, frozen
from dreamer.pipeline.checkpoints import BEST, FINAL, best_so_far, save_best
from dreamer.pipeline.data import prepare_data
from dreamer.pipeline.evaluate import curve_point, evaluate_bc
from dreamer.pipeline.runner import Phase
from dreamer.training import sharding
from dreamer.training.checkpoint import atomic_save, check_compatible, data_info, payload
from dreamer.training.optim import check_heldout, make_optimizer, make_scheduler
from dreamer.training.runtime import wrap_model

log = logging.getLogger("phase2")
HELDOUT_KEYS = ("bc_nll", "bc_accuracy", "reward_mae_zero", "continue_accuracy")  # finite on any held-out data


class Phase2Objective(nn.Module):
    """The agent with phase2_loss as its forward, so DDP / torch.compile wrap one module."""

    def __init__(self, agent: Agent, rl):
        super().__init__()
        self.agent, self.rl = agent, rl

    def forward(self, batch: dict, compute_metrics: bool = True):
        return phase2_loss(self.agent, batch, self.agent.cfg, compute_metrics, self.rl)


class Phase2(Phase):
    number = 2
    after = (1, "--checkpoint")  # the phase-1 final checkpoint
    unit = "clips"

    def build(self) -> None:
        rt, cfg, pc = self.rt, self.cfg, self.pc
        self.tokenizer, self.cache = prepare_data(rt)
        cache, phase1 = self.cache, self.handoff
        check_compatible(phase1, cache, self.handoff_path)
        self.dynamics = frozen(build_dynamics(cfg, self.tokenizer, cache, rt.device,
                                              state=phase1["models"]["dynamics"]))
        self.handoff = None  # the phase-1 weights live in the model now
        self.agent = build_agent(cfg, self.tokenizer, cache, rt.device)
        self.objective = Phase2Objective(self.agent, cfg.rl)
        self.sharded = sharding.shard(rt, self.objective, pc.fsdp)  # before the optimizer, which must hold the shards
        self.opt = make_optimizer(self.agent.parameters(), pc)
        self.sched = make_scheduler(self.opt, pc)
        self.train = ClipSampler(cache, cache.train_names, cfg.data.clip_len, pc.batch_size, cfg.seed, rt.rank,
                                 rt.device)
        self.val_names = cache.val_names or cache.train_names
        if not cache.val_names:
            log.warning("the cache has no val split (data.val_fraction=0): held-out figures use the training episodes")
        self.models = {"dynamics": self.dynamics, "agent": self.agent}
        self.counts = action_counts(cache, cache.train_names)
        self.majority = np.array([int(c.argmax()) for c in self.counts], dtype=np.int64)
        self.gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)

    def resumed(self, start_step: int, ckpt) -> None:
        pc = self.pc
        log.info("agent: %.2fM parameters; majority action %s; training steps %d..%d",
                 sum(p.numel() for p in self.agent.parameters()) / 1e6, self.majority.tolist(), start_step, pc.steps)
        self.best_nll, self.best_step = best_so_far(self.rt, 2, "bc_nll") if pc.keep_best else (float("inf"), None)

    def diagnose(self, batch: dict, step: int, stop: bool) -> None:
        from diagnostics import diagnose_before_training

        diagnose_before_training(2, {"tokenizer": self.tokenizer, "dynamics": self.dynamics, "agent": self.agent},
                                 batch, self.rt.device, optimizer=self.opt, cache=self.cache, stop=stop,
                                 rl_cfg=self.cfg.rl)  # the audit's phase2_loss with the run's discounts

    def wrap(self) -> None:
        self.net = wrap_model(self.rt, self.objective, self.pc.compile)

    def batch(self, step: int) -> dict:
        return self.train.batch(step)

    def loss(self, batch: dict, step: int, log_now: bool):
        with self.rt.autocast(self.pc.bf16):
            loss, m = self.net(batch, compute_metrics=log_now)
        return loss, m

    def count(self, batch: dict) -> int:
        return int(batch["latents"].shape[0])

    def evaluate(self, step: int) -> dict:
        cfg, pc = self.cfg, self.pc
        metrics, acts = heldout(self.agent, self.cache, self.val_names, cfg.data.clip_len, self.majority,
                                pc.batch_size, self.rt.device, self.gen, cfg.rl)
        check_heldout("phase 2", metrics, [{"provenance": self.val_names}], f" (step {step})", HELDOUT_KEYS)
        log_histograms(self.rt.writer, self.cache.action_space.names, acts, step)
        log.info("step %d: held-out BC accuracy %.3f (majority action %.3f), NLL %.3f; reward MAE on rewarded steps "
                 "%.3f (constant 0: %.3f), elsewhere %.4f; continue accuracy %.4f (base rate %.4f); value-return corr "
                 "%.2f", step, metrics["bc_accuracy"], metrics["majority_accuracy"], metrics["bc_nll"],
                 metrics.get("reward_mae_nonzero", float("nan")), metrics.get("reward_mae_nonzero_constant", float("nan")),
                 metrics["reward_mae_zero"], metrics["continue_accuracy"], metrics["continue_base_rate_accuracy"],
                 metrics.get("value_return_corr", float("nan")))
        return metrics

    def after_eval(self, done: int, metrics: dict, batch: dict) -> bool:
        rt = self.rt
        if self.pc.keep_best and rt.broadcast_flag(rt.is_main and metrics["bc_nll"] < self.best_nll):
            best = payload(self.cfg, done, self.models, data_info=data_info(self.cache),  # every rank gathers
                           extra={"eval": {"heldout": metrics}})
            if rt.is_main:  # rank 0 judged (its held-out figures)
                self.best_nll, self.best_step = metrics["bc_nll"], done
                log.info("step %d: lowest held-out BC NLL so far (%.3f): wrote %s", done, self.best_nll,
                         save_best(rt, 2, best))
        return False

    def after_step(self, done: int, batch: dict) -> None:
        pc, rt = self.pc, self.rt
        if pc.env_eval_every and done % pc.env_eval_every == 0 and done < pc.steps and rt.is_main and not self.sharded:
            curve_point(rt, self.tokenizer, self.agent, self.cache, pc.env_eval_episodes, done, "bc")

    def final_extra(self, metrics: dict) -> dict:
        self.result = {"heldout": metrics}
        if self.pc.keep_best:
            self.result["best"] = {"step": self.best_step, "bc_nll": self.best_nll}
            log.info("lowest held-out BC NLL %.3f at step %s: %s", self.best_nll, self.best_step,
                     self.rt.run_dir / BEST[2])
        return {"phase": 2, "eval": self.result, "action_counts": [c.tolist() for c in self.counts]}

    def finish(self, final: dict, metrics: dict) -> dict:
        result, rt = self.result, self.rt
        if self.pc.eval_episodes > 0:
            agent = self.agent
            if self.sharded:  # rank 0 plays alone: an unsharded copy of the final weights
                agent = build_agent(self.cfg, self.tokenizer, self.cache, rt.device, state=final["models"]["agent"])
            result["env"] = evaluate_bc(rt, self.tokenizer, agent.eval(), self.cache, self.counts)
            env = result["env"]["summaries"]  # {policy: summary}
            final["eval"] = {**{k: v for k, v in result.items() if k != "env"},
                             "env": json.loads(json.dumps(env, default=float))}  # plain types
            atomic_save(final, rt.run_dir / FINAL[2])
        return result
