"""API keys (api_keys.py) in the SQLite engine's file. Table: `sqlite_schema` (`api_keys`)."""

# ruff: noqa: S608 -- statements are assembled from this module's constants only.

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from wxgate.backends.api_keys import StoredKey
from wxgate.backends.sqlite_db import SqliteDatabase

_COLUMNS = "id, name, digest, apps, scopes, created_at, last_used_at, revoked_at"
_ADD = f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_FIND = f"SELECT {_COLUMNS} FROM api_keys WHERE digest = ? AND revoked_at IS NULL"
_ALL = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id"
_TOUCH = "UPDATE api_keys SET last_used_at = ? WHERE id = ?"
_REVOKE = (
    f"UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING {_COLUMNS}"
)


def _key(row: Sequence[Any]) -> StoredKey:
    key_id, name, digest, apps, scopes, created_at, last_used_at, revoked_at = row
    return StoredKey(
        key_id,
        name,
        digest,
        tuple(orjson.loads(apps)),
        tuple(orjson.loads(scopes)),
        created_at,
        last_used_at,
        revoked_at,
    )


class SqliteApiKeyStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, key: StoredKey) -> None:
        row = (
            key.id,
            key.name,
            key.digest,
            orjson.dumps(list(key.apps)).decode(),
            orjson.dumps(list(key.scopes)).decode(),
            key.created_at,
            key.last_used_at,
            key.revoked_at,
        )
        await self._db.write(lambda conn: conn.execute(_ADD, row))

    async def find(self, digest: str) -> StoredKey | None:
        row = await self._db.read(lambda conn: conn.execute(_FIND, (digest,)).fetchone())
        return None if row is None else _key(row)

    async def touch(self, key_id: str, now: float) -> None:
        await self._db.write(lambda conn: conn.execute(_TOUCH, (now, key_id)))

    async def keys(self) -> list[StoredKey]:
        rows = await self._db.read(lambda conn: conn.execute(_ALL).fetchall())
        return [_key(row) for row in rows]

    async def revoke(self, key_id: str, now: float) -> StoredKey | None:
        def revoke(conn: sqlite3.Connection) -> StoredKey | None:
            row = conn.execute(_REVOKE, (now, key_id)).fetchone()
            return None if row is None else _key(row)

        return await self._db.write(revoke)
