"""The suppression list in the SQLite engine's file (table `suppressions` of
sqlite_schema, WITHOUT ROWID: one b-tree cell per entry).

Every write runs through the file's group-commit writer; an import of many entries
is one transaction. A permanent entry (invalid openid) is never overwritten by an add.
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants and placeholders only.

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from wxgate.backends.sqlite_db import SqliteDatabase
from wxgate.backends.suppressions import Suppression, SuppressionPage, SuppressionReason

_PERMANENT = [reason.value for reason in SuppressionReason if reason.permanent]
_ADD = (
    "INSERT INTO suppressions (app, openid, value) VALUES (?, ?, ?)"
    " ON CONFLICT (app, openid) DO UPDATE SET value = excluded.value"
    " WHERE substr(suppressions.value, 1, instr(suppressions.value, '|') - 1)"
    f" NOT IN ({', '.join(repr(value) for value in _PERMANENT)})"
)
_EXISTS = "SELECT 1 FROM suppressions WHERE app = ? AND openid = ?"
_GET = "SELECT value FROM suppressions WHERE app = ? AND openid = ?"
_DELETE = "DELETE FROM suppressions WHERE app = ? AND openid = ?"
_PAGE = (
    "SELECT openid, value FROM suppressions WHERE app = ? AND openid > ? ORDER BY openid LIMIT ?"
)
_FIND_CHUNK = 500  # openids per IN (...) lookup, well under SQLite's variable limit


class SqliteSuppressionStore:
    """The SuppressionStore protocol on the SQLite file's writer and readers."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, app: str, entries: Sequence[Suppression]) -> int:
        rows = [(app, entry.openid, entry.encode()) for entry in entries]

        def run(conn: sqlite3.Connection) -> int:
            added = 0
            for row in rows:
                added += conn.execute(_EXISTS, row[:2]).fetchone() is None
                conn.execute(_ADD, row)
            return added

        return await self._db.write(run) if rows else 0

    async def lift(
        self, app: str, openid: str, reasons: Collection[SuppressionReason] | None = None
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_GET, (app, openid)).fetchone()
            if row is None:
                return False
            if reasons is not None and Suppression.decode(openid, row[0]).reason not in reasons:
                return False
            return conn.execute(_DELETE, (app, openid)).rowcount > 0

        return await self._db.write(run)

    async def find(self, app: str, openids: Sequence[str]) -> dict[str, Suppression]:
        wanted = list(dict.fromkeys(openids))

        def run(conn: sqlite3.Connection) -> dict[str, Suppression]:
            found: dict[str, Suppression] = {}
            for start in range(0, len(wanted), _FIND_CHUNK):
                chunk = wanted[start : start + _FIND_CHUNK]
                marks = ", ".join("?" * len(chunk))
                query = (
                    f"SELECT openid, value FROM suppressions WHERE app = ? AND openid IN ({marks})"
                )
                for openid, value in conn.execute(query, (app, *chunk)):
                    found[openid] = Suppression.decode(openid, value)
            return found

        return await self._db.read_inline(run) if wanted else {}

    async def page(self, app: str, limit: int, cursor: str | None = None) -> SuppressionPage:
        after = cursor or ""
        rows = await self._db.read(
            lambda conn: conn.execute(_PAGE, (app, after, limit + 1)).fetchall()
        )
        items = [Suppression.decode(openid, value) for openid, value in rows[:limit]]
        next_cursor = items[-1].openid if len(rows) > limit else None
        return SuppressionPage(items, next_cursor)
