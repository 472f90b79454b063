"""The dedupe window (dedupe.py) in the SQLite engine's file.

One row per (app, digest) with the first message's id, until `expires_at`. A claim
reads and writes inside the writer's `BEGIN IMMEDIATE` group; expired rows of every
app are deleted by the next claim. Table: `sqlite_schema` (`dedupe_window`).
"""

from __future__ import annotations

import sqlite3

from wxgate.backends.sqlite_db import SqliteDatabase

_EXPIRE = "DELETE FROM dedupe_window WHERE expires_at <= ?"
_FIRST = "SELECT message_id FROM dedupe_window WHERE app = ? AND digest = ?"
_CLAIM = (
    "INSERT OR REPLACE INTO dedupe_window (app, digest, message_id, expires_at) VALUES (?, ?, ?, ?)"
)
_FORGET = "DELETE FROM dedupe_window WHERE app = ? AND digest = ? AND message_id = ?"


class SqliteDedupeStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def claim(
        self, app: str, digest: str, message_id: str, window_s: float, now: float
    ) -> str | None:
        return await self._db.write(
            lambda conn: _claim(conn, app, digest, message_id, now + window_s, now)
        )

    async def forget(self, app: str, digest: str, message_id: str) -> None:
        await self._db.write(lambda conn: conn.execute(_FORGET, (app, digest, message_id)))


def _claim(
    conn: sqlite3.Connection, app: str, digest: str, message_id: str, until: float, now: float
) -> str | None:
    conn.execute(_EXPIRE, (now,))
    row = conn.execute(_FIRST, (app, digest)).fetchone()
    if row is not None:
        return str(row[0])
    conn.execute(_CLAIM, (app, digest, message_id, until))
    return None
