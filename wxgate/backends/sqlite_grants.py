"""The grant ledger of subscribe messages in the SQLite engine's file (backends/grants.py).

Every statement runs through the file's one group-commit writer, so a change that
reads before it decides (`use`) runs inside the writer's `BEGIN IMMEDIATE` group and
two processes cannot both use the last one-time grant. Table: `subscribe_grants`.
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants only.

from __future__ import annotations

import sqlite3

from wxgate.backends.grants import Grant, GrantUse
from wxgate.backends.sqlite_db import SqliteDatabase

_COLUMNS = "app, touser, template_id, one_time, long_term, updated_at"
_ACCEPT = (
    "INSERT INTO subscribe_grants (app, touser, template_id, one_time, long_term, updated_at)"
    " VALUES (:app, :touser, :template_id, :one_time, :long_term, :now)"
    " ON CONFLICT (app, touser, template_id) DO UPDATE SET"
    " one_time = one_time + excluded.one_time,"
    " long_term = max(long_term, excluded.long_term), updated_at = excluded.updated_at"
    f" RETURNING {_COLUMNS}"
)
_WHERE = "WHERE app = ? AND touser = ? AND template_id = ?"
_GET = f"SELECT {_COLUMNS} FROM subscribe_grants {_WHERE}"
_CLEAR = f"DELETE FROM subscribe_grants {_WHERE}"
_SPEND = f"UPDATE subscribe_grants SET one_time = one_time - 1, updated_at = ? {_WHERE}"
_LIST = f"SELECT {_COLUMNS} FROM subscribe_grants WHERE app = ? AND touser = ? ORDER BY template_id"


def _grant(row: tuple[str, str, str, int, int, float]) -> Grant:
    app, touser, template_id, one_time, long_term, updated_at = row
    return Grant(app, touser, template_id, one_time, bool(long_term), updated_at)


class SqliteGrantStore:
    """The ledger of the processes that share one SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def accept(
        self, app: str, touser: str, template_id: str, *, long_term: bool, now: float
    ) -> Grant:
        params = {
            "app": app,
            "touser": touser,
            "template_id": template_id,
            "one_time": 0 if long_term else 1,
            "long_term": 1 if long_term else 0,
            "now": now,
        }
        return await self._db.write(lambda conn: _grant(conn.execute(_ACCEPT, params).fetchone()))

    async def clear(self, app: str, touser: str, template_id: str) -> bool:
        key = (app, touser, template_id)
        return await self._db.write(lambda conn: conn.execute(_CLEAR, key).rowcount > 0)

    async def use(self, app: str, touser: str, template_id: str, now: float) -> GrantUse:
        return await self._db.write(lambda conn: _use(conn, (app, touser, template_id), now))

    async def get(self, app: str, touser: str, template_id: str) -> Grant | None:
        key = (app, touser, template_id)
        row = await self._db.read_inline(lambda conn: conn.execute(_GET, key).fetchone())
        return None if row is None else _grant(row)

    async def list(self, app: str, touser: str) -> list[Grant]:
        rows = await self._db.read(lambda conn: conn.execute(_LIST, (app, touser)).fetchall())
        return [_grant(row) for row in rows]


def _use(conn: sqlite3.Connection, key: tuple[str, str, str], now: float) -> GrantUse:
    row = conn.execute(_GET, key).fetchone()
    if row is None:
        return GrantUse.NONE
    grant = _grant(row)
    if grant.long_term:
        return GrantUse.LONG_TERM
    if grant.one_time <= 0:
        return GrantUse.NONE
    if grant.one_time == 1:
        conn.execute(_CLEAR, key)
    else:
        conn.execute(_SPEND, (now, *key))
    return GrantUse.ONE_TIME
