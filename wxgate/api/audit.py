"""Recording an operator action done over the API in the audit log (backends/audit.py),
with the name of the request's key (auth.py's PRINCIPAL), the time and the target."""

from __future__ import annotations

from wxgate.api.auth import actor
from wxgate.api.state import ApiState
from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import DeadLetterFilter


async def audited(state: ApiState, action: str, target: str, detail: str = "") -> None:
    entry = AuditEntry(state.clock.now(), actor(), action, target, detail)
    await state.backend.audit_log().record(entry)


def dead_letter_target(flt: DeadLetterFilter) -> str:
    """The filter as the audit log names it, e.g. "dead letters app=shop errcode=40037"."""
    given = {"app": flt.app, "errcode": flt.errcode, "since": flt.since, "until": flt.until}
    parts = [f"{name}={value}" for name, value in given.items() if value is not None]
    return " ".join(["dead letters", *parts])
