"""The grad-mode guard, the one home for it: global grad mode switched off (by an import, or anything
else) silently turns every later training step into a no-op, so it is turned back on explicitly and
the event is logged and recorded (``GRAD_MODE_EVENTS``, read by ``diagnostics``)."""

from __future__ import annotations

import importlib
import logging

import torch

log = logging.getLogger(__name__)

# Every time the global grad mode was found switched off and turned back on: (where, detail).
GRAD_MODE_EVENTS: list[tuple[str, str]] = []


def ensure_grad_enabled(where: str) -> bool:
    """Turn grad mode back on (logged, recorded) if something switched it off; returns True when it had to."""
    if torch.is_grad_enabled():
        return False
    torch.set_grad_enabled(True)
    GRAD_MODE_EVENTS.append((where, "grad mode was globally disabled"))
    log.error("torch grad mode was disabled globally at %s; re-enabled it explicitly", where)
    return True


def guarded_import(name: str):
    """Import ``name``; if that import switched grad mode off globally, say so, name it, turn it back on."""
    before = torch.is_grad_enabled()
    module = importlib.import_module(name)
    if before and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        GRAD_MODE_EVENTS.append((f"import {name}", "importing it disabled grad mode globally"))
        log.error("importing %s disabled torch grad mode globally; re-enabled it explicitly", name)
    return module
