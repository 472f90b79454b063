"""The template registry in the SQLite engine's file (tables `wx_templates`,
`wx_template_syncs` of sqlite_schema).

Every statement runs through the file's group-commit writer, so a replace (delete
the kind's rows, insert the new ones, record the sync) is one transaction and every
process on the file reads the same templates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from wxgate.backends.sqlite_db import SqliteDatabase
from wxgate.backends.templates import RegisteredTemplate, TemplateSyncState
from wxgate.wechat.kinds import MessageKind

_DELETE_KIND = "DELETE FROM wx_templates WHERE app = ? AND kind = ?"
_INSERT = (
    "INSERT INTO wx_templates (app, template_id, kind, body) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (app, template_id) DO UPDATE SET kind = excluded.kind, body = excluded.body"
)
_SAVE_STATE = (
    "INSERT INTO wx_template_syncs (app, kind, state) VALUES (?, ?, ?)"
    " ON CONFLICT (app, kind) DO UPDATE SET state = excluded.state"
)
_STATE = "SELECT state FROM wx_template_syncs WHERE app = ? AND kind = ?"
_STATES = "SELECT state FROM wx_template_syncs WHERE app = ?"
_TEMPLATES = "SELECT body FROM wx_templates WHERE app = ? ORDER BY template_id"


class SqliteTemplateStore:
    """The TemplateStore protocol on the SQLite file's writer and readers."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def replace(
        self, app: str, kind: MessageKind, templates: Sequence[RegisteredTemplate], now: float
    ) -> None:
        rows = [(app, t.template_id, t.kind.value, t.to_json().decode()) for t in templates]
        state = TemplateSyncState(kind, now, now, "", len(rows)).to_json().decode()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(_DELETE_KIND, (app, kind.value))
            conn.executemany(_INSERT, rows)
            conn.execute(_SAVE_STATE, (app, kind.value, state))

        await self._db.write(run)

    async def sync_failed(self, app: str, kind: MessageKind, error: str, now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute(_STATE, (app, kind.value)).fetchone()
            before = TemplateSyncState.from_json(row[0]) if row is not None else None
            state = TemplateSyncState(
                kind,
                now,
                before.ok_at if before is not None else None,
                error or "failed",
                before.count if before is not None else 0,
            )
            conn.execute(_SAVE_STATE, (app, kind.value, state.to_json().decode()))

        await self._db.write(run)

    async def templates(self, app: str) -> list[RegisteredTemplate]:
        rows = await self._db.read(lambda conn: conn.execute(_TEMPLATES, (app,)).fetchall())
        return [RegisteredTemplate.from_json(row[0]) for row in rows]

    async def sync_states(self, app: str) -> dict[MessageKind, TemplateSyncState]:
        rows = await self._db.read(lambda conn: conn.execute(_STATES, (app,)).fetchall())
        states = [TemplateSyncState.from_json(row[0]) for row in rows]
        return {state.kind: state for state in states}
