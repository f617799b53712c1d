"""Phase 1 (docs/design.md §4): the dynamics model trained with shortcut forcing on the cached latents.

What is its own (the rest is :mod:`dreamer.pipeline.runner`): the latent cache and the model, the shortcut-forcing
loss of a clip batch, the held-out figures against the training-free baselines (open-loop error per horizon
against copy-last, the action-shuffle ratio) with an open-loop picture grid, and the plain verdict at the end.
"""

from __future__ import annotations

import logging

import torch

from dreamer.data.loader import ClipSampler
from dreamer.dynamics import ShortcutForcingLoss, heldout_metrics, rollout, verdict
from dreamer.pipeline.build import build_dynamics
from dreamer.pipeline.data import prepare_data
from dreamer.pipeline.runner import Phase
from dreamer.training import sharding
from dreamer.training.optim import check_heldout, make_optimizer, make_scheduler
from dreamer.training.pictures import latent_rows_to_grid
from dreamer.training.runtime import wrap_model

log = logging.getLogger("phase1")


class Phase1(Phase):
    number = 1
    unit = "latent_tokens"
    loss_keys = ("total", "flow", "bootstrap")

    def build(self) -> None:
        rt, cfg, pc = self.rt, self.cfg, self.pc
        self.tokenizer, self.cache = prepare_data(rt)
        self.model = build_dynamics(cfg, self.tokenizer, self.cache, rt.device)
        self.loss_fn = ShortcutForcingLoss(cfg.dynamics).to(rt.device)  # holds the running-RMS buffers
        self.sharded = sharding.shard(rt, self.model, pc.fsdp, forward_methods=("forward_into",))  # before the optimizer
        self.loss_fn.same_calls_on_every_rank = self.sharded
        self.opt = make_optimizer(self.model.parameters(), pc)
        self.sched = make_scheduler(self.opt, pc)
        clip_len = pc.clip_len or cfg.data.clip_len
        cache = self.cache
        self.train = ClipSampler(cache, cache.train_names, clip_len, pc.batch_size, cfg.seed, rt.rank, rt.device)
        self.val = ClipSampler(cache, cache.val_names or cache.train_names, clip_len, pc.batch_size, cfg.seed + 1, 0,
                               rt.device)
        self.models = {"dynamics": self.model, "loss": self.loss_fn}

    def resumed(self, start_step: int, ckpt) -> None:
        log.info("dynamics: %.2fM parameters; training steps %d..%d",
                 sum(p.numel() for p in self.model.parameters()) / 1e6, start_step, self.pc.steps)

    def diagnose(self, batch: dict, step: int, stop: bool) -> None:
        from diagnostics import diagnose_before_training

        diagnose_before_training(1, self.diagnosed(), batch, self.rt.device, optimizer=self.opt, cache=self.cache,
                                 stop=stop)

    def diagnosed(self) -> dict:
        return {"tokenizer": self.tokenizer, "dynamics": self.model, "loss": self.loss_fn}

    def wrap(self) -> None:
        self.net = wrap_model(self.rt, self.model, self.pc.compile, key="phase1.compile")

    def batch(self, step: int) -> dict:
        return self.train.batch(step)

    def loss(self, batch: dict, step: int, log_now: bool):
        if self.pc.compile and self.model.validate_inputs:  # compiled, the model skips its data-dependent checks
            self.model.check_actions(batch["actions"], batch["action_mask"])
        with self.rt.autocast(self.pc.bf16):
            loss, m = self.loss_fn(self.net, batch["latents"], batch["actions"], batch["action_mask"])
        return loss, {k: m[k] for k in self.loss_keys}

    def count(self, batch: dict) -> int:
        b, t, n = batch["latents"].shape[:3]
        return b * t * n

    def evaluate(self, step: int) -> dict:
        """Held-out quality against the training-free baselines, and an open-loop picture grid."""
        rt, pc = self.rt, self.pc
        gen = torch.Generator(device=rt.device).manual_seed(self.cfg.seed)
        self.model.eval()
        sums: dict[str, float] = {}
        batches = [self.val.batch(10**6 + i) for i in range(pc.eval_batches)]
        for b in batches:
            m = heldout_metrics(self.model, self.loss_fn, b, pc.eval_context, generator=gen)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v / pc.eval_batches
        check_heldout("phase 1", sums, batches, f" (step {step})")
        batch, c = batches[0], pc.eval_context
        pred = rollout(self.model, batch["latents"][:, :c], batch["actions"][:, :c], batch["action_mask"][:, :c],
                       batch["actions"][:, c - 1 : -1], batch["action_mask"][:, c - 1 : -1], generator=gen)
        grid = latent_rows_to_grid(self.tokenizer, [batch["latents"][:, :c], pred, batch["latents"][:, c:]],
                                   self.cache.mean, self.cache.std, size=self.cfg.env.size)
        if rt.writer is not None:
            rt.writer.add_image("eval/phase1/open_loop_context|predicted|true", grid, step, dataformats="HWC")
        self.model.train()
        return sums

    def after_eval(self, done: int, metrics: dict, batch: dict) -> bool:
        if not (self.rt.is_main or self.sharded):
            return False
        if self.pc.diagnose:
            from diagnostics import diagnose_periodic

            diagnose_periodic(self.rt, done, 1, self.diagnosed(), batch, optimizer=self.opt)
        log.info("step %d: one-step mse %.4f (copy-last %.4f), action-shuffle ratio %.3f", done,
                 metrics.get("one_step_mse", float("nan")), metrics.get("copy_last_one_step_mse", float("nan")),
                 metrics.get("action_shuffle_ratio", float("nan")))
        return False

    def final_extra(self, metrics: dict) -> dict:
        return {"phase": 1, "eval": metrics}

    def finish(self, final: dict, metrics: dict) -> dict:
        ok, line = verdict(metrics)
        (log.info if ok else log.warning)("world model (held-out, %d steps): %s", self.pc.steps, line)
        return metrics
