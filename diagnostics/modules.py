"""Checks on the modules themselves: which are present, where they live, which require grad."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from diagnostics.report import FAIL, OK, WARN, Check, verdict
from diagnostics.roles import EXPECTED, FROZEN, GROUPS, REQUIRED, TRAINABLE, Param
from dreamer.training.runtime import unwrap


def same_device(a: torch.device, b: torch.device) -> bool:
    """Same type, and same index unless one of them leaves the index open (``cuda`` vs ``cuda:0``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_present(phase: int, model_dict: dict, roles: dict[str, str]) -> list[Check]:
    out = []
    missing = [k for k in REQUIRED[phase] if k not in model_dict]
    optional = [k for k in EXPECTED[phase] if k not in model_dict and k not in missing]
    unknown = [k for k in model_dict if k not in roles]
    out.append(verdict(not missing, "model_dict/required", len(missing) or "all",
                       f"keys {list(REQUIRED[phase])}",
                       f"model_dict lacks {missing}; phase {phase} needs them (see docs/diagnostics.md)"))
    if optional:
        out.append(Check("model_dict/optional", WARN, ",".join(optional), f"keys {list(EXPECTED[phase])}",
                         f"{optional} not given: the checks that need them are skipped"))
    if unknown:
        out.append(Check("model_dict/unknown", WARN, ",".join(unknown), f"keys of the phase-{phase} table",
                         f"{unknown} are not in the phase-{phase} table and are treated as frozen; pass "
                         "roles={name: 'trainable' | 'frozen' | 'idle'} to say otherwise"))
    if "agent" in model_dict:
        agent = unwrap(model_dict["agent"])
        absent = [g for g in GROUPS["agent"] if not isinstance(getattr(agent, g, None), nn.Module)]
        if absent:
            out.append(Check("model_dict/agent_heads", FAIL, ",".join(absent), f"agent.{'/'.join(GROUPS['agent'])}",
                             f"the agent lacks {absent}; build it with dreamer.agent.Agent"))
    return out


def check_devices(model_dict: dict, batch: dict, device: torch.device) -> list[Check]:
    """Every parameter and buffer of every module, and every tensor of the batch, on ``device``."""
    out = []
    for key, module in model_dict.items():
        if not isinstance(module, nn.Module):
            continue
        wrong: dict[str, list[str]] = defaultdict(list)
        tensors = list(unwrap(module).named_parameters()) + list(unwrap(module).named_buffers())
        for n, t in tensors:
            if not same_device(t.device, device):
                wrong[str(t.device)].append(n)
        found = ", ".join(f"{len(v)} on {d} (e.g. {key}.{v[0]})" for d, v in wrong.items())
        out.append(verdict(not wrong, f"device/{key}", found or str(device), f"all tensors on {device}",
                           f"{found}: call model_dict[{key!r}].to({str(device)!r}) after building / loading it "
                           "(buffers created in forward must use the input's device)"))
    wrong_b = [k for k, v in batch.items() if torch.is_tensor(v) and not same_device(v.device, device)]
    out.append(verdict(not wrong_b, "device/batch", ",".join(wrong_b) or str(device), f"batch tensors on {device}",
                       f"batch tensors {wrong_b} are not on {device}: build ClipSampler(..., device=rt.device)"))
    return out


def check_requires_grad(params: list[Param], phase: int) -> list[Check]:
    """One row per group (``dynamics``, ``agent.policy``, ...) against the phase's role table; idle
    parameters (the phase-2 value head) may require grad or not."""
    by_group: dict[str, list[Param]] = defaultdict(list)
    for p in params:
        by_group[p.group].append(p)
    out = []
    for group, ps in by_group.items():
        roles = {p.role for p in ps}
        n_req = sum(p.param.requires_grad for p in ps)
        value = f"{n_req}/{len(ps)} require grad"
        trainable = [p for p in ps if p.role == TRAINABLE]
        frozen = [p for p in ps if p.role == FROZEN]
        bad_t = [p.name for p in trainable if not p.param.requires_grad]
        bad_f = [p.name for p in frozen if p.param.requires_grad]
        expected = " + ".join(sorted(roles))
        if bad_t:
            out.append(Check(f"requires_grad/{group}", FAIL, value, f"{expected} in phase {phase}",
                             f"{len(bad_t)} parameter(s) phase {phase} trains are frozen (e.g. {bad_t[0]}): "
                             f"call requires_grad_(True) on {group}, or build the optimiser after unfreezing"))
        elif bad_f:
            out.append(Check(f"requires_grad/{group}", FAIL, value, f"{expected} in phase {phase}",
                             f"{len(bad_f)} parameter(s) that phase {phase} keeps frozen require grad (e.g. "
                             f"{bad_f[0]}): call {group}.requires_grad_(False)"
                             + (" (Agent.freeze_for_phase3() does it for trunk/reward/cont)" if phase == 3 else "")))
        else:
            out.append(Check(f"requires_grad/{group}", OK, value, f"{expected} in phase {phase}"))
    return out


def check_modes(model_dict: dict) -> list[Check]:
    """The frozen tokenizer stays in eval mode (docs/design.md §2)."""
    tok = model_dict.get("tokenizer")
    if not isinstance(tok, nn.Module):
        return []
    # the wrapper's own flag does not matter (it has no train-time behaviour); its submodules' do
    training = [n for n, m in unwrap(tok).named_modules() if n and m.training]
    return [verdict(not training, "tokenizer/eval_mode", len(training), "0 submodules in training mode",
                    f"{len(training)} tokenizer submodules are in training mode (e.g. {training[:1]}): "
                    "call tokenizer.eval(); CosmosTokenizerWrapper.train() keeps it in eval")]
