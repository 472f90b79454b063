"""The webhook outbox in the SQLite engine's file: the `webhook_events` table.

Rows are written by sqlite.py in the transaction of the status move; this module
claims, finishes, lists and replays them through the file's group-commit writer
(the rules are webhook_outbox.py's). While an event is claimed its state is
`sending` and `next_attempt_at` is the lease deadline, which doubles as the claim's
token (a later claim of the same row always has a later deadline). A delivered row
is kept as `delivered` until `purge`, so the table shows what was sent; a dead
row's `next_attempt_at` is when it died.
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants only.

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import orjson

from wxgate.backends.base import Status, WebhookEvent
from wxgate.backends.sqlite_db import SqliteDatabase
from wxgate.backends.webhook_outbox import (
    HookBacklog,
    HookClaim,
    HookEntry,
    HookOutcome,
    HookResult,
    HookState,
)

_ROW: Final = re.compile(r"[0-9]{1,18}")
_EVENT = "seq, message_id, app, status, at, errcode, errmsg, msgid"
_UNDELIVERED = "('pending', 'sending')"
# The oldest undelivered event of each message only: a later one waits for it.
_DUE = (
    "SELECT e.seq FROM webhook_events AS e"
    f" WHERE e.state IN {_UNDELIVERED} AND e.next_attempt_at <= :now"
    " AND e.app IN (SELECT value FROM json_each(:apps))"
    " AND NOT EXISTS (SELECT 1 FROM webhook_events AS p INDEXED BY webhook_events_message"
    f" WHERE p.message_id = e.message_id AND p.seq < e.seq AND p.state IN {_UNDELIVERED})"
    " ORDER BY e.next_attempt_at, e.seq LIMIT :limit"
)
_CLAIM = (
    "UPDATE webhook_events SET state = 'sending', next_attempt_at = :deadline"
    f" WHERE seq IN (SELECT value FROM json_each(:seqs)) RETURNING {_EVENT}, attempts"
)
_MESSAGES = (
    "SELECT id, touser, idempotency_key, batch_id, callback_url FROM messages"
    " WHERE id IN (SELECT value FROM json_each(?))"
)
_HELD = " WHERE seq = :seq AND state = 'sending' AND next_attempt_at = :token"
_FINISH: Final = {
    HookOutcome.DELIVERED: "UPDATE webhook_events SET state = 'delivered',"
    " attempts = attempts + 1, delivered_at = :now, last_error = NULL" + _HELD,
    HookOutcome.RETRY: "UPDATE webhook_events SET state = 'pending', attempts = attempts + 1,"
    " next_attempt_at = :next_attempt_at, last_error = :error" + _HELD,
    HookOutcome.DEAD: "UPDATE webhook_events SET state = 'dead', attempts = attempts + 1,"
    " next_attempt_at = :now, last_error = :error" + _HELD,
}
_ENTRIES = (
    f"SELECT {_EVENT}, state, attempts, next_attempt_at, last_error FROM webhook_events"
    " WHERE app = ? AND state IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?"
)
_REPLAY = (
    "UPDATE webhook_events SET state = 'pending', attempts = 0, next_attempt_at = :now,"
    " last_error = NULL WHERE state = 'dead' AND app = :app"
    " AND (:seqs IS NULL OR seq IN (SELECT value FROM json_each(:seqs)))"
)
_BACKLOG = (
    "SELECT app, state = 'dead', count(*), min(at) FROM webhook_events"
    " WHERE state IN ('pending', 'sending', 'dead') AND app IN (SELECT value FROM json_each(?))"
    " GROUP BY app, state = 'dead'"
)
_PURGE = (
    "DELETE FROM webhook_events WHERE app IN (SELECT value FROM json_each(:apps))"
    " AND ((state = 'delivered' AND delivered_at < :older_than)"
    " OR (state = 'dead' AND next_attempt_at < :older_than))"
)


class SqliteWebhookOutbox:
    """The WebhookOutbox protocol on one SQLite file (see the module docstring)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def claim(
        self, apps: Sequence[str], limit: int, lease_s: float, now: float
    ) -> list[HookClaim]:
        if limit <= 0 or not apps:
            return []
        params = {
            "now": now,
            "apps": orjson.dumps(list(apps)).decode(),
            "limit": limit,
            "deadline": now + lease_s,
        }
        return await self._db.write(lambda conn: _claim(conn, params))

    async def finish(self, results: Sequence[HookResult], now: float) -> list[bool]:
        if not results:
            return []
        rows = [(result.outcome, _finish_params(result, now)) for result in results]
        return await self._db.write(
            lambda conn: [conn.execute(_FINISH[outcome], p).rowcount > 0 for outcome, p in rows]
        )

    async def entries(self, app: str, state: HookState, limit: int) -> list[HookEntry]:
        states = [HookState.PENDING, HookState.SENDING] if state is not HookState.DEAD else [state]
        params = (app, orjson.dumps(states).decode(), limit)
        rows = await self._db.read(lambda conn: conn.execute(_ENTRIES, params).fetchall())
        return [
            HookEntry(_event(row[:8]), HookState(row[8]), row[9], row[10], row[11]) for row in rows
        ]

    async def replay(self, app: str, seqs: Sequence[str] | None, now: float) -> int:
        # A seq is a row number: anything else names no event (and must not reach SQLite).
        named = None if seqs is None else orjson.dumps([int(s) for s in seqs if _ROW.fullmatch(s)])
        params = {"now": now, "app": app, "seqs": None if named is None else named.decode()}
        return await self._db.write(lambda conn: conn.execute(_REPLAY, params).rowcount)

    async def backlog(self, apps: Sequence[str]) -> list[HookBacklog]:
        given = orjson.dumps(list(apps)).decode()
        rows = await self._db.read(lambda conn: conn.execute(_BACKLOG, (given,)).fetchall())
        found: dict[tuple[str, bool], tuple[int, float]] = {
            (app, bool(dead)): (count, oldest) for app, dead, count, oldest in rows
        }
        answers = []
        for app in apps:
            pending, oldest = found.get((app, False), (0, None))
            answers.append(HookBacklog(app, pending, found.get((app, True), (0, 0.0))[0], oldest))
        return answers

    async def purge(self, apps: Sequence[str], older_than: float) -> int:
        params = {"older_than": older_than, "apps": orjson.dumps(list(apps)).decode()}
        return await self._db.write(lambda conn: conn.execute(_PURGE, params).rowcount)


def _claim(conn: sqlite3.Connection, params: dict[str, Any]) -> list[HookClaim]:
    seqs = [row[0] for row in conn.execute(_DUE, params).fetchall()]
    if not seqs:
        return []
    rows = conn.execute(_CLAIM, {**params, "seqs": orjson.dumps(seqs).decode()}).fetchall()
    ids = orjson.dumps(sorted({row[1] for row in rows})).decode()
    messages = {row[0]: row[1:] for row in conn.execute(_MESSAGES, (ids,)).fetchall()}
    order = {seq: position for position, seq in enumerate(seqs)}
    rows.sort(key=lambda row: order[row[0]])  # RETURNING comes in no particular order
    token = repr(float(params["deadline"]))
    claims = []
    for row in rows:
        touser, key, batch_id, callback_url = messages.get(row[1], (None, None, None, None))
        claims.append(
            HookClaim(
                _event(row[:8]),
                row[8],
                token,
                params["deadline"],
                touser,
                key,
                batch_id,
                callback_url,
            )
        )
    return claims


def _finish_params(result: HookResult, now: float) -> dict[str, Any]:
    return {
        "seq": int(result.claim.event.seq),
        "token": float(result.claim.token),
        "now": now,
        "next_attempt_at": result.next_attempt_at if result.next_attempt_at is not None else now,
        "error": result.error,
    }


def _event(row: Sequence[Any]) -> WebhookEvent:
    seq, message_id, app, status, at, errcode, errmsg, msgid = row
    return WebhookEvent(str(seq), message_id, app, Status(status), at, errcode, errmsg, msgid)
