"""Catch a broken setup in seconds: ``diagnose_phase()`` checks every phase before (and, compactly,
during) training, and the gradient-flow audit runs the phase's real loss once forwards and backwards.

    report = diagnose_phase(1, {"tokenizer": tok, "dynamics": model, "loss": loss_fn}, batch, device,
                            optimizer=opt, cache=cache)
    print(report.table()); report.failed; report.failed_names(); report.scalars()

How to read the report: docs/diagnostics.md. CLI: ``python -m diagnostics --phase N --config ...``.
"""

# gradmode first: it records which modules were loaded (and the grad mode) before anything else.
from diagnostics import gradmode
from diagnostics.core import diagnose_before_training, diagnose_periodic, diagnose_phase
from diagnostics.gradflow import AuditResult, check_optimizer, check_precision, run_audit
from diagnostics.gradmode import check_grad_mode, find_culprit
from diagnostics.report import FAIL, OK, WARN, Check, Report
from diagnostics.roles import ROLES
from diagnostics.thresholds import Thresholds

__all__ = [
    "FAIL", "OK", "ROLES", "WARN", "AuditResult", "Check", "Report", "Thresholds", "check_grad_mode",
    "check_optimizer", "check_precision", "diagnose_before_training", "diagnose_periodic", "diagnose_phase", "find_culprit", "gradmode",
    "run_audit",
]
