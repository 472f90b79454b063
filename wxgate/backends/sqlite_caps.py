"""Per-recipient send caps (caps.py) in the SQLite engine's file.

One row per slot, `(app, touser, scope, message_id)`, kept until `expires_at`. A take
reads and writes inside the writer's `BEGIN IMMEDIATE` group, so two workers never
both see the last slot free. Expired rows of every recipient are deleted by the next
take (an index on `expires_at`), so the table holds only live slots.
Table: `sqlite_schema` (`recipient_cap_slots`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from wxgate.backends.caps import CapLimit
from wxgate.backends.sqlite_db import SqliteDatabase

_EXPIRE = "DELETE FROM recipient_cap_slots WHERE expires_at <= ?"
_HELD = (
    "SELECT 1 FROM recipient_cap_slots"
    " WHERE app = ? AND touser = ? AND scope = ? AND message_id = ?"
)
_LIVE = (
    "SELECT expires_at FROM recipient_cap_slots WHERE app = ? AND touser = ? AND scope = ?"
    " ORDER BY expires_at"
)
_TAKE = (
    "INSERT OR REPLACE INTO recipient_cap_slots (app, touser, scope, message_id, expires_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


class SqliteCapStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def take(
        self,
        app: str,
        touser: str,
        message_id: str,
        limits: Sequence[CapLimit],
        now: float,
    ) -> float | None:
        given = list(limits)
        return await self._db.write(lambda conn: _take(conn, app, touser, message_id, given, now))


def _take(
    conn: sqlite3.Connection,
    app: str,
    touser: str,
    message_id: str,
    limits: list[CapLimit],
    now: float,
) -> float | None:
    conn.execute(_EXPIRE, (now,))
    frees: list[float] = []
    wanted: list[CapLimit] = []
    for limit in limits:
        key = (app, touser, limit.scope)
        if conn.execute(_HELD, (*key, message_id)).fetchone() is not None:
            continue
        live = [row[0] for row in conn.execute(_LIVE, key)]
        if len(live) >= limit.count:
            frees.append(live[len(live) - limit.count])
        wanted.append(limit)
    if frees:
        return max(frees)
    for limit in wanted:
        conn.execute(_TAKE, (app, touser, limit.scope, message_id, now + limit.period_s))
    return None
