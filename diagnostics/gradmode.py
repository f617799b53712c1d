"""Global grad mode: is it on, and when something switched it off, which imported module did it.

``torch.set_grad_enabled(False)`` (or an un-exited ``torch.no_grad().__enter__()``) executed at import
time silently turns every later training step into a no-op. Finding the culprit after the fact:

1. ``dreamer.training.gradmode.GRAD_MODE_EVENTS`` names modules imported through ``guarded_import``;
2. a scan of the source of every module imported since this package was (or, failing that, since
   torch was) for such a statement at module level (not undone by a later module-level
   ``set_grad_enabled(True)``), naming the file and line;
3. (thorough) one subprocess importing all those modules in their original order, stopping at the
   first one after which grad mode is off.

Re-enabling is explicit and logged (``dreamer.training.gradmode.ensure_grad_enabled``), never silent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diagnostics.report import Check

log = logging.getLogger(__name__)

# Snapshot taken when diagnostics is imported: the modules loaded so far and the grad mode then.
_BASELINE = set(sys.modules)
_BASELINE_GRAD = torch.is_grad_enabled()
_SKIP_TOP = {"torch", "torchgen", "functorch", "__main__", "__mp_main__", "builtins", "diagnostics", "_pytest",
             "pytest", "pluggy", "py", "_virtualenv"}
# Module-level statements (no indentation) that switch grad mode off / on.
_OFF = re.compile(r"^(?:[\w.]+\.)?_?set_grad_enabled\(\s*(?:False|0)\s*\)|^\S.*\b(?:no_grad|inference_mode)\([^)]*\)"
                  r"\.__enter__\(")
_ON = re.compile(r"^(?:[\w.]+\.)?_?set_grad_enabled\(\s*(?:True|1)\s*\)")
_PROBE = r"""
import importlib, json, sys
import torch
if not torch.is_grad_enabled():
    print("CULPRIT torch"); sys.exit(0)
for name in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(name)
    except BaseException:
        continue
    if not torch.is_grad_enabled():
        print("CULPRIT " + name); sys.exit(0)
print("NONE")
"""


def candidates() -> list[str]:
    """Non-stdlib modules that could have run code at import: first those imported after this package
    (when grad mode was still on then), then the ones imported after torch."""
    names = list(sys.modules)
    start = names.index("torch") + 1 if "torch" in names else 0
    after = [n for n in names if n not in _BASELINE]
    before = [n for n in names[start:] if n in _BASELINE]
    ordered = after + before if _BASELINE_GRAD else before + after
    stdlib = getattr(sys, "stdlib_module_names", set())
    out = []
    for n in ordered:
        top = n.split(".")[0]
        if top in stdlib or top in _SKIP_TOP or top.startswith("_") or sys.modules.get(n) is None:
            continue
        out.append(n)
    return out


def static_suspects(names: list[str]) -> list[tuple[str, str]]:
    """(module, "file:line: statement") for modules whose last module-level grad-mode statement
    switches it off."""
    out = []
    for n in names:
        f = getattr(sys.modules.get(n), "__file__", None)
        if not f or not f.endswith(".py"):
            continue
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        if "_grad_enabled(" not in text and ".__enter__(" not in text:  # fast path for nearly every file
            continue
        last = None
        for i, line in enumerate(text.splitlines(), 1):
            if _OFF.match(line):
                last = f"{f}:{i}: {line.strip()}"
            elif _ON.match(line):
                last = None
        if last:
            out.append((n, last))
    return out


def _probe(names: list[str], timeout: float) -> str | None:
    """Import ``names`` in order in a clean interpreter; the first after which grad mode is off."""
    paths = [os.getcwd() if p == "" else p for p in sys.path]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], check=False, input=json.dumps(names),
                             capture_output=True, text=True, timeout=timeout, env=env)
    except (subprocess.TimeoutExpired, OSError) as e:
        log.warning("grad-mode probe of %d modules did not finish: %s", len(names), e)
        return None
    for line in res.stdout.splitlines()[::-1]:
        if line.startswith("CULPRIT "):
            return line.split(" ", 1)[1].strip()
    return None


def find_culprit(thorough: bool = True, timeout: float = 120.0) -> tuple[str | None, str]:
    """(module name or None, how it was found)."""
    from dreamer.training.gradmode import GRAD_MODE_EVENTS

    for where, _ in GRAD_MODE_EVENTS[::-1]:
        if where.startswith("import "):
            return where[len("import "):], "recorded by guarded_import()"
    names = candidates()
    suspects = static_suspects(names)
    if suspects:
        return suspects[0][0], f"its source switches it off at module level, {suspects[0][1]}"
    if thorough and names:
        found = _probe(names, timeout)
        if found and found != "torch":
            return found, "first module after whose import grad mode was off (clean interpreter)"
    return None, f"no module among {len(names)} imported ones switches grad mode off at import"


def check_grad_mode(thorough: bool = True) -> Check:
    """Fail when grad mode is off now (re-enabled explicitly, logged); warn when it had been switched
    off and re-enabled earlier in this process; name the module responsible either way."""
    from diagnostics.report import FAIL, OK, WARN, Check
    from dreamer.training.gradmode import GRAD_MODE_EVENTS, ensure_grad_enabled

    name, expected = "grad_mode", "torch.is_grad_enabled() and no recorded switch-off"
    fix = ("import it through dreamer.training.gradmode.guarded_import({m!r}) (re-enables and logs), move the "
           "import before torch-using code is configured, or fix the module (a module-level "
           "torch.set_grad_enabled(False) / no_grad().__enter__()).")
    if torch.is_grad_enabled():
        if not GRAD_MODE_EVENTS:
            return Check(name, OK, True, expected)
        where = "; ".join(f"{w} ({d})" for w, d in GRAD_MODE_EVENTS)
        culprit, how = find_culprit(thorough)
        who = f" The module responsible: {culprit!r} ({how}); {fix.format(m=culprit)}" if culprit else ""
        return Check(name, WARN, len(GRAD_MODE_EVENTS), expected,
                     f"grad mode was switched off globally and re-enabled explicitly at: {where}.{who}")
    if torch.is_inference_mode_enabled():
        return Check(name, FAIL, False, expected, "diagnose_phase() runs inside torch.inference_mode(): "
                     "call it (and train) outside that context; nothing can be trained in inference mode.")
    culprit, how = find_culprit(thorough)
    ensure_grad_enabled("diagnose_phase" + (f" (switched off by importing {culprit})" if culprit else ""))
    if culprit:
        hint = (f"importing {culprit!r} switches torch grad mode off globally ({how}): every later forward "
                f"builds no graph and nothing trains. Re-enabled now (logged); {fix.format(m=culprit)}")
    else:
        hint = (f"grad mode was off ({how}): diagnose_phase() is called inside torch.no_grad() or something "
                "called torch.set_grad_enabled(False). Re-enabled now (logged); remove that call, and use "
                "no_grad only as a local context around pure inference.")
    return Check(name, FAIL, False, expected, hint)
