"""One phase run from the command line to the final checkpoint: the skeleton every phase shares, written once.

    parse → start → (early result) → build → resume → diagnose → wrap → train loop → final payload → finish → video

A phase (:class:`Phase`, one module per phase: ``dreamer.pipeline.phase0`` … ``phase3``) says only what is its own:
how it builds its models and data, the loss of a batch, its held-out evaluation and how it finishes. The runner
owns the rest, in this order and nowhere else:

* the command line (``--config``/``--set``/``--fresh``/``--no-diagnose``, and the handoff checkpoint flag of the
  phase it starts from, :attr:`Phase.after`) and the :class:`dreamer.training.runtime.Runtime`;
* resuming (:func:`dreamer.training.checkpoint.resume`) and every periodic checkpoint (``<prefix>_step<N>.pt``, none
  during a non-finite streak) — no phase writes one;
* the non-finite guard, the optimizer step (or the phase's own, :meth:`Phase.optimizer_step`), the progress bar;
* logging: the phase's batch figures averaged since the last log under ``loss/<phase>/`` (keys holding "loss")
  and ``train/<phase>/`` (the rest, with grad norms, learning rate, throughput and skipped steps);
* the held-out evaluation every ``eval_every`` steps and at the end, logged under ``eval/<phase>/``;
* the final payload (:func:`dreamer.training.checkpoint.payload`, gathered on every rank), the final checkpoint
  (:func:`dreamer.pipeline.checkpoints.save_final`, phases 1–3; phase 0's last periodic one) and the video.

The config reaches a phase through one channel, ``rt.cfg`` (``self.cfg``; ``self.pc`` is its own section).
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm import trange

from dreamer.pipeline.checkpoints import FINAL, PREFIX, save_final
from dreamer.pipeline.cli import parse_args, parse_args_after
from dreamer.training.checkpoint import data_info, payload, resume, save_periodic
from dreamer.training.optim import NonFiniteGuard, optimizer_step
from dreamer.training.runtime import Runtime, releases_on_error, start

log = logging.getLogger(__name__)


class Phase:
    """What one phase says of its own. Subclasses set :attr:`number` (and :attr:`after` when they start from an
    earlier phase's final checkpoint) and implement :meth:`build`, :meth:`batch`, :meth:`loss` and :meth:`finish`;
    the other hooks have defaults that do nothing."""

    number: int = -1
    after: tuple[int, str] | None = None  # (the phase whose final checkpoint this one starts from, its flag)
    unit: str = "samples"  # what :meth:`count` counts: train/<phase>/<unit>_per_s
    loss_keys: tuple[str, ...] | None = None  # batch figures logged under loss/<phase>/ (None: keys holding "loss")

    def __init__(self, rt: Runtime, args, handoff: tuple | None = None):
        self.rt, self.cfg, self.args = rt, rt.cfg, args
        self.pc = getattr(rt.cfg, self.name)
        self.handoff_path, self.handoff = handoff or (None, None)  # the checkpoint this phase starts from
        self.models: dict[str, torch.nn.Module] = {}  # what every checkpoint holds (and resume restores)
        self.opt = self.sched = None
        self.tokenizer = self.cache = None  # phases 1-3: the frozen tokenizer and the latent cache
        self.sharded = False  # FSDP: every rank joins the held-out evaluation and the payload
        self.metrics: dict = {}  # the last held-out figures (a resumed phase 0 starts from its checkpoint's)
        self.stopped_at: int | None = None  # the step training stopped at before the last (phase 0's plateau)

    @property
    def name(self) -> str:
        return f"phase{self.number}"

    # --- what every phase says ---------------------------------------------------------------------------------
    def build(self) -> None:
        """Data, models (:attr:`models`), optimizer and schedule (:attr:`opt`, :attr:`sched`)."""
        raise NotImplementedError

    def batch(self, step: int) -> dict:
        raise NotImplementedError

    def loss(self, batch: dict, step: int, log_now: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise on ``batch`` and its figures (float values; may be empty unless ``log_now``)."""
        raise NotImplementedError

    def finish(self, final: dict, metrics: dict) -> dict:
        """Rank 0, after the final checkpoint is written: real-env evaluation, handoff files; the command's result."""
        return metrics

    # --- optional ----------------------------------------------------------------------------------------------
    def early_result(self) -> dict | None:
        """A result that ends the command before anything is built (phase 0 with nothing to fit), else None."""
        return None

    def resumed(self, start_step: int, ckpt: dict | None) -> None:
        """After resuming (``ckpt`` None for a fresh start): restore what the phase keeps besides its models."""

    def last_step(self) -> int:
        """Where training ends (phase 0 may have stopped early on a plateau)."""
        return self.pc.steps

    def diagnose(self, batch: dict, step: int, stop: bool) -> None:
        """``phaseN.diagnose``: the diagnostics report before training."""

    def wrap(self) -> None:
        """After the diagnostics: wrap what trains (torch.compile, DDP)."""

    def optimizer_step(self, loss, step: int, batch: dict, guard: NonFiniteGuard) -> dict[str, float]:
        _, norms = optimizer_step(self.opt, self.sched, loss, self.pc, guard, step, batch.get("provenance"))
        return norms

    def count(self, batch: dict) -> int:
        """Units of work in ``batch`` for the throughput figure."""
        return 0

    def evaluate(self, step: int) -> dict:
        """Held-out figures (rank 0, or every rank when sharded); {} when the phase has none."""
        return {}

    def after_eval(self, done: int, metrics: dict, batch: dict) -> bool:
        """After each held-out evaluation (every rank): periodic diagnostics, the best checkpoint. True stops
        training here (decided on rank 0)."""
        return False

    def after_step(self, done: int, batch: dict) -> None:
        """After every step: the phase's periodic extras (real-env curves, pictures)."""

    def logged(self, done: int, figures: dict[str, float]) -> None:
        """After each log of the batch figures (averaged since the last one): the phase's own log line."""

    def extra(self, metrics: dict) -> dict:
        """What every checkpoint of this phase holds besides the models, optimizer, schedule, data facts and RNG."""
        return {}

    def final_extra(self, metrics: dict) -> dict:
        """What the final checkpoint holds besides the models etc. (its held-out figures, what the next phase needs)."""
        return {"phase": self.number, **self.extra(metrics)}

    def done_already(self, start_step: int) -> bool:
        """True when a rerun has nothing left to do and writes nothing (phase 0 whose tokenizer is up to date)."""
        return False

    @property
    def evaluates_on_every_rank(self) -> bool:
        return self.sharded


@releases_on_error
def run_phase(phase_cls: type[Phase], description: str, argv: list[str] | None = None):
    """The command ``python train_phase<N>.py …``: the phase run from its command line to its result."""
    if phase_cls.after is not None:
        cfg, args, path, ckpt = parse_args_after(*phase_cls.after, description, argv)
        handoff = (path, ckpt)
    else:
        (cfg, args), handoff = parse_args(description, argv), None
    rt = start(cfg, f"phase{phase_cls.number}", inputs=args.inputs, fresh=args.fresh)
    phase = phase_cls(rt, args, handoff)
    early = phase.early_result()
    if early is not None:
        rt.barrier()
        rt.close()
        return early
    phase.build()
    pc = phase.pc
    start_step, ckpt = resume(rt, PREFIX[phase.number], phase.models, phase.opt, phase.sched, phase.cache)
    phase.resumed(start_step, ckpt)
    if pc.diagnose:
        phase.diagnose(phase.batch(start_step), start_step, stop=not args.no_diagnose)
    phase.wrap()
    metrics, evaluated = train(phase, start_step)
    result = metrics
    if not phase.done_already(start_step):
        result = conclude(phase, metrics, evaluated)
    rt.barrier()
    rt.close()
    return result


def train(phase: Phase, start_step: int) -> tuple[dict, bool]:
    """The training loop from ``start_step``: steps, logs, held-out evaluations and periodic checkpoints. Returns
    (the last held-out figures, whether a held-out evaluation ran)."""
    rt, pc, name = phase.rt, phase.pc, phase.name
    guard = NonFiniteGuard(pc.max_nonfinite)
    info = data_info(phase.cache) if phase.cache is not None else None
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    units, t0, metrics, evaluated = 0, time.perf_counter(), phase.metrics, False
    for step in trange(start_step, phase.last_step(), desc=name, disable=None if rt.is_main else True,
                       initial=start_step, total=pc.steps):
        done = step + 1
        log_now = done % pc.log_every == 0 or done == pc.steps
        batch = phase.batch(step)
        loss, m = phase.loss(batch, step, log_now)
        norms = phase.optimizer_step(loss, step, batch, guard)
        units += phase.count(batch) * rt.world
        for k, v in m.items():
            sums[k], counts[k] = sums.get(k, 0.0) + float(v), counts.get(k, 0) + 1
        if log_now:
            avg = {k: v / counts[k] for k, v in sums.items()}
            log_figures(phase, done, avg, norms, guard.total, units / (time.perf_counter() - t0))
            phase.logged(done, avg)
            sums, counts, units, t0 = {}, {}, 0, time.perf_counter()
        if done % pc.eval_every == 0 or done == pc.steps:
            if rt.is_main or phase.evaluates_on_every_rank:
                metrics, evaluated = phase.evaluate(done), True
                if metrics:
                    rt.scalars(done, metrics, f"eval/{name}/")
            if rt.broadcast_flag(phase.after_eval(done, metrics, batch)):  # rank 0 decides
                phase.stopped_at = done
                break
        phase.after_step(done, batch)
        if done % pc.ckpt_every == 0 and done < pc.steps and guard.healthy:  # none during a non-finite streak
            save_periodic(rt, PREFIX[phase.number], payload(rt.cfg, done, phase.models, phase.opt, phase.sched, info,
                                                             phase.extra(metrics)), pc.keep_checkpoints)
    guard.finish(f"phase {phase.number}")
    return metrics, evaluated


def log_figures(phase: Phase, done: int, avg: dict, norms: dict, skipped: int, rate: float) -> None:
    """The batch figures under loss/<phase>/ and train/<phase>/, with the optimizer's: grad norm (and one per named
    parameter group when there are several), learning rate(s), skipped steps and throughput."""
    name, keys = phase.name, phase.loss_keys
    is_loss = (lambda k: k in keys) if keys is not None else (lambda k: "loss" in k)
    phase.rt.scalars(done, {k.removeprefix("loss/"): v for k, v in avg.items() if is_loss(k)}, f"loss/{name}/")
    groups = phase.opt.param_groups
    named = len(groups) > 1
    lrs = phase.sched.get_last_lr()
    figures = {"grad_norm": norms["total"], "skipped_steps": skipped, f"{phase.unit}_per_s": rate}
    for i, g in enumerate(groups):
        label = str(g.get("name", i))
        figures[f"lr_{label}" if named else "lr"] = lrs[i]
        if named:
            figures[f"grad_norm_{label}"] = norms[label]
    phase.rt.scalars(done, {**{k: v for k, v in avg.items() if not is_loss(k)}, **figures}, f"train/{name}/")


def conclude(phase: Phase, metrics: dict, evaluated: bool) -> dict:
    """The final held-out figures (when the loop ran none and none were kept: a rerun at the end), the final
    payload (every rank), the final checkpoint and the phase's finish (rank 0), and the video."""
    rt, pc = phase.rt, phase.pc
    last = phase.stopped_at or phase.last_step()
    if not metrics and not evaluated and (rt.is_main or phase.evaluates_on_every_rank):
        metrics = phase.evaluate(last)
    info = data_info(phase.cache) if phase.cache is not None else None
    final = payload(rt.cfg, last, phase.models, phase.opt, phase.sched, info, phase.final_extra(metrics))  # every rank
    result = metrics
    if rt.is_main:
        if phase.number in FINAL:
            save_final(rt, phase.number, final)
        else:  # phase 0 hands on a tokenizer folder, not a checkpoint: its final state is its last periodic one
            save_periodic(rt, PREFIX[phase.number], final, pc.keep_checkpoints)
        result = phase.finish(final, metrics)
        if phase.cache is not None:
            from dreamer.viewer.video import phase_video

            phase_video(rt, final, phase.tokenizer, phase.cache)  # <run>/phase<N>_dream.mp4; never fails the run
    return result
