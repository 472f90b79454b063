"""Access tokens and their fetch locks in the SQLite engine's file.

The `TokenStore` of a SQLite gateway: every statement runs through the file's
one group-commit writer (`SqliteDatabase`), so tokens share the queue's
transactions, write lock and durability; several processes on one file share
one token. A write that reads before it decides (`save`, `try_lock`) runs inside
the writer's `BEGIN IMMEDIATE` group, so two processes cannot both see the lock
free. Tables: `sqlite_schema` (`wx_access_tokens`, `wx_access_token_locks`).
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants only.

from __future__ import annotations

import sqlite3

from wxgate.backends.sqlite_db import SqliteDatabase
from wxgate.clock import Clock, SystemClock
from wxgate.wechat.tokenstore import CachedToken

_FIELDS = ("token", "expires_at", "fetched_at", "fence", "forced_at", "forced_count", "forced_day")
_LOAD = f"SELECT {', '.join(_FIELDS)} FROM wx_access_tokens WHERE app = ?"
_SAVE = (
    f"INSERT INTO wx_access_tokens (app, {', '.join(_FIELDS)})"
    f" VALUES (:app, {', '.join(':' + name for name in _FIELDS)})"
    " ON CONFLICT (app) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _FIELDS)
    + " WHERE wx_access_tokens.fence <= excluded.fence"
)
_INVALIDATE = (
    "UPDATE wx_access_tokens SET expires_at = 0 WHERE app = ? AND token = ? AND expires_at != 0"
)
_LOCK = "SELECT owner, expires_at, fence FROM wx_access_token_locks WHERE app = ?"
_TAKE_LOCK = (
    "INSERT INTO wx_access_token_locks (app, owner, expires_at, fence) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (app) DO UPDATE SET"
    " owner = excluded.owner, expires_at = excluded.expires_at, fence = excluded.fence"
)
_UNLOCK = "UPDATE wx_access_token_locks SET owner = '', expires_at = 0 WHERE app = ? AND owner = ?"


class SqliteTokenStore:
    """Tokens of the processes that share one SQLite file (see the module docstring)."""

    def __init__(self, db: SqliteDatabase, *, clock: Clock | None = None) -> None:
        self._db = db
        self._clock = clock if clock is not None else SystemClock()

    async def load(self, app: str) -> CachedToken | None:
        row = await self._db.read(lambda conn: conn.execute(_LOAD, (app,)).fetchone())
        if row is None:
            return None
        return CachedToken(**dict(zip(_FIELDS, row, strict=True)))

    async def save(self, app: str, token: CachedToken) -> bool:
        params = {"app": app, **{name: getattr(token, name) for name in _FIELDS}}
        return await self._db.write(lambda conn: conn.execute(_SAVE, params).rowcount > 0)

    async def invalidate(self, app: str, token: str) -> bool:
        return await self._db.write(
            lambda conn: conn.execute(_INVALIDATE, (app, token)).rowcount > 0
        )

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        now = self._clock.now()
        return await self._db.write(lambda conn: _try_lock(conn, app, owner, now, now + ttl_s))

    async def unlock(self, app: str, owner: str) -> None:
        await self._db.write(lambda conn: conn.execute(_UNLOCK, (app, owner)).rowcount)

    async def close(self) -> None:
        """Nothing of its own to close: the backend closes the file."""


def _try_lock(
    conn: sqlite3.Connection, app: str, owner: str, now: float, until: float
) -> int | None:
    row = conn.execute(_LOCK, (app,)).fetchone()
    if row is not None and row[1] > now and row[0] != owner:
        return None
    fence = (row[2] if row is not None else 0) + 1
    conn.execute(_TAKE_LOCK, (app, owner, until, fence))
    return fence
