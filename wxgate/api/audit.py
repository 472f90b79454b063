"""Recording an operator action done over the API in the audit log (backends/audit.py),
with the name of the request's key (auth.py's PRINCIPAL), the time and the target."""

from __future__ import annotations

from wxgate.api.auth import actor
from wxgate.api.state import ApiState
from wxgate.backends.audit import AuditEntry


async def audited(state: ApiState, action: str, target: str, detail: str = "") -> None:
    entry = AuditEntry(state.clock.now(), actor(), action, target, detail)
    await state.backend.audit_log().record(entry)
