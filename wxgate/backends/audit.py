"""The audit log: who (the API key's name) did what operator action to what, and when.

Replays, resumes, cancels, suppression changes and key changes are recorded by whoever
performs them (the API's routes, the CLI); `GET /v1/audit` and `wxgate audit` read it
back, newest first. Both engines implement `AuditLog` (sqlite_audit.py,
redis_audit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str  # the API key's name, or "cli:<user>" for the command line
    action: str  # replay, resume, cancel, suppression, key.new, key.revoke, ...
    target: str  # what it touched: a message id, a batch, an app, a key id, a filter
    detail: str = ""  # what came of it, e.g. "3 replayed"


class AuditLog(Protocol):
    async def record(self, entry: AuditEntry) -> None: ...

    async def entries(self, limit: int, action: str | None = None) -> list[AuditEntry]:
        """Up to `limit` entries (of `action` only, when given), newest first."""
        ...
