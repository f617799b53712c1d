"""Which parameters each phase trains (docs/design.md §4–6), and how parameters map to those groups.

A role table maps a dotted prefix (a ``model_dict`` key, optionally followed by a submodule path) to
a role; the longest matching prefix wins:

* ``trainable``: every parameter requires grad, receives a finite non-zero gradient and sits in the
  optimiser;
* ``frozen``: no parameter requires grad, receives a gradient or sits in the optimiser;
* ``idle``: exists but is not trained in this phase: requires_grad is not judged, it must not receive a
  gradient (warn), and the optimiser may hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dreamer.training.runtime import unwrap

TRAINABLE, FROZEN, IDLE = "trainable", "frozen", "idle"

ROLES: dict[int, dict[str, str]] = {
    1: {"tokenizer": FROZEN, "dynamics": TRAINABLE, "loss": FROZEN},
    2: {"tokenizer": FROZEN, "dynamics": FROZEN, "agent": TRAINABLE},
    3: {"tokenizer": FROZEN, "dynamics": FROZEN, "agent": FROZEN, "agent.policy": TRAINABLE,
        "agent.value": TRAINABLE, "prior": FROZEN},
}
REQUIRED: dict[int, tuple[str, ...]] = {1: ("dynamics",), 2: ("agent",), 3: ("agent", "prior")}
EXPECTED: dict[int, tuple[str, ...]] = {1: ("tokenizer", "dynamics", "loss"), 2: ("tokenizer", "dynamics", "agent"),
                                        3: ("tokenizer", "dynamics", "agent", "prior")}
# The sub-groups reported separately (one requires_grad row each).
GROUPS: dict[str, tuple[str, ...]] = {"agent": ("trunk", "policy", "reward", "cont", "value")}


def role_of(name: str, roles: dict[str, str]) -> str:
    """Role of a dotted parameter / module name by longest matching prefix (frozen if none)."""
    best, best_len = FROZEN, -1
    for prefix, role in roles.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = role, len(prefix)
    return best


def group_of(name: str, model_dict: dict[str, nn.Module]) -> str:
    """Reporting group of a dotted parameter name: ``agent.policy`` for agent heads, else the key."""
    key, _, rest = name.partition(".")
    sub = rest.split(".", 1)[0]
    if sub and sub in GROUPS.get(key, ()):
        return f"{key}.{sub}"
    return key


@dataclass
class Param:
    name: str  # dotted, prefixed with its model_dict key
    param: nn.Parameter
    role: str
    group: str


def named_params(model_dict: dict[str, nn.Module], roles: dict[str, str]) -> list[Param]:
    """Every parameter of every module once (shared parameters are listed under their first name)."""
    seen: set[int] = set()
    out: list[Param] = []
    for key, module in model_dict.items():
        if not isinstance(module, nn.Module):
            continue
        for n, p in unwrap(module).named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{key}.{n}"
            out.append(Param(full, p, role_of(full, roles), group_of(full, model_dict)))
    return out


def phase_roles(phase: int, overrides: dict[str, str] | None = None) -> dict[str, str]:
    if phase not in ROLES:
        raise ValueError(f"diagnose_phase: phase must be 1, 2 or 3, got {phase!r}")
    roles = dict(ROLES[phase])
    for k, v in (overrides or {}).items():
        if v not in (TRAINABLE, FROZEN, IDLE):
            raise ValueError(f"roles[{k!r}]={v!r}: must be one of {TRAINABLE}, {FROZEN}, {IDLE}")
        roles[k] = v
    return roles
