"""Grad mode switched off globally by a dependency at import: detected, named, re-enabled (logged)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from diag_fixtures import make_batch, phase1_setup

from diagnostics import FAIL, OK, WARN, diagnose_phase
from diagnostics.gradmode import static_suspects
from dreamer.training.gradmode import GRAD_MODE_EVENTS, guarded_import

BAD = "import torch\n\ntorch.set_grad_enabled(False)  # what a careless dependency does at import\n"


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """Write modules into a temporary folder on sys.path; restore grad mode and the event log after."""
    events = list(GRAD_MODE_EVENTS)
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def plant(name: str, source: str = BAD) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield plant
    torch.set_grad_enabled(True)
    GRAD_MODE_EVENTS[:] = events
    for n in names:
        sys.modules.pop(n, None)


def test_dependency_disabling_grad_at_import_is_named(planted, caplog):
    importlib.import_module(planted("planted_bad_dependency"))
    assert not torch.is_grad_enabled()
    models, opt = phase1_setup()
    report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt)
    check = report.get("grad_mode")
    assert check.status == FAIL
    assert "importing 'planted_bad_dependency' switches torch grad mode off" in check.hint
    assert "guarded_import" in check.hint
    assert torch.is_grad_enabled()  # re-enabled explicitly ...
    assert any("planted_bad_dependency" in where for where, _ in GRAD_MODE_EVENTS)  # ... and recorded
    assert any("re-enabled it explicitly" in r.message for r in caplog.records)  # ... and logged
    assert report.get("grad_audit/trainable_grads").status == OK  # so the rest of the report still means something


def test_guarded_import_turns_it_into_a_warning(planted):
    guarded_import(planted("planted_guarded_dependency"))
    assert torch.is_grad_enabled()
    models, opt = phase1_setup()
    check = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt).get("grad_mode")
    assert check.status == WARN and "planted_guarded_dependency" in check.hint


def test_no_grad_block_around_the_caller():
    models, opt = phase1_setup()
    with torch.no_grad():
        report = diagnose_phase(1, models, make_batch(), "cpu", optimizer=opt, compact=True)
    check = report.get("grad_mode")
    assert check.status == FAIL and "torch.no_grad()" in check.hint
    assert torch.is_grad_enabled()
    GRAD_MODE_EVENTS.pop()


def test_static_scan_looks_at_module_level_statements_only(planted):
    bad = planted("planted_scan_bad")
    fine = planted("planted_scan_fine", "import torch\n\n\ndef infer():\n    torch.set_grad_enabled(False)\n")
    for n in (bad, fine):
        importlib.import_module(n)
        torch.set_grad_enabled(True)
    assert [n for n, _ in static_suspects([bad, fine])] == [bad]
