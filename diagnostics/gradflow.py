"""Gradient-flow audit: one forward and one backward of the phase's real loss on the sample batch.

Every trainable parameter must receive a finite, non-zero gradient and no frozen one any; when the
graph is cut, the report names the first module (in forward order) whose parameters got none, the
reason the forward hooks saw, and the last such module (the cut lies right after it). The audit
leaves no trace: gradients, RNG state and the loss module's mode are restored afterwards.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from diagnostics.hooks import ForwardRecorder
from diagnostics.report import FAIL, OK, WARN, Check, verdict
from diagnostics.roles import FROZEN, IDLE, TRAINABLE, Param

log = logging.getLogger(__name__)


@dataclass
class AuditResult:
    checks: list[Check] = field(default_factory=list)
    loss: float | None = None
    grad_norm: float | None = None  # L2 norm over the gradients of the trainable parameters
    groups_with_grad: set[str] = field(default_factory=set)


def _cut_items(params: list[Param], missing: set[str]) -> tuple[list[str], set[str]]:
    """(items, ungraded modules). Items: maximal module subtrees whose trainable parameters all got no
    gradient, plus single parameters without gradient held directly by a module whose others got one."""
    total, graded = Counter(), Counter()
    for p in params:
        if p.role != TRAINABLE:
            continue
        parts = p.name.split(".")
        for i in range(1, len(parts)):
            pre = ".".join(parts[:i])
            total[pre] += 1
            graded[pre] += p.name not in missing
    ungraded = {m for m in total if graded[m] == 0}
    items = [m for m in ungraded if m.rpartition(".")[0] not in ungraded]
    items += [name for name in missing if name.rpartition(".")[0] not in ungraded]
    return items, ungraded


def _locate(rec: ForwardRecorder, params: list[Param], missing: set[str]) -> str:
    """Name the first module without gradient, why, where the cut is, and what else is cut off."""
    items, ungraded = _cut_items(params, missing)

    def order(item: str) -> tuple[float, str]:  # parameters held directly by a module go after modules
        if item not in rec.modules:
            return (math.inf if not rec.subtree(item.rpartition(".")[0]) else 1e9, item)
        calls = rec.subtree(item)
        return (calls[0][1].order if calls else math.inf, item)

    ordered = sorted(items, key=order)
    modules = [i for i in ordered if i in rec.modules] or ordered
    first = modules[0]
    n = sum(1 for m in missing if m == first or m.startswith(first + "."))
    owner = first if first in rec.modules else first.rpartition(".")[0]
    msg = f"first module without gradient (forward order): {first} ({n} tensor(s)): {rec.why_no_grad(owner)}"
    graphless = [m for m, c in rec.calls.items() if m in ungraded and m != first and c.grad_on
                 and c.graphless_out and not c.graph_out]
    graphless = [m for m in graphless if not any(m.startswith(o + ".") for o in graphless)]
    if graphless:
        msg += (f". {', '.join(graphless[:3])} returned no graph although grad mode was on: look there for a "
                "@torch.no_grad() forward or a .detach()")
    called = [i for i in modules if order(i)[0] < 1e9]
    if len(called) > 1:
        msg += f". The last module without gradient is {called[-1]}: the graph is cut right after it"
    if len(ordered) > 1:
        rest = [i for i in ordered if i != first]
        msg += f". Also without gradient: {', '.join(rest[:6])}" + (" ..." if len(rest) > 6 else "")
    return msg


def _behind_zero_layer(p: Param, trainable: list[Param]) -> bool:
    """A zero gradient is expected before the first update behind a zero-initialised output layer (the
    reward and value heads, docs/design.md §8): some all-zero matrix in the same module, nearest first,
    within the parameter's group, that itself receives a gradient."""
    module = p.name.rpartition(".")[0]
    while module and (module == p.group or module.startswith(p.group + ".")):
        for q in trainable:
            if q.name.startswith(module + ".") and q.param.dim() >= 2 and not bool(q.param.any()) \
                    and q.param.grad is not None and bool(q.param.grad.any()):
                return True
        module = module.rpartition(".")[0]
    return False


def run_audit(model_dict: dict, params: list[Param], loss_fn: Callable[[], torch.Tensor],
              device: torch.device, phase: int) -> AuditResult:
    res = AuditResult()
    saved = {id(p.param): p.param.grad for p in params}
    loss_mod = model_dict.get("loss")
    was_training = getattr(loss_mod, "training", None)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        for p in params:
            p.param.grad = None
        if loss_mod is not None:
            loss_mod.eval()  # e.g. ShortcutForcingLoss: do not move the running-RMS statistics
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            rec = ForwardRecorder(model_dict)
            try:
                with rec:
                    loss = loss_fn()
            except Exception as e:  # the loss itself is broken on this batch: say so, audit nothing else
                log.debug("loss_fn raised", exc_info=True)
                res.checks.append(Check("grad_audit/loss", FAIL, type(e).__name__, "a finite scalar with a graph",
                                        f"the phase-{phase} loss raised on the sample batch: {type(e).__name__}: {e}"))
                return res
            _backward_and_judge(res, rec, loss, params)
    finally:
        for p in params:
            p.param.grad = saved[id(p.param)]
        if loss_mod is not None and was_training is not None:
            loss_mod.train(was_training)
    return res


def _gathered(params: list[Param]) -> list[Param]:
    """FSDP-sharded parameters (DTensors, whose local shard may even be empty) as full tensors carrying
    their full gradients: a collective that every rank runs in the same order."""
    out = []
    for p in params:
        if hasattr(p.param, "full_tensor"):
            full = p.param.full_tensor().detach()
            if p.param.grad is not None:
                full.grad = p.param.grad.full_tensor()
            p = replace(p, param=full)
        out.append(p)
    return out


def _backward_and_judge(res: AuditResult, rec: ForwardRecorder, loss, params: list[Param]) -> None:
    if not torch.is_tensor(loss) or loss.numel() != 1:
        res.checks.append(Check("grad_audit/loss", FAIL, type(loss).__name__, "a scalar tensor",
                                "loss_fn() must return one scalar tensor (the loss to call backward on)"))
        return
    res.loss = float(loss.detach())
    finite = math.isfinite(res.loss)
    if not loss.requires_grad:
        hint = "the loss has no graph: every path from the trainable parameters to it is cut"
        res.checks.append(Check("grad_audit/loss", FAIL, res.loss, "a finite scalar with a graph", hint))
    else:
        res.checks.append(verdict(finite, "grad_audit/loss", res.loss, "a finite scalar with a graph",
                                  "the loss is not finite on the sample batch: check latents / rewards for inf or nan "
                                  "and the loss maths (log of 0, division by a zero count)"))
        loss.backward()
    params = _gathered(params)
    trainable = [p for p in params if p.role == TRAINABLE]
    missing = {p.name for p in trainable if p.param.grad is None}
    nonfinite = [p.name for p in trainable if p.param.grad is not None and not bool(torch.isfinite(p.param.grad).all())]
    zero = [p for p in trainable if p.param.grad is not None and not bool(p.param.grad.any())]
    behind = [p.name for p in zero if _behind_zero_layer(p, trainable)]
    zero = [p.name for p in zero if p.name not in behind]
    bad = len(missing) + len(nonfinite) + len(zero)
    expected = f"0 of {len(trainable)} trainable tensors without a finite non-zero gradient"
    if behind:
        expected += f" ({len(behind)} behind zero-initialised output layers: zero until the first update)"
    hints = []
    if missing:
        hints.append(_locate(rec, params, missing))
    if nonfinite:
        hints.append(f"non-finite gradients on {nonfinite[:3]}: a loss term overflows (check bf16/fp16, log of 0)")
    if zero:
        hints.append(f"exactly-zero gradients on {zero[:3]}: reached by the graph but multiplied by 0 (a zero loss "
                     "weight, a fully masked batch, dead units)")
    res.checks.append(Check("grad_audit/trainable_grads", FAIL if bad else OK, bad, expected, "; ".join(hints)))
    finite_grads = [p.param.grad.float() for p in trainable if p.param.grad is not None and p.name not in nonfinite]
    res.grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in finite_grads]))) \
        if finite_grads else 0.0
    with_grad = [p for p in params if p.param.grad is not None and bool(p.param.grad.any())]
    res.groups_with_grad = {p.group for p in with_grad}
    frozen = sorted({p.group for p in with_grad if p.role == FROZEN})
    idle = sorted({p.group for p in with_grad if p.role == IDLE})
    n_frozen = sum(1 for p in with_grad if p.role == FROZEN)
    if frozen:
        res.checks.append(Check("grad_audit/frozen_grads", FAIL, n_frozen, "no gradient on frozen parameters",
                                f"gradients reach frozen {frozen}: call requires_grad_(False) on them and compute "
                                "their outputs as constants (under torch.no_grad() or .detach()) so nothing flows "
                                "into the world model / frozen heads"))
    elif idle:
        res.checks.append(Check("grad_audit/frozen_grads", WARN, 0, "no gradient on frozen or idle parameters",
                                f"{idle} are not trained in this phase but received gradients from the loss"))
    else:
        res.checks.append(Check("grad_audit/frozen_grads", OK, 0, "no gradient on frozen parameters"))


def check_optimizer(optimizer, params: list[Param]) -> Check:
    """The optimiser(s) hold exactly the trainable parameters (idle ones are allowed)."""
    opts = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    held = {id(p) for o in opts for g in o.param_groups for p in g["params"]}
    known = {id(p.param) for p in params}
    absent = [p.name for p in params if p.role == TRAINABLE and id(p.param) not in held]
    frozen = [p.name for p in params if p.role == FROZEN and id(p.param) in held]
    foreign = len(held - known)
    bad = len(absent) + len(frozen) + foreign
    hints = []
    if absent:
        hints.append(f"{len(absent)} trainable parameter(s) are not in the optimiser (e.g. {absent[0]}): they never "
                     "move; build it after (un)freezing from the phase's trainable parameters")
    if frozen:
        hints.append(f"{len(frozen)} frozen parameter(s) are in the optimiser (e.g. {frozen[0]}): build it from "
                     "[p for p in params if p.requires_grad] after freezing (Agent.phase3_parameters() in phase 3)")
    if foreign:
        hints.append(f"{foreign} optimiser parameter(s) belong to no module in model_dict: a stale copy of a model "
                     "(built before .to(device) / load_state_dict into a new module?)")
    return Check("grad_audit/optimizer", FAIL if bad else OK, bad, "optimiser holds exactly the trainable parameters",
                 "; ".join(hints))


def check_precision(params: list[Param], scaler) -> Check:
    """fp16 parameters combined with a GradScaler fail; low-precision master weights warn."""
    half = [p.name for p in params if p.role == TRAINABLE and p.param.dtype == torch.float16]
    low = half + [p.name for p in params if p.role == TRAINABLE and p.param.dtype == torch.bfloat16]
    scaling = scaler is not None and bool(getattr(scaler, "is_enabled", lambda: True)())
    dtypes = sorted({str(p.param.dtype).replace("torch.", "") for p in params if p.role == TRAINABLE})
    value = ",".join(dtypes) or "-"
    if half and scaling:
        return Check("grad_audit/precision", FAIL, value, "float32 trainable parameters",
                     f"{len(half)} trainable parameters are float16 (e.g. {half[0]}) and a GradScaler is used: "
                     "scaler.unscale_() refuses fp16 gradients and fp16 master weights lose small updates. Keep the "
                     "parameters in float32 and use torch.autocast (bf16 on CUDA needs no GradScaler)")
    if low:
        return Check("grad_audit/precision", WARN, value, "float32 trainable parameters",
                     f"{len(low)} trainable parameters are fp16/bf16 (e.g. {low[0]}): updates below their resolution "
                     "are lost; keep float32 master weights and use autocast")
    return Check("grad_audit/precision", OK, value, "float32 trainable parameters")
