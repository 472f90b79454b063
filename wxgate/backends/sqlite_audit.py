"""The audit log (audit.py) in the SQLite engine's file. Table: `sqlite_schema` (`audit_log`)."""

from __future__ import annotations

from wxgate.backends.audit import AuditEntry
from wxgate.backends.sqlite_db import SqliteDatabase

_RECORD = "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"
_NEWEST = "SELECT at, actor, action, target, detail FROM audit_log ORDER BY seq DESC LIMIT ?"
_NEWEST_OF = (
    "SELECT at, actor, action, target, detail FROM audit_log WHERE action = ?"
    " ORDER BY seq DESC LIMIT ?"
)


class SqliteAuditLog:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def record(self, entry: AuditEntry) -> None:
        row = (entry.at, entry.actor, entry.action, entry.target, entry.detail)
        await self._db.write(lambda conn: conn.execute(_RECORD, row))

    async def entries(self, limit: int, action: str | None = None) -> list[AuditEntry]:
        if action is None:
            rows = await self._db.read(lambda conn: conn.execute(_NEWEST, (limit,)).fetchall())
        else:
            params = (action, limit)
            rows = await self._db.read(lambda conn: conn.execute(_NEWEST_OF, params).fetchall())
        return [AuditEntry(*row) for row in rows]
