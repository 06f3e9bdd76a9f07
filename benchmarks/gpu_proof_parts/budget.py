"""Time budgets and outcomes of the proof's parts.

A part gets a :class:`Part` holding its budget. It asks ``part.allows(seconds)`` before each piece of work, and
records what it left out with ``part.skip(what, why)``, its pass/fail facts with ``part.check(...)`` and its
measurements in ``part.data``. :func:`run_part` runs a part function, turns an exception into a failed part and
stamps the time it took. A part's status: ``failed`` (an error or a failed check), ``partial`` (something was
skipped), ``skipped`` (nothing ran) or ``ok``.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "partial", "failed", "skipped")


@dataclass
class Part:
    """One part of the proof: its budget, what it measured, checked and skipped."""

    name: str
    budget_s: float
    data: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    cpu_s: float = 0.0  # CPU time of this process and of the stage processes it waited for
    ran: bool = False
    _start: float = field(default_factory=time.monotonic, repr=False)

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` more work still fits the budget."""
        return self.left() >= seconds

    def allows_another(self, estimate_s: float, durations: list[float]) -> bool:
        """Whether one more item fits: the longer of ``estimate_s`` and the longest item so far."""
        return self.allows(max([estimate_s, *durations]))

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what} ({why})")

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def status(self) -> str:
        if self.error is not None or any(not c["ok"] for c in self.checks):
            return "failed"
        if not self.ran:
            return "skipped"
        return "partial" if self.skipped else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "budget_s": self.budget_s,
            "seconds": round(self.seconds, 1),
            "cpu_s": round(self.cpu_s, 1),
            "skipped": self.skipped,
            "error": self.error,
            "checks": self.checks,
            "data": self.data,
        }


def run_part(part: Part, body: Callable[[Part], None]) -> Part:
    """Run ``body(part)``; an exception fails the part (its last traceback lines are kept), the next part still runs."""
    part._start = time.monotonic()
    part.ran = True
    cpu_before = _cpu_seconds()
    try:
        body(part)
    except Exception as error:  # a part must never stop the proof: the report says what broke
        lines = traceback.format_exception(error)
        part.error = f"{type(error).__name__}: {error}".strip()
        part.data["traceback_tail"] = "".join(lines[-6:])[-3000:]
    part.seconds = part.elapsed()
    part.cpu_s = _cpu_seconds() - cpu_before
    return part


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the stage processes)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def skipped_part(name: str, budget_s: float, why: str) -> Part:
    """A part that did not run at all, with the reason."""
    part = Part(name, budget_s)
    part.skip("the whole part", why)
    return part
