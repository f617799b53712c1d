"""The structured result of ``diagnose_phase()``: one :class:`Check` per question, gathered in a
:class:`Report` that prints as a table and yields compact scalars for TensorBoard."""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
_RANK = {OK: 0, WARN: 1, FAIL: 2}


@dataclass
class Check:
    """One question asked of the setup.

    name: slash-separated id (``grad_audit/trainable_grads``); status: "ok" | "warn" | "fail";
    value: what was measured (a number where possible, so it can go to TensorBoard);
    expected: what a healthy setup shows; hint: how to fix it (empty when ok). learning: a verdict on how
    far training has got (judged only after some steps), not on the wiring: a failure is reported but never
    stops a run before it trains (diagnose_before_training), since training on is the remedy.
    """

    name: str
    status: str
    value: float | int | str | None
    expected: str
    hint: str = ""
    learning: bool = False

    def __post_init__(self):
        if self.status not in _RANK:
            raise ValueError(f"Check {self.name!r}: status must be ok / warn / fail, got {self.status!r}")


def verdict(ok: bool, name: str, value, expected: str, hint: str, bad: str = FAIL, learning: bool = False) -> Check:
    """A check that is ``ok`` when ``ok`` is true and ``bad`` (fail by default) otherwise."""
    return Check(name, OK if ok else bad, value, expected, "" if ok else hint, learning)


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


@dataclass
class Report:
    phase: int
    device: str
    checks: list[Check] = field(default_factory=list)

    # --- building -----------------------------------------------------------------------------
    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def run(self, name: str, fn: Callable[[], list[Check] | Check | None]) -> None:
        """Run one group of checks; a check that crashes becomes a failed check naming the exception."""
        try:
            out = fn()
        except Exception as e:
            log.debug("check %s crashed", name, exc_info=True)
            out = Check(name, FAIL, f"{type(e).__name__}", "the check runs", f"it raised {type(e).__name__}: {e}")
        if out is None:
            return
        self.add(*(out if isinstance(out, list) else [out]))

    # --- reading ------------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def failed_names(self) -> list[str]:
        return [c.name for c in self.checks if c.status == FAIL]

    def warned_names(self) -> list[str]:
        return [c.name for c in self.checks if c.status == WARN]

    def get(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def counts(self) -> dict[str, int]:
        out = {OK: 0, WARN: 0, FAIL: 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def scalars(self) -> dict[str, float]:
        """Compact numbers for TensorBoard: the status counts and every numeric check value."""
        out: dict[str, float] = {f"count/{k}": float(v) for k, v in self.counts().items()}
        for c in self.checks:
            if isinstance(c.value, (bool, int, float)):
                out[c.name] = float(c.value)
        return out

    def table(self, width: int = 110) -> str:
        """A readable table: one row per check; the hint follows on its own lines for warn / fail."""
        n = self.counts()
        head = f"diagnose_phase({self.phase}) on {self.device}: {n[OK]} ok, {n[WARN]} warn, {n[FAIL]} fail"
        wn = max([len(c.name) for c in self.checks] + [5])
        wv = min(24, max([len(fmt(c.value)) for c in self.checks] + [5]))
        rows = [head, f"{'STATUS':6}  {'CHECK':{wn}}  {'VALUE':{wv}}  EXPECTED", "-" * min(width, wn + wv + 40)]
        for c in self.checks:
            value = fmt(c.value)
            value = value if len(value) <= wv else value[: wv - 1] + "…"
            status = c.status.upper() if c.status != OK else c.status
            rows.append(f"{status:6}  {c.name:{wn}}  {value:{wv}}  {c.expected}")
            if c.hint:
                rows += textwrap.wrap(c.hint, width, initial_indent=" " * 8 + "-> ", subsequent_indent=" " * 11)
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()
