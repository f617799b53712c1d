"""``diagnose_phase()``: every check of a phase in one call, returning a :class:`Report`."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from diagnostics.data_checks import check_batch, check_latents, check_tokenizer
from diagnostics.gradflow import check_optimizer, check_precision, run_audit
from diagnostics.gradmode import check_grad_mode
from diagnostics.losses import default_loss_fn
from diagnostics.memory import check_memory
from diagnostics.modules import check_devices, check_modes, check_present, check_requires_grad
from diagnostics.phase1 import phase1_checks
from diagnostics.phase2 import INPUTS as PHASE2_INPUTS
from diagnostics.phase2 import phase2_checks
from diagnostics.phase3 import INPUTS as PHASE3_INPUTS
from diagnostics.phase3 import phase3_checks
from diagnostics.report import FAIL, OK, WARN, Check, Report
from diagnostics.roles import REQUIRED, named_params, phase_roles
from diagnostics.thresholds import Thresholds
from dreamer.tags import tag
from dreamer.training.runtime import unwrap

log = logging.getLogger(__name__)
BATCH_SHAPE_CHECKS = ("batch/keys", "batch/dtypes", "batch/action_alignment", "batch/action_chunks")


def optimizer_step(optimizer) -> int | None:
    """Optimiser steps taken so far (from Adam-style per-parameter state); 0 when it has none."""
    if optimizer is None:
        return None
    for opt in optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]:
        for state in opt.state.values():
            if "step" in state:
                return int(torch.as_tensor(state["step"]).item())
    return 0


def action_layout(model_dict: dict, cache=None) -> tuple[Check, int | None, list[int] | None]:
    """S and cards as every component sees them; they must agree."""
    seen: dict[str, tuple] = {}
    for key in ("dynamics", "agent"):
        m = model_dict.get(key)
        if isinstance(m, nn.Module) and hasattr(unwrap(m), "action_cards"):
            seen[key] = (int(unwrap(m).chunk_len), tuple(unwrap(m).action_cards))
    tok = model_dict.get("tokenizer")
    if tok is not None and hasattr(tok, "S"):
        seen["tokenizer"] = (int(tok.S), None)
    if cache is not None:
        seen["cache"] = (int(cache.chunk_len), tuple(cache.action_space.cards))
    S_vals = {v[0] for v in seen.values()}
    card_vals = {v[1] for v in seen.values() if v[1] is not None}
    desc = ", ".join(f"{k}: S={s}" + (f" cards={list(c)}" if c else "") for k, (s, c) in seen.items())
    ok = len(S_vals) <= 1 and len(card_vals) <= 1
    value = ";".join(sorted({f"S={s}" for s in S_vals} | {f"cards={list(c)}" for c in card_vals}))
    check = Check("models/action_space", OK if ok else FAIL, value, "one S and one cards list",
                  "" if ok else f"components disagree ({desc}): build every model from the cache's chunk_len and "
                  "action_space, and load checkpoints made for this data")
    S = next(iter(S_vals)) if len(S_vals) == 1 else None
    cards = list(next(iter(card_vals))) if len(card_vals) == 1 else None
    return check, S, cards


def diagnose_phase(phase: int, model_dict: dict[str, nn.Module], sample_batch: dict, device, *, optimizer=None,
                   cache=None, scaler=None, loss_fn: Callable[[], torch.Tensor] | None = None, step: int | None = None,
                   thresholds: Thresholds | None = None, roles: dict[str, str] | None = None, compact: bool = False,
                   audit: bool = True, **phase_inputs) -> Report:
    """Run every check of ``phase`` (1, 2 or 3) and return the report (see docs/diagnostics.md).

    model_dict: phase 1 ``tokenizer``, ``dynamics``, ``loss``; phase 2 ``tokenizer``, ``dynamics``,
    ``agent``; phase 3 the same plus ``prior``. sample_batch: a ClipSampler batch on ``device``.
    optimizer: one optimiser or a list of them (checked to hold exactly the trainable parameters).
    scaler: the GradScaler in use, if any. loss_fn: ``() -> scalar loss`` for the gradient audit
    (default: the phase's real loss on the batch; a proxy in phase 3). step: optimiser steps taken
    (default: read from the optimiser state); learning-dependent red flags are judged from
    ``thresholds.min_learning_steps`` on, or always when unknown. roles: overrides of the frozen /
    trainable table. compact: skip the slow parts (tokenizer encode, thorough import probe) for
    periodic runs. audit: run the forward/backward audit. phase_inputs: phase 2 ``rl_cfg`` (the run's
    ``rl`` section: the discounts of the real loss); phase 3 ``advantages``, ``imagined_rewards``,
    ``imagined_latents``, ``policy_entropy``, ``rl_cfg``, ``pmpo_cfg`` (the run's ``pmpo`` section),
    ``value_warmup``.
    """
    allowed = PHASE3_INPUTS if phase == 3 else PHASE2_INPUTS if phase == 2 else ()
    unknown = sorted(set(phase_inputs) - set(allowed))
    if unknown:
        raise TypeError(f"diagnose_phase({phase}): unexpected keyword argument(s) {unknown}; phase-2 inputs are "
                        f"{list(PHASE2_INPUTS)}, phase-3 inputs {list(PHASE3_INPUTS)}")
    device = torch.device(device)
    th = thresholds or Thresholds()
    table = phase_roles(phase, roles)
    report = Report(phase, str(device))
    report.run("grad_mode", lambda: check_grad_mode(thorough=not compact))
    report.run("model_dict", lambda: check_present(phase, model_dict, table))
    params = named_params(model_dict, table)
    report.run("device", lambda: check_devices(model_dict, sample_batch, device))
    report.run("requires_grad", lambda: check_requires_grad(params, phase))
    report.run("tokenizer/eval_mode", lambda: check_modes(model_dict))
    layout, S, cards = action_layout(model_dict, cache)
    report.add(layout)
    tok = model_dict.get("tokenizer")
    if tok is not None and not compact:
        report.run("tokenizer", lambda: check_tokenizer(tok, sample_batch, cache))
    report.run("batch", lambda: check_batch(sample_batch, S, cards))
    report.run("batch/latents", lambda: check_latents(sample_batch, th))
    report.run("grad_audit/precision", lambda: check_precision(params, scaler))
    if optimizer is not None:
        report.run("grad_audit/optimizer", lambda: check_optimizer(optimizer, params))
    has_required = all(k in model_dict for k in REQUIRED[phase])
    malformed = [c.name for c in report.checks if c.status == FAIL and c.name in BATCH_SHAPE_CHECKS]
    batch_ok = not malformed
    if not batch_ok:
        report.add(Check("grad_audit", WARN, "skipped", "a well-formed batch",
                         f"the audit and the phase-{phase} red flags need a well-formed batch: fix {malformed} first"))
    result = None
    if audit and has_required and batch_ok:
        source = "loss_fn given by the caller"
        if loss_fn is None:
            loss_fn, source = default_loss_fn(phase, model_dict, sample_batch, device, phase_inputs.get("rl_cfg"),
                                              phase_inputs.get("pmpo_cfg"))
        res = run_audit(model_dict, params, loss_fn, device, phase)
        result = res
        report.add(*res.checks)
        proxy = phase == 3 and source.startswith("phase-3 proxy")
        report.add(Check("grad_audit/loss_source", WARN if proxy else OK, "proxy" if proxy else "real", source,
                         "audited a proxy loss: pass loss_fn=lambda: <the phase-3 loss of one imagination rollout> "
                         "to audit the real graph (dreamer.imagination)" if proxy else ""))
    step = step if step is not None else optimizer_step(optimizer)
    judged = step is None or step >= th.min_learning_steps
    if has_required and batch_ok:
        if phase == 1:
            report.run("phase1", lambda: phase1_checks(model_dict, sample_batch, device, result, judged, th))
        elif phase == 2:
            report.run("phase2", lambda: phase2_checks(model_dict, sample_batch, judged, th))
        else:
            report.run("phase3", lambda: phase3_checks(model_dict, sample_batch, phase_inputs, th, judged, step))
    report.run("memory", lambda: check_memory(device, th.memory_frac_warn))
    n = report.counts()
    log.info("diagnose_phase(%d): %d ok, %d warn, %d fail%s", phase, n[OK], n[WARN], n[FAIL],
             f" ({', '.join(report.failed_names())})" if report.failed else "")
    return report


def diagnose_periodic(rt, step: int, phase: int, model_dict: dict, sample_batch: dict, **kw) -> Report:
    """The compact report during training: scalars to TensorBoard (``train/<phase>/diagnostics/...``) through the
    phase's Runtime, failures and warnings to the log. Never stops training."""
    report = diagnose_phase(phase, model_dict, sample_batch, rt.device, compact=True, step=step, **kw)
    rt.scalars(step, report.scalars(), tag("train", phase, "diagnostics/"))
    bad = [c for c in report.checks if c.status != OK]
    for c in bad:
        log.warning("step %d: diagnostics %s %s: %s", step, c.status, c.name, c.hint)
    return report


def diagnose_before_training(phase: int, model_dict: dict, sample_batch: dict, device, stop: bool = True,
                             **kw) -> Report:
    """What every phase script runs before training: the full report, logged as a table; a failed wiring
    check stops the run (``SystemExit``) unless ``stop`` is False (``--no-diagnose``). A failed learning
    check (how far training has got, :attr:`Check.learning`: only judged on resumed weights) is logged and
    does not stop it: training on is its remedy."""
    report = diagnose_phase(phase, model_dict, sample_batch, device, **kw)
    log.info("diagnose_phase(%d):\n%s", phase, report.table())
    wiring = [c.name for c in report.checks if c.status == FAIL and not c.learning]
    learning = [c.name for c in report.checks if c.status == FAIL and c.learning]
    if learning:  # only a resumed run gets here (fresh weights are not judged): training on is the remedy
        log.warning("diagnose_phase(%d): the resumed weights fail %s; training continues, and the checks are judged "
                    "again at every evaluation", phase, learning)
    if wiring and stop:
        raise SystemExit(f"diagnose_phase({phase}) failed: {wiring}; fix it or pass --no-diagnose")
    return report
