"""The SQLite engine: messages, the queue and worker state in one WAL-mode file.

Every write is a command for ONE writer thread that owns one connection and
commits in groups: it takes every command waiting (waiting at most
`group_commit_ms` for more), runs them in one `BEGIN IMMEDIATE` transaction,
COMMITs once, and only then answers each caller. Should one command fail, the
group runs again from the start, each command in its own SAVEPOINT, so the bad
one fails alone. Durability so costs one fsync per group, not per message.
Reads run on read-only connections in a small thread pool beside the writer.

Several processes may share the file: each call is one transaction under
SQLite's write lock, so two processes never lease one message. Choices the
protocol leaves open, made here:
- while a message is `sending`, `next_attempt_at` is its lease deadline (when it
  becomes due again), so one index serves both the due and the expired;
- every settle except RELEASE counts one attempt;
- `list()` items and leased records carry no events (speed); `get()` has them;
- `take_send_budget` is an in-process bucket: a SQLite gateway is one process
  (several worker processes on one file would each spend the full rate).
"""

# ruff: noqa: S608 -- statements are assembled from this module's constants only;
# every value reaches SQLite as a bound parameter.

from __future__ import annotations

import asyncio
import contextlib
import queue
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import orjson

from wxgate.backends.base import (
    MAX_EVENTS,
    DeadLetterFilter,
    Enqueued,
    Event,
    Lease,
    ListFilter,
    MessageRecord,
    NewMessage,
    Outcome,
    Page,
    Pause,
    ReportApplied,
    Settlement,
    Status,
    StorageUnavailable,
    report_target,
    send_burst,
)
from wxgate.backends.guarded_tokens import GuardedTokenStore
from wxgate.backends.sqlite_schema import SETTLED_SQL, create_schema
from wxgate.clock import Clock, SystemClock
from wxgate.delivery.ratelimit import TokenBucket
from wxgate.wechat.tokenstore import SqliteTokenStore, TokenStore

_T = TypeVar("_T")

Synchronous = Literal["NORMAL", "FULL", "EXTRA"]

MAX_GROUP: Final = 256  # commands per transaction
PENDING_REPORT_TTL_S: Final = 3600.0  # how long a report waits for its msgid
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER
PURGE_CHUNK: Final = 2000  # rows per purge transaction, so intake never stalls long
_EXPIRY_SWEEP: Final = 16  # expired nonces / reports dropped per write that adds one
_READERS: Final = 2

_KIND: Final = {
    Outcome.SENT: "sent",
    Outcome.RETRY: "retry",
    Outcome.FAILED: "failed",
    Outcome.DEAD: "dead",
    Outcome.RELEASE: "released",
}
_TARGET: Final = {
    Outcome.SENT: Status.SENT,
    Outcome.RETRY: Status.QUEUED,
    Outcome.FAILED: Status.FAILED,
    Outcome.DEAD: Status.DEAD,
    Outcome.RELEASE: Status.QUEUED,
}


# -- SQL -------------------------------------------------------------------------------

# The record's columns, in the order `_record` reads them.
_COLUMNS = (
    "id, app, touser, template_id, payload, status, attempts, next_attempt_at, "
    "idempotency_key, msgid, last_errcode, last_errmsg, last_category, report_status, "
    "trace_id, batch_id, created_at, updated_at, sent_at, delivered_at"
)


def _append_event(event: str) -> str:
    """SQL for `events` with `event` (a json_object) appended, the oldest dropped past MAX."""
    return (
        f"json_insert(CASE WHEN json_array_length(events) >= {MAX_EVENTS} "
        f"THEN json_remove(events, '$[0]') ELSE events END, '$[#]', {event})"
    )


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, app, touser, template_id, payload, status, next_attempt_at,"
    " idempotency_key, trace_id, batch_id, created_at, updated_at, events)"
    " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
)
_KNOWN_KEYS = (
    "SELECT m.app, m.idempotency_key, m.id, m.status FROM json_each(?) AS k"
    " JOIN messages AS m ON m.app = json_extract(k.value, '$[0]')"
    " AND m.idempotency_key = json_extract(k.value, '$[1]')"
)
_UPSERT_BATCH = (
    "INSERT INTO batches (id, app, created_at, size) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET size = size + excluded.size"
)
# Each half is limited before the merge, so a deep backlog is never sorted whole.
_DUE = (
    "SELECT rid, due FROM (SELECT rowid AS rid, next_attempt_at AS due FROM messages"
    " WHERE status = 'queued' AND next_attempt_at <= :now"
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
        "json_object('at', :now, 'kind', 'lease_expired',"
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
    " next_attempt_at = coalesce(:next_attempt_at, next_attempt_at),"
    " msgid = coalesce(:msgid, msgid), sent_at = coalesce(:sent_at, sent_at),"
    " last_errcode = CASE WHEN :answered THEN :errcode ELSE last_errcode END,"
    " last_errmsg = CASE WHEN :answered THEN :errmsg ELSE last_errmsg END,"
    " last_category = CASE WHEN :answered THEN :category ELSE last_category END,"
    " lease_owner = NULL, lease_token = NULL, lease_until = NULL, updated_at = :now,"
    " events = "
    + _append_event("json_object('at', :now, 'kind', :kind, 'note', :note, 'errcode', :errcode)")
    + " WHERE id = :id AND status = 'sending' AND lease_token = :token RETURNING app"
)
_REPORT = (
    "UPDATE messages SET status = :status, report_status = :report,"
    " delivered_at = :received_at, updated_at = :now, events = "
    + _append_event("json_object('at', :now, 'kind', 'report', 'note', :report, 'errcode', NULL)")
    + " WHERE id = :id AND status = 'sent'"
)
_KEEP_REPORT = (
    "INSERT INTO pending_reports (app, msgid, report_status, received_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app, msgid) DO UPDATE SET"
    " report_status = excluded.report_status, received_at = excluded.received_at,"
    " expires_at = excluded.expires_at WHERE pending_reports.expires_at <= excluded.received_at"
)
_ANY_PENDING_REPORT = "SELECT 1 FROM pending_reports LIMIT 1"
_TAKE_PENDING_REPORT = (
    "DELETE FROM pending_reports WHERE app = ? AND msgid = ? AND expires_at > ?"
    " RETURNING report_status, received_at"
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
    + _append_event("json_object('at', :now, 'kind', 'replayed', 'note', '', 'errcode', NULL)")
)
_REPLAY = (
    _REPLAY_SET
    + " WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('dead', 'failed')"
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
_LIST_FILTERS: Final = ("status", "app", "touser", "batch_id")


# -- the writer ------------------------------------------------------------------------


@dataclass(slots=True)
class _Command:
    run: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Answer = tuple[_Command, Any, bool]  # command, result or exception, ok
_STOP: Final = object()


@dataclass(slots=True)
class WriteStats:
    """What the writer has done: `commits` is the number of transactions (fsyncs)."""

    commits: int = 0
    commands: int = 0
    largest_group: int = 0


class _GroupCommitWriter:
    """One thread and one connection that run every write, many per transaction."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.stats = WriteStats()

    def start(self, conn: sqlite3.Connection) -> None:
        """Serve commands on `conn`, which the writer's thread owns (and closes) from now on."""
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="wxgate-sqlite-writer", daemon=True
        )
        self._thread.start()

    def submit(self, command: _Command) -> None:
        self._queue.put(command)

    def stop(self) -> None:
        """Finish every command submitted so far, then end the thread."""
        self._queue.put(_STOP)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                group = [first]
                stopping = self._gather(group)
                _answer(self._execute(conn, group))
                if stopping:
                    return
        finally:
            conn.close()

    def _gather(self, group: list[_Command]) -> bool:
        """Add what arrives within the window; True if told to stop.

        The thread sleeps through the window and then takes what came, rather than
        waiting on the queue: each put to a waiting queue woke this thread, and on a
        busy core every wake-up cost the event loop a GIL hand-over and two context
        switches (measured with the gateway on one core at 2,000 requests/s: 0.29-0.33
        ms of CPU per request before, 0.27-0.28 after)."""
        if self._window_s > 0 and self._queue.qsize() < MAX_GROUP - len(group):
            time.sleep(self._window_s)
        while len(group) < MAX_GROUP:
            try:
                command = self._queue.get_nowait()
            except queue.Empty:
                return False
            if command is _STOP:
                return True
            group.append(command)
        return False

    def _execute(self, conn: sqlite3.Connection, group: list[_Command]) -> list[_Answer]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            answers = _run_unguarded(conn, group)
            if answers is None:
                # A command failed: start over, each command in its own SAVEPOINT this
                # time, so that one is undone alone and the others are still committed.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                answers = [_run_in_savepoint(conn, command) for command in group]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # The transaction itself failed (busy past the timeout, disk full, I/O):
            # nothing of the group took effect, and every caller hears why.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return [(command, exc, False) for command in group]
        self.stats.commits += 1
        self.stats.commands += len(group)
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        return answers


def _run_unguarded(conn: sqlite3.Connection, group: list[_Command]) -> list[_Answer] | None:
    """Every command's answer, or None as soon as one raises (the transaction is then dirty).

    The common case, where no command fails, runs without savepoints: a SAVEPOINT makes
    SQLite copy each page the command changes into a sub-journal, which spills to a
    temporary file past 64 KiB, as any lease or settle of a few dozen messages does.
    Measured per delivered message: lease + settle on the writer's connection alone
    61 -> 35 us of CPU; a worker process emptying a queue of 30,000, 185 -> 162 us
    (its writer thread 68 -> 47 us)."""
    answers: list[_Answer] = []
    for command in group:
        try:
            answers.append((command, command.run(conn), True))
        except Exception:
            return None
    return answers


def _run_in_savepoint(conn: sqlite3.Connection, command: _Command) -> _Answer:
    conn.execute("SAVEPOINT command")
    try:
        result = command.run(conn)
    except Exception as exc:
        # Handed to the caller, whose await re-raises it; only this command is undone.
        conn.execute("ROLLBACK TO command")
        conn.execute("RELEASE command")
        return (command, exc, False)
    conn.execute("RELEASE command")
    return (command, result, True)


def _answer(answers: list[_Answer]) -> None:
    """Resolve the callers' futures on their own loops, one hop per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, items in by_loop.items():
        # A closed loop means its callers are gone; their writes stand all the same.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[_Answer]) -> None:
    for command, value, ok in items:
        if command.future.done():  # the caller was cancelled
            continue
        if ok:
            command.future.set_result(value)
        else:
            command.future.set_exception(value)


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
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        self._path = str(path)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock if clock is not None else SystemClock()
        self._writer = _GroupCommitWriter(group_commit_ms / 1000)
        self._readers = ThreadPoolExecutor(_READERS, thread_name_prefix="wxgate-sqlite-read")
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._tokens: GuardedTokenStore | None = None
        self._state: Literal["new", "open", "closed"] = "new"

    @property
    def path(self) -> str:
        return self._path

    @property
    def stats(self) -> WriteStats:
        """Counters of the writer (commits, commands, largest group) of this process."""
        return self._writer.stats

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            return
        self._writer.start(await asyncio.to_thread(self._open_writer_connection))
        self._state = "open"

    async def close(self) -> None:
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        self._writer.stop()
        await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self._readers.shutdown, wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._tokens is not None:
            await self._tokens.close()

    async def ping(self) -> bool:
        if self._state != "open":
            return False
        try:
            return await self._read(lambda conn: conn.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error:
            return False

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # transactions are spelled out: BEGIN IMMEDIATE ... COMMIT
            check_same_thread=False,  # reader connections are closed by close(), elsewhere
            cached_statements=256,
        )
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _open_writer_connection(self) -> sqlite3.Connection:
        conn = self._connect(readonly=False)
        try:
            create_schema(conn, self._clock.now())
        except BaseException:
            conn.close()
            raise
        return conn

    async def _write(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `run` on the writer; return once its transaction is committed."""
        if self._state != "open":
            raise StorageUnavailable(f"the SQLite backend is {self._state}, not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._writer.submit(_Command(run, loop, future))
        try:
            return await future
        except sqlite3.OperationalError as exc:  # busy past the timeout, disk full, I/O error
            raise StorageUnavailable(f"SQLite write failed: {exc}") from exc

    async def _read(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._state != "open":
            raise StorageUnavailable(f"the SQLite backend is {self._state}, not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: run(self._reader()))
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    # -- intake ------------------------------------------------------------------------

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[Enqueued]:
        if not messages:
            return []
        batch = tuple(messages)
        return await self._write(lambda conn: _insert_messages(conn, batch, now))

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
        rows = [_settle_params(settlement, now) for settlement in settlements]
        return await self._write(lambda conn: _settle_all(conn, rows, now))

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

    async def apply_report(
        self, app: str, msgid: int, report_status: str, now: float
    ) -> ReportApplied:
        if not _INT64_MIN <= msgid <= _INT64_MAX:
            # No stored msgid lies outside SQLite's integers, so none can match (and the
            # driver would refuse the number): a report for a message we do not have.
            return ReportApplied(None, None, False)
        return await self._write(lambda conn: _apply_report(conn, app, msgid, report_status, now))

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
        return {row[0]: Pause(*row) for row in rows}

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
        if self._tokens is None:
            # Busy past its timeout, disk full, I/O: the same StorageUnavailable as a queue call.
            store = SqliteTokenStore(self._path, clock=self._clock)
            self._tokens = GuardedTokenStore(store, (sqlite3.OperationalError,))
        return self._tokens

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
        return None if row is None else _record(row, events=row[20])

    async def batch_counts(self, batch_id: str) -> dict[Status, int] | None:
        return await self._read(lambda conn: _batch_counts(conn, batch_id))

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


def _insert_messages(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], now: float
) -> list[Enqueued]:
    known = _known_keys(conn, messages)
    accepted = orjson.dumps([{"at": now, "kind": "accepted", "note": "", "errcode": None}])
    events = accepted.decode()
    answers: list[Enqueued] = []
    rows: list[tuple[Any, ...]] = []
    created: Counter[str] = Counter()
    for m in messages:
        if m.idempotency_key is not None:
            first = known.get((m.app, m.idempotency_key))
            if first is not None:
                answers.append(first)
                continue
            known[(m.app, m.idempotency_key)] = Enqueued(m.id, Status.QUEUED, False)
        payload = orjson.dumps(m.payload).decode()
        rows.append(
            (m.id, m.app, m.touser, m.template_id, payload, now, m.idempotency_key, m.trace_id,
             m.batch_id, now, now, events)
        )  # fmt: skip
        answers.append(Enqueued(m.id, Status.QUEUED, True))
        if m.batch_id is not None:
            created[m.batch_id] += 1
    _record_batches(conn, messages, created, now)
    conn.executemany(_INSERT_MESSAGE, rows)
    return answers


def _known_keys(
    conn: sqlite3.Connection, messages: Sequence[NewMessage]
) -> dict[tuple[str, str], Enqueued]:
    """The stored messages that already own an (app, idempotency_key) of this call."""
    keys = [(m.app, m.idempotency_key) for m in messages if m.idempotency_key is not None]
    if not keys:
        return {}
    rows = conn.execute(_KNOWN_KEYS, (orjson.dumps(keys).decode(),)).fetchall()
    return {(app, key): Enqueued(mid, Status(status), False) for app, key, mid, status in rows}


def _record_batches(
    conn: sqlite3.Connection, messages: Sequence[NewMessage], created: Counter[str], now: float
) -> None:
    # Every batch named gets a row, even one whose messages all repeated known keys.
    named = {m.batch_id: m.app for m in messages if m.batch_id is not None}
    if named:
        rows = [(bid, app, now, created[bid]) for bid, app in named.items()]
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


def _settle_params(s: Settlement, now: float) -> dict[str, Any]:
    target = _TARGET[s.outcome]
    waits = s.outcome in (Outcome.RETRY, Outcome.RELEASE)
    return {
        "id": s.lease.id,
        "token": s.lease.token,
        "status": target.value,
        "counted": 0 if s.outcome is Outcome.RELEASE else 1,
        "next_attempt_at": (now if s.next_attempt_at is None else s.next_attempt_at)
        if waits
        else None,
        "msgid": s.msgid if target is Status.SENT else None,
        "sent_at": now if target is Status.SENT else None,
        # A settlement without any answer (a plain release) keeps the last one recorded.
        "answered": s.errcode is not None or s.errmsg is not None or s.category is not None,
        "errcode": s.errcode,
        "errmsg": s.errmsg,
        "category": s.category,
        "kind": _KIND[s.outcome],
        "note": s.note,
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
    if reports_waiting and params["msgid"] is not None:
        # The report may have beaten this settle; it waits in pending_reports.
        pending = conn.execute(_TAKE_PENDING_REPORT, (row[0], params["msgid"], now)).fetchone()
        if pending is not None:
            _record_report(conn, params["id"], pending[0], pending[1], now)
    return True


def _record_report(
    conn: sqlite3.Connection, message_id: str, report_status: str, received_at: float, now: float
) -> Status | None:
    """Move a sent message to delivered/rejected; the new status, or None if it was not sent."""
    target = report_target(report_status)
    params = {
        "id": message_id,
        "status": target.value,
        "report": report_status,
        "received_at": received_at,
        "now": now,
    }
    return target if conn.execute(_REPORT, params).rowcount else None


def _apply_report(
    conn: sqlite3.Connection, app: str, msgid: int, report_status: str, now: float
) -> ReportApplied:
    row = conn.execute(
        "SELECT id, status FROM messages WHERE app = ? AND msgid = ? LIMIT 1", (app, msgid)
    ).fetchone()
    if row is None:
        conn.execute(_KEEP_REPORT, (app, msgid, report_status, now, now + PENDING_REPORT_TTL_S))
        conn.execute(_SWEEP_REPORTS, (now,))
        return ReportApplied(None, None, False)
    message_id, status = row
    applied = _record_report(conn, message_id, report_status, now, now)
    if applied is None:  # a repeated report, or one for a message already past `sent`
        return ReportApplied(message_id, Status(status), False)
    return ReportApplied(message_id, applied, True)


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


def _per_status(rows: Sequence[tuple[str, int]]) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for status, count in rows:
        counts[Status(status)] = count
    return counts


def _record(row: Sequence[Any], events: str | None = None) -> MessageRecord:
    # Times go through float(): RETURNING hands back integral REAL values as ints.
    return MessageRecord(
        id=row[0],
        app=row[1],
        touser=row[2],
        template_id=row[3],
        payload=orjson.loads(row[4]),
        status=Status(row[5]),
        attempts=row[6],
        next_attempt_at=float(row[7]),
        idempotency_key=row[8],
        msgid=row[9],
        last_errcode=row[10],
        last_errmsg=row[11],
        last_category=row[12],
        report_status=row[13],
        trace_id=row[14],
        batch_id=row[15],
        created_at=float(row[16]),
        updated_at=float(row[17]),
        sent_at=None if row[18] is None else float(row[18]),
        delivered_at=None if row[19] is None else float(row[19]),
        events=[] if events is None else _events(events),
    )


def _events(text: str) -> list[Event]:
    return [
        Event(item["at"], item["kind"], item.get("note") or "", item.get("errcode"))
        for item in orjson.loads(text)
    ]


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
