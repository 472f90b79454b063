"""The SQLite engine: messages, the queue and worker state in one WAL-mode file.

Statements run through the file's `SqliteDatabase` (sqlite_db.py): writes on its
one group-commit writer, reads on its reader pool. Several processes may share
the file: each call is one transaction under SQLite's write lock, so two
processes never lease one message. The storage rules (what an outcome writes,
what a report does) are base.py's; this module only says them in SQL. Choices the
protocol leaves open, made here:
- while a message is `sending`, `next_attempt_at` is its lease deadline (when it
  becomes due again), so one index serves both the due and the expired;
- `list()` items and leased records carry no events (speed); `get()` has them;
- `take_send_budget` is an in-process bucket: a SQLite gateway is one process
  (several worker processes on one file would each spend the full rate).
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants only;
# every value reaches SQLite as a bound parameter.

from __future__ import annotations

import secrets
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from wxgate.backends.api_keys import ApiKeyStore
from wxgate.backends.audit import AuditLog
from wxgate.backends.base import (
    CANCELLABLE,
    MAX_EVENTS,
    PENDING_REPORT_TTL_S,
    RECORD_FIELDS,
    REPLAYABLE,
    SENT_RESULTS,
    Cancelled,
    DeadLetterFilter,
    Enqueued,
    Event,
    EventKind,
    IdempotencyConflict,
    Lease,
    ListFilter,
    MessageRecord,
    NewBatch,
    NewMessage,
    Page,
    Pause,
    PauseReason,
    Report,
    ReportApplied,
    SettleChange,
    Settlement,
    Status,
    decode_record,
    first_events,
    send_burst,
    settle_change,
)
from wxgate.backends.caps import CapStore
from wxgate.backends.dedupe import DedupeStore
from wxgate.backends.grants import GrantStore
from wxgate.backends.sqlite_api_keys import SqliteApiKeyStore
from wxgate.backends.sqlite_audit import SqliteAuditLog
from wxgate.backends.sqlite_caps import SqliteCapStore
from wxgate.backends.sqlite_db import SqliteDatabase, Synchronous, WriteStats
from wxgate.backends.sqlite_dedupe import SqliteDedupeStore
from wxgate.backends.sqlite_grants import SqliteGrantStore
from wxgate.backends.sqlite_schema import SETTLED_SQL
from wxgate.backends.sqlite_suppressions import SqliteSuppressionStore
from wxgate.backends.sqlite_templates import SqliteTemplateStore
from wxgate.backends.sqlite_tokens import SqliteTokenStore
from wxgate.backends.sqlite_webhooks import SqliteWebhookOutbox
from wxgate.backends.webhook_outbox import WebhookOutbox
from wxgate.clock import Clock, SystemClock
from wxgate.tokenbucket import TokenBucket
from wxgate.wechat.tokenstore import TokenStore

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER
PURGE_CHUNK: Final = 2000  # rows per purge transaction, so intake never stalls long
_EXPIRY_SWEEP: Final = 16  # expired nonces / reports dropped per write that adds one

# -- SQL -------------------------------------------------------------------------------

# The record's columns, in base.RECORD_FIELDS order (the order decode_record reads).
_COLUMNS = ", ".join(RECORD_FIELDS)


def _append_event(event: str) -> str:
    """SQL for `events` with `event` (a json_object) appended, the oldest dropped past MAX."""
    return (
        f"json_insert(CASE WHEN json_array_length(events) >= {MAX_EVENTS} "
        f"THEN json_remove(events, '$[0]') ELSE events END, '$[#]', {event})"
    )


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, app, touser, template_id, payload, status, next_attempt_at,"
    " idempotency_key, trace_id, batch_id, batch_position, created_at, updated_at, events,"
    " request_digest, kind, urgent, send_at, last_errcode, last_errmsg, notify, callback_url)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_KNOWN_KEYS = (
    "SELECT m.app, m.idempotency_key, m.id, m.status, m.request_digest FROM json_each(?) AS k"
    " JOIN messages AS m ON m.app = json_extract(k.value, '$[0]')"
    " AND m.idempotency_key = json_extract(k.value, '$[1]')"
)
_KNOWN_POSITIONS = (
    "SELECT m.batch_id, m.batch_position, m.id, m.status, m.request_digest"
    " FROM json_each(?) AS k JOIN messages AS m ON m.batch_id = json_extract(k.value, '$[0]')"
    " AND m.batch_position = json_extract(k.value, '$[1]')"
)
_UPSERT_BATCH = (
    "INSERT INTO batches (id, app, created_at, size, digest) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET size = size + excluded.size,"
    " digest = coalesce(batches.digest, excluded.digest)"
)
# Each half is limited before the merge, so a deep backlog is never sorted whole.
_DUE = (
    "SELECT rid, due FROM (SELECT rowid AS rid, next_attempt_at AS due FROM messages"
    " WHERE status = 'queued' AND next_attempt_at <= :now"
    " AND app NOT IN (SELECT value FROM json_each(:excluded))"
    " ORDER BY next_attempt_at LIMIT :limit)"
    " UNION ALL"
    " SELECT rid, due FROM (SELECT rowid AS rid, next_attempt_at AS due FROM messages"
    " WHERE status = 'scheduled' AND next_attempt_at <= :now"
    " AND app NOT IN (SELECT value FROM json_each(:excluded))"
    " ORDER BY next_attempt_at LIMIT :limit)"
    " UNION ALL"
    " SELECT rid, due FROM (SELECT rowid AS rid, next_attempt_at AS due FROM messages"
    " WHERE status = 'sending' AND next_attempt_at <= :now"
    " AND app NOT IN (SELECT value FROM json_each(:excluded))"
    " ORDER BY next_attempt_at LIMIT :limit)"
    " ORDER BY due, rid LIMIT :limit"
)
_LEASE = (
    "UPDATE messages SET status = 'sending',"
    " attempts = attempts + (status = 'sending'),"
    " events = CASE WHEN status = 'sending' THEN "
    + _append_event(
        f"json_object('at', :now, 'kind', '{EventKind.LEASE_EXPIRED}',"
        " 'note', 'lease of ' || coalesce(lease_owner, '?') || ' expired', 'errcode', NULL)"
    )
    + " ELSE events END,"
    " next_attempt_at = :deadline, lease_until = :deadline, lease_owner = :owner,"
    " lease_token = :token, updated_at = :now"
    " WHERE rowid IN (SELECT value FROM json_each(:rowids))"
    f" RETURNING rowid, {_COLUMNS}"
)
_SETTLE = (
    "UPDATE messages SET status = :status, attempts = attempts + :counted,"
    " next_attempt_at = CASE WHEN :while_paused AND NOT EXISTS (SELECT 1 FROM pauses"
    " WHERE pauses.app = messages.app AND (pauses.until IS NULL OR pauses.until > :now))"
    " THEN :now ELSE coalesce(:next_attempt_at, next_attempt_at) END,"
    " msgid = coalesce(:msgid, msgid), sent_at = coalesce(:sent_at, sent_at),"
    " last_errcode = CASE WHEN :answered THEN :errcode ELSE last_errcode END,"
    " last_errmsg = CASE WHEN :answered THEN :errmsg ELSE last_errmsg END,"
    " last_category = CASE WHEN :answered THEN :category ELSE last_category END,"
    " lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = :now,"
    " events = "
    + _append_event("json(:event)")
    + " WHERE id = :id AND status = 'sending' AND lease_token = :token RETURNING app, notify"
)
# The outbox entry of a move into a settled status, taken from the row just written.
_NOTIFY = (
    "INSERT INTO webhook_events (message_id, app, status, at, errcode, errmsg, msgid,"
    " next_attempt_at) SELECT id, app, status, :now, last_errcode, last_errmsg, msgid, :now"
    " FROM messages WHERE id = :id AND notify = 1 AND status IN " + SETTLED_SQL
)
_REPORT_SET = (
    "UPDATE messages SET status = :status, report_status = :report,"
    " delivered_at = :received_at, updated_at = :now, events = "
    + _append_event(
        f"json_object('at', :now, 'kind', '{EventKind.REPORT}', 'note', :report, 'errcode', NULL)"
    )
)
_REPORT = _REPORT_SET + " WHERE id = :id AND status = 'sent'"
# A subscribe sent event also settles a message whose send left no answer (unknown).
_SENT_RESULT = _REPORT_SET + " WHERE id = :id AND status IN ('sent', 'unknown')"
_KEEP_SENT_RESULT = (
    "INSERT INTO pending_sent_results (app, touser, template_id, status, text, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_TAKE_SENT_RESULT = (
    "DELETE FROM pending_sent_results WHERE rowid = (SELECT rowid FROM pending_sent_results"
    " WHERE app = ?1 AND touser = ?2 AND template_id = ?3 AND expires_at > ?4"
    " ORDER BY rowid LIMIT 1) RETURNING status, text"
)
_KEEP_REPORT = (
    "INSERT INTO pending_reports (app, msgid, report_status, target, received_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app, msgid) DO UPDATE SET"
    " report_status = excluded.report_status, target = excluded.target,"
    " received_at = excluded.received_at,"
    " expires_at = excluded.expires_at WHERE pending_reports.expires_at <= excluded.received_at"
)
_ANY_PENDING_REPORT = "SELECT 1 FROM pending_reports LIMIT 1"
_TAKE_PENDING_REPORT = (
    "DELETE FROM pending_reports WHERE app = ? AND msgid = ? AND expires_at > ?"
    " RETURNING report_status, target, received_at"
)
_SWEEP_REPORTS = (
    "DELETE FROM pending_reports WHERE rowid IN"
    f" (SELECT rowid FROM pending_reports WHERE expires_at <= ? LIMIT {_EXPIRY_SWEEP})"
)
_REMEMBER_NONCE = (
    "INSERT INTO nonces (app, nonce, expires_at) VALUES (:app, :nonce, :expires_at)"
    " ON CONFLICT (app, nonce) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE nonces.expires_at <= :now"
)
_SWEEP_NONCES = (
    "DELETE FROM nonces WHERE (app, nonce) IN"
    f" (SELECT app, nonce FROM nonces WHERE expires_at <= ? LIMIT {_EXPIRY_SWEEP})"
)
_REPLAY_SET = (
    "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = :now,"
    " lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = :now,"
    " events = "
    + _append_event(
        f"json_object('at', :now, 'kind', '{EventKind.REPLAYED}', 'note', '', 'errcode', NULL)"
    )
)
_REPLAY = (
    _REPLAY_SET
    + " WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN "
    + "("
    + ", ".join(f"'{status}'" for status in sorted(REPLAYABLE))
    + ")"
)
_CANCEL = (
    "UPDATE messages SET status = 'cancelled', updated_at = :now, events = "
    + _append_event(
        f"json_object('at', :now, 'kind', '{EventKind.CANCELLED}', 'note', '', 'errcode', NULL)"
    )
    + " WHERE id = :id AND status IN ("
    + ", ".join(f"'{status}'" for status in sorted(CANCELLABLE))
    + ") RETURNING status"
)
_REPLAY_DEAD = (
    _REPLAY_SET + " WHERE status = 'dead' AND (:app IS NULL OR app = :app)"
    " AND (:errcode IS NULL OR last_errcode = :errcode)"
    " AND (:since IS NULL OR updated_at >= :since) AND (:until IS NULL OR updated_at <= :until)"
)
# Without statistics the planner would rather sort every settled row by updated_at.
_PURGE_MESSAGES = (
    "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages INDEXED BY messages_settled"
    f" WHERE status IN {SETTLED_SQL} AND updated_at < ? ORDER BY updated_at LIMIT {PURGE_CHUNK})"
)
_PURGE_LEFTOVERS = (
    "DELETE FROM nonces WHERE expires_at < :older_than",
    "DELETE FROM pending_reports WHERE expires_at < :older_than",
    "DELETE FROM batches WHERE created_at < :older_than"
    " AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.batch_id = batches.id)",
)
_PAUSE = (
    "INSERT INTO pauses (app, reason, since, until, errcode, note) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (app) DO UPDATE SET reason = excluded.reason, since = excluded.since,"
    " until = excluded.until, errcode = excluded.errcode, note = excluded.note"
)
_RECENT_SENDS = (
    f"SELECT {_COLUMNS} FROM messages INDEXED BY messages_touser WHERE touser = ? AND app = ?"
    " AND status IN ('sent', 'unknown') AND updated_at >= ? ORDER BY id DESC LIMIT 100"
)
_LIST_FILTERS: Final = ("status", "app", "touser", "batch_id")
# The oldest message of an app in one status: the listing index walked from its oldest id.
_OLDEST = (
    "SELECT created_at FROM messages INDEXED BY messages_listing"
    " WHERE status = ? AND app = ? ORDER BY id LIMIT 1"
)


# -- the engine ------------------------------------------------------------------------


class SqliteBackend:
    """The embedded engine: one file, WAL, group commit (see the module docstring)."""

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        group_commit_ms: float = 1.0,
        clock: Clock | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._db = SqliteDatabase(
            path,
            synchronous=synchronous,
            group_commit_ms=group_commit_ms,
            clock=self._clock,
            busy_timeout_s=busy_timeout_s,
        )
        self._write = self._db.write
        self._read = self._db.read
        self._buckets: dict[str, TokenBucket] = {}
        self._tokens = SqliteTokenStore(self._db, clock=self._clock)
        self._templates = SqliteTemplateStore(self._db)
        self._suppressions = SqliteSuppressionStore(self._db)
        self._grants = SqliteGrantStore(self._db)
        self._caps = SqliteCapStore(self._db)
        self._dedupe = SqliteDedupeStore(self._db)
        self._api_keys = SqliteApiKeyStore(self._db)
        self._audit = SqliteAuditLog(self._db)

        self._webhooks = SqliteWebhookOutbox(self._db)

    @property
    def path(self) -> str:
        return self._db.path

    @property
    def database(self) -> SqliteDatabase:
        """The file's writer and readers, for the engine's other stores."""
        return self._db

    @property
    def stats(self) -> WriteStats:
        """Counters of the writer (commits, commands, largest group) of this process."""
        return self._db.stats

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self._db.start()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> bool:
        if not self._db.is_open:
            return False
        try:
            return await self._read(lambda conn: conn.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error:
            return False

    async def writable(self) -> bool:
        return await self._db.writable()

    # -- intake ------------------------------------------------------------------------

    async def enqueue(
        self, messages: Sequence[NewMessage], now: float, batch: NewBatch | None = None
    ) -> list[Enqueued]:
        if not messages:
            return []
        given = tuple(messages)
        return await self._write(lambda conn: _insert_messages(conn, given, now, batch))

    # -- the queue ---------------------------------------------------------------------

    async def lease_batch(
        self,
        worker_id: str,
        limit: int,
        lease_s: float,
        now: float,
        exclude_apps: frozenset[str] = frozenset(),
    ) -> list[Lease]:
        if limit <= 0:
            return []
        params = {
            "now": now,
            "limit": limit,
            "excluded": orjson.dumps(sorted(exclude_apps)).decode(),
            "deadline": now + lease_s,
            "owner": worker_id,
            "token": secrets.token_hex(8),  # one per call: any re-lease gets another
        }
        return await self._write(lambda conn: _lease(conn, params))

    async def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        if not settlements:
            return []
        rows = [_settle_row(settle_change(settlement, now), now) for settlement in settlements]
        return await self._write(lambda conn: _settle_all(conn, rows, now))

    async def cancel(self, ids: Sequence[str], now: float) -> list[Cancelled]:
        if not ids:
            return []
        given = list(ids)
        return await self._write(lambda conn: _cancel(conn, given, now))

    async def replay(self, ids: Sequence[str], now: float) -> int:
        if not ids:
            return 0
        params = {"now": now, "ids": orjson.dumps(list(ids)).decode()}
        return await self._write(lambda conn: conn.execute(_REPLAY, params).rowcount)

    async def replay_dead(self, flt: DeadLetterFilter, now: float) -> int:
        params = {
            "now": now,
            "app": flt.app,
            "errcode": flt.errcode,
            "since": flt.since,
            "until": flt.until,
        }
        return await self._write(lambda conn: conn.execute(_REPLAY_DEAD, params).rowcount)

    # -- delivery reports --------------------------------------------------------------

    async def apply_report(self, report: Report, now: float) -> ReportApplied:
        if not _INT64_MIN <= report.msgid <= _INT64_MAX:
            # No stored msgid lies outside SQLite's integers, so none can match (and the
            # driver would refuse the number): a report for a message we do not have.
            return ReportApplied(None, None, False)
        return await self._write(lambda conn: _apply_report(conn, report, now))

    async def remember_nonce(self, app: str, nonce: str, ttl_s: float, now: float) -> bool:
        params = {"app": app, "nonce": nonce, "expires_at": now + ttl_s, "now": now}

        def run(conn: sqlite3.Connection) -> bool:
            fresh = conn.execute(_REMEMBER_NONCE, params).rowcount == 1
            conn.execute(_SWEEP_NONCES, (now,))
            return fresh

        return await self._write(run)

    # -- shared worker state -----------------------------------------------------------

    async def pause_app(self, pause: Pause) -> None:
        row = (pause.app, pause.reason, pause.since, pause.until, pause.errcode, pause.note)
        await self._write(lambda conn: conn.execute(_PAUSE, row).rowcount)

    async def resume_app(self, app: str, now: float) -> bool:
        return await self._write(lambda conn: _resume(conn, app, now))

    async def pauses(self, now: float) -> dict[str, Pause]:
        sql = (
            "SELECT app, reason, since, until, errcode, note FROM pauses"
            " WHERE until IS NULL OR until > ?"
        )
        rows = await self._read(lambda conn: conn.execute(sql, (now,)).fetchall())
        return {app: Pause(app, PauseReason(reason), *rest) for app, reason, *rest in rows}

    async def take_send_budget(self, app: str, rate_per_s: float, want: int, now: float) -> int:
        if want <= 0 or rate_per_s <= 0:
            return 0
        capacity = send_burst(rate_per_s)
        bucket = self._buckets.get(app)
        if bucket is None:
            bucket = self._buckets[app] = TokenBucket(rate_per_s, capacity)
        elif bucket.rate != rate_per_s:
            bucket.reconfigure(rate_per_s, capacity)
        return bucket.take(want, now)

    def token_store(self) -> TokenStore:
        return self._tokens

    def template_store(self) -> SqliteTemplateStore:
        return self._templates

    def suppression_store(self) -> SqliteSuppressionStore:
        return self._suppressions

    def grant_store(self) -> GrantStore:
        return self._grants

    async def keep_sent_result(
        self,
        app: str,
        touser: str,
        template_id: str,
        result: tuple[Status, str],
        now: float,
        ttl_s: float,
    ) -> None:
        row = (app, touser, template_id, result[0].value, result[1], now + ttl_s)
        await self._write(lambda conn: conn.execute(_KEEP_SENT_RESULT, row).rowcount)

    async def take_sent_result(
        self, app: str, touser: str, template_id: str, now: float
    ) -> tuple[Status, str] | None:
        key = (app, touser, template_id, now)
        row = await self._write(lambda conn: conn.execute(_TAKE_SENT_RESULT, key).fetchone())
        return None if row is None else (Status(row[0]), row[1])

    async def apply_sent_result(
        self, message_id: str, status: Status, text: str, now: float
    ) -> ReportApplied:
        if status not in SENT_RESULTS:
            raise ValueError(f"a sent event settles a message delivered or failed, not {status}")
        return await self._write(
            lambda conn: _apply_sent_result(conn, message_id, status, text, now)
        )

    def cap_store(self) -> CapStore:
        return self._caps

    def dedupe_store(self) -> DedupeStore:
        return self._dedupe

    def api_key_store(self) -> ApiKeyStore:
        return self._api_keys

    def audit_log(self) -> AuditLog:
        return self._audit

    def webhook_outbox(self) -> WebhookOutbox:
        return self._webhooks

    async def oldest_queued(self, apps: Sequence[str]) -> dict[str, float]:
        given = list(apps)
        return await self._read(lambda conn: _oldest_queued(conn, given))

    async def purge(self, older_than: float) -> int:
        # In chunks, each its own transaction, so intake waits for one chunk at most.
        total = 0
        while True:
            deleted = await self._write(
                lambda conn: conn.execute(_PURGE_MESSAGES, (older_than,)).rowcount
            )
            total += deleted
            if deleted < PURGE_CHUNK:
                break
        await self._write(lambda conn: _purge_leftovers(conn, older_than))
        return total

    # -- reads -------------------------------------------------------------------------

    async def get(self, message_id: str) -> MessageRecord | None:
        sql = f"SELECT {_COLUMNS}, events FROM messages WHERE id = ?"
        row = await self._read(lambda conn: conn.execute(sql, (message_id,)).fetchone())
        return None if row is None else _record(row, events=row[len(RECORD_FIELDS)])

    async def recent_sends(self, app: str, touser: str, since: float) -> list[MessageRecord]:
        params = (touser, app, since)
        rows = await self._read(lambda conn: conn.execute(_RECENT_SENDS, params).fetchall())
        return [_record(row) for row in rows]

    async def batch_counts(self, batch_id: str) -> dict[Status, int] | None:
        return await self._read(lambda conn: _batch_counts(conn, batch_id))

    async def oldest(self, status: Status) -> MessageRecord | None:
        # messages_listing (status, id) answers this with one index seek.
        sql = f"SELECT {_COLUMNS} FROM messages WHERE status = ? ORDER BY id LIMIT 1"
        row = await self._read(lambda conn: conn.execute(sql, (str(status),)).fetchone())
        return None if row is None else _record(row)

    async def counts(self, app: str | None = None) -> dict[Status, int]:
        if app is None:
            sql, params = "SELECT status, count(*) FROM messages GROUP BY status", ()
        else:
            sql = "SELECT status, count(*) FROM messages WHERE app = ? GROUP BY status"
            params = (app,)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return _per_status(rows)

    async def list(self, flt: ListFilter, limit: int, cursor: str | None = None) -> Page:
        """Newest first; items carry no events (get() has them)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        given = [(name, getattr(flt, name)) for name in _LIST_FILTERS]
        clauses = [f"{name} = ?" for name, value in given if value is not None]
        params: list[Any] = [str(value) for _, value in given if value is not None]
        if cursor is not None:
            clauses.append("id < ?")
            params.append(cursor)
        where = " AND ".join(clauses) or "1"
        sql = f"SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY id DESC LIMIT ?"
        params.append(limit + 1)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        items = [_record(row) for row in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)


# -- commands (run on the writer's connection, inside its transaction) -----------------


@dataclass(frozen=True, slots=True)
class _First:
    """The stored message that owns a deduplication key, and the digest it was sent with."""

    id: str
    status: Status
    digest: str | None


_Dedupe = tuple[str, str, str | int]  # ("key", app, key) or ("pos", batch_id, position)


def _dedupe_of(m: NewMessage, keyed_batch: bool) -> _Dedupe | None:
    if m.idempotency_key is not None:
        return ("key", m.app, m.idempotency_key)
    if keyed_batch and m.batch_id is not None and m.batch_position is not None:
        return ("pos", m.batch_id, m.batch_position)
    return None


def _insert_messages(
    conn: sqlite3.Connection,
    messages: Sequence[NewMessage],
    now: float,
    batch: NewBatch | None,
) -> list[Enqueued]:
    """Check every key first, then write: a conflict raises before anything is written."""
    batch_known = batch is not None and _check_batch(conn, batch)
    batch_key = batch.key if batch is not None else ""
    known = _known(conn, messages, batch_known)
    answers: list[Enqueued] = []
    rows: list[tuple[Any, ...]] = []
    created: Counter[str] = Counter()
    for m in messages:
        dedupe = _dedupe_of(m, batch is not None)
        if dedupe is not None:
            first = known.get(dedupe)
            if first is not None:
                if first.digest and m.digest and first.digest != m.digest:
                    raise IdempotencyConflict(m.idempotency_key or batch_key)
                answers.append(Enqueued(first.id, first.status, False))
                continue
            known[dedupe] = _First(m.id, Status.QUEUED, m.digest)
        rows.append(_insert_row(m, now))
        answers.append(Enqueued(m.id, m.status, True))
        if m.batch_id is not None:
            created[m.batch_id] += 1
    _record_batches(conn, messages, batch, created, now)
    conn.executemany(_INSERT_MESSAGE, rows)
    decided = [m for m in messages if m.verdict is not None and m.notify]
    for m in decided:  # stored settled at once: the caller hears of it like any other
        conn.execute(_NOTIFY, {"id": m.id, "now": now})
    return answers


def _insert_row(m: NewMessage, now: float) -> tuple[Any, ...]:
    """_INSERT_MESSAGE's values for one new message (queued, scheduled, or decided)."""
    events = b"[" + b",".join(event.to_json() for event in first_events(m, now)) + b"]"
    verdict = m.verdict
    return (
        m.id, m.app, m.touser, m.template_id, orjson.dumps(m.payload).decode(),
        m.status.value, m.send_at if m.send_at is not None else now, m.idempotency_key,
        m.trace_id, m.batch_id, m.batch_position, now, now, events.decode(), m.digest or None,
        m.kind.value, 1 if m.urgent else 0, m.send_at,
        verdict.errcode if verdict else None, verdict.errmsg if verdict else None,
        1 if m.notify else 0, m.callback_url,
    )  # fmt: skip


def _check_batch(conn: sqlite3.Connection, batch: NewBatch) -> bool:
    """True if the batch is stored already (with the same digest; another raises)."""
    row = conn.execute("SELECT digest FROM batches WHERE id = ?", (batch.id,)).fetchone()
    if row is None:
        return False
    if row[0] and batch.digest and row[0] != batch.digest:
        raise IdempotencyConflict(batch.key)
    return True


def _known(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], batch_known: bool
) -> dict[_Dedupe, _First]:
    """The stored messages that already own a key or a batch position of this call."""
    found: dict[_Dedupe, _First] = {}
    keys = [(m.app, m.idempotency_key) for m in messages if m.idempotency_key is not None]
    if keys:
        rows = conn.execute(_KNOWN_KEYS, (orjson.dumps(keys).decode(),)).fetchall()
        for app, key, mid, status, digest in rows:
            found[("key", app, key)] = _First(mid, Status(status), digest)
    if batch_known:  # a new batch has no members yet: nothing to look up
        positions = [
            (m.batch_id, m.batch_position)
            for m in messages
            if m.idempotency_key is None and m.batch_position is not None
        ]
        rows = conn.execute(_KNOWN_POSITIONS, (orjson.dumps(positions).decode(),)).fetchall()
        for batch_id, position, mid, status, digest in rows:
            found[("pos", batch_id, position)] = _First(mid, Status(status), digest)
    return found


def _record_batches(
    conn: sqlite3.Connection,
    messages: Sequence[NewMessage],
    batch: NewBatch | None,
    created: Counter[str],
    now: float,
) -> None:
    # Every batch named gets a row, even one whose messages all repeated known keys.
    named = {m.batch_id: m.app for m in messages if m.batch_id is not None}
    if batch is not None:
        named.setdefault(batch.id, batch.app)
    digest = {batch.id: batch.digest or None} if batch is not None else {}
    if named:
        rows = [(bid, app, now, created[bid], digest.get(bid)) for bid, app in named.items()]
        conn.executemany(_UPSERT_BATCH, rows)


def _lease(conn: sqlite3.Connection, params: dict[str, Any]) -> list[Lease]:
    due = conn.execute(_DUE, params).fetchall()
    if not due:
        return []
    order = {rowid: position for position, (rowid, _) in enumerate(due)}
    rowids = orjson.dumps(list(order)).decode()
    rows = conn.execute(_LEASE, {**params, "rowids": rowids}).fetchall()
    # RETURNING comes in no particular order: put it back in due order.
    rows.sort(key=lambda row: order[row[0]])
    return [Lease(_record(row[1:]), params["token"], params["deadline"]) for row in rows]


def _settle_row(change: SettleChange, now: float) -> dict[str, Any]:
    """A SettleChange as _SETTLE's parameters."""
    return {
        "id": change.id,
        "token": change.token,
        "status": change.status.value,
        "counted": change.counted,
        "next_attempt_at": change.next_attempt_at,
        "msgid": change.msgid,
        "sent_at": change.sent_at,
        "answered": change.answered,
        "errcode": change.errcode,
        "errmsg": change.errmsg,
        "category": change.category,
        "event": change.event.to_json().decode(),
        "while_paused": change.while_paused,
        "now": now,
    }


def _settle_all(conn: sqlite3.Connection, rows: list[dict[str, Any]], now: float) -> list[bool]:
    # Reports rarely beat their settle, so the table is nearly always empty: one look
    # for the group instead of one DELETE per sent message (~8 us each, measured).
    # Exact: this runs in the writer's transaction, which holds the write lock.
    reports_waiting = conn.execute(_ANY_PENDING_REPORT).fetchone() is not None
    return [_settle_one(conn, row, now, reports_waiting) for row in rows]


def _settle_one(
    conn: sqlite3.Connection, params: dict[str, Any], now: float, reports_waiting: bool
) -> bool:
    row = conn.execute(_SETTLE, params).fetchone()
    if row is None:
        return False
    app, notify = row
    if notify:
        conn.execute(_NOTIFY, {"id": params["id"], "now": now})
    if reports_waiting and params["msgid"] is not None:
        # The report may have beaten this settle; it waits in pending_reports.
        pending = conn.execute(_TAKE_PENDING_REPORT, (app, params["msgid"], now)).fetchone()
        if pending is not None:
            text, target, received_at = pending
            _record_report(conn, params["id"], Status(target), text, received_at, now)
    return True


def _record_report(
    conn: sqlite3.Connection,
    message_id: str,
    target: Status,
    text: str,
    received_at: float,
    now: float,
    sql: str = _REPORT,
) -> Status | None:
    """Move a sent message to the report's status; that status, or None if it was not sent."""
    params = {
        "id": message_id,
        "status": target.value,
        "report": text,
        "received_at": received_at,
        "now": now,
    }
    if not conn.execute(sql, params).rowcount:
        return None
    conn.execute(_NOTIFY, {"id": message_id, "now": now})
    return target


def _apply_report(conn: sqlite3.Connection, report: Report, now: float) -> ReportApplied:
    row = conn.execute(
        "SELECT id, status FROM messages WHERE app = ? AND msgid = ? LIMIT 1",
        (report.app, report.msgid),
    ).fetchone()
    if row is None:
        kept = (report.app, report.msgid, report.text, report.status.value, now)
        conn.execute(_KEEP_REPORT, (*kept, now + PENDING_REPORT_TTL_S))
        conn.execute(_SWEEP_REPORTS, (now,))
        return ReportApplied(None, None, False)
    message_id, status = row
    applied = _record_report(conn, message_id, report.status, report.text, now, now)
    if applied is None:  # a repeated report, or one for a message already past `sent`
        return ReportApplied(message_id, Status(status), False)
    return ReportApplied(message_id, applied, True)


def _apply_sent_result(
    conn: sqlite3.Connection, message_id: str, status: Status, text: str, now: float
) -> ReportApplied:
    applied = _record_report(conn, message_id, status, text, now, now, _SENT_RESULT)
    if applied is not None:
        return ReportApplied(message_id, applied, True)
    row = conn.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
    return ReportApplied(None if row is None else message_id, row and Status(row[0]), False)


def _cancel(conn: sqlite3.Connection, ids: list[str], now: float) -> list[Cancelled]:
    answers = []
    for message_id in ids:
        if conn.execute(_CANCEL, {"id": message_id, "now": now}).fetchone() is not None:
            conn.execute(_NOTIFY, {"id": message_id, "now": now})
            answers.append(Cancelled(message_id, Status.CANCELLED, True))
            continue
        row = conn.execute("SELECT status FROM messages WHERE id = ?", (message_id,)).fetchone()
        answers.append(Cancelled(message_id, None if row is None else Status(row[0]), False))
    return answers


def _purge_leftovers(conn: sqlite3.Connection, older_than: float) -> None:
    for sql in _PURGE_LEFTOVERS:
        conn.execute(sql, {"older_than": older_than})


# -- reads -----------------------------------------------------------------------------


def _batch_counts(conn: sqlite3.Connection, batch_id: str) -> dict[Status, int] | None:
    if conn.execute("SELECT 1 FROM batches WHERE id = ?", (batch_id,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT status, count(*) FROM messages WHERE batch_id = ? GROUP BY status", (batch_id,)
    ).fetchall()
    return _per_status(rows)


def _oldest_queued(conn: sqlite3.Connection, apps: list[str]) -> dict[str, float]:
    oldest: dict[str, float] = {}
    for app in apps:
        found = [conn.execute(_OLDEST, (status, app)).fetchone() for status in _WAITING]
        times = [row[0] for row in found if row is not None]
        if times:
            oldest[app] = min(times)
    return oldest


_WAITING: Final = ("queued", "sending")  # what oldest_queued looks at


def _per_status(rows: Sequence[tuple[str, int]]) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def _record(row: Sequence[Any], events: str | None = None) -> MessageRecord:
    if events is None:
        return decode_record(row[: len(RECORD_FIELDS)])
    return decode_record(
        row[: len(RECORD_FIELDS)], [Event.from_json(e) for e in orjson.loads(events)]
    )


_HELD_BACK = (
    "UPDATE messages SET next_attempt_at = :now, updated_at = :now"
    " WHERE status = 'queued' AND next_attempt_at >= :until AND app = :app"
)


def _resume(conn: sqlite3.Connection, app: str, now: float) -> bool:
    """Delete the app's pause; what a timed pause held back becomes due now."""
    row = conn.execute("SELECT until FROM pauses WHERE app = ?", (app,)).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM pauses WHERE app = ?", (app,))
    if row[0] is not None:
        conn.execute(_HELD_BACK, {"now": now, "until": row[0], "app": app})
    return True
