"""The SQLite engine's tables and indexes, the version row that guards them, and the
migrations that bring an older file up to date.

`create_schema` is idempotent and safe when several processes open one file at
once (it runs in one `BEGIN IMMEDIATE`): a new file gets every table at the
current version; a file of an older version gets the missing tables, then each
migration step after its version, in order.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from typing import Final

from wxgate.backends.base import SETTLED

SCHEMA_VERSION = 2
_BUSY_TIMEOUT_S: Final = 10.0

# Statuses no worker will touch again, as SQL (base.SETTLED's).
SETTLED_SQL = "(" + ", ".join(f"'{status.value}'" for status in sorted(SETTLED)) + ")"

_TABLES = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT                          -- a keyed batch's request digest
) STRICT;

-- The columns of messages up to delivered_at are base.MessageRecord's fields.
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,                 -- ULID: time-ordered, also WeChat's client_msg_id
    app TEXT NOT NULL,
    touser TEXT NOT NULL,
    template_id TEXT NOT NULL,
    payload TEXT NOT NULL,               -- JSON
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,       -- retry time, or the lease deadline while sending
    idempotency_key TEXT,
    msgid INTEGER,                       -- WeChat's int64 msgid, exact
    last_errcode INTEGER,
    last_errmsg TEXT,
    last_category TEXT,
    report_status TEXT,
    trace_id TEXT,
    batch_id TEXT REFERENCES batches (id),
    batch_position INTEGER,              -- its place among the batch's recipients
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    delivered_at REAL,
    kind TEXT NOT NULL DEFAULT 'template', -- template, subscribe or miniprogram
    urgent INTEGER NOT NULL DEFAULT 0,   -- sent even inside the app's quiet hours
    send_at REAL,                        -- scheduled: not before this time
    notify INTEGER NOT NULL DEFAULT 0,   -- settled moves go to webhook_events
    callback_url TEXT,                   -- the caller's own webhook for this message
    lease_owner TEXT,
    lease_token TEXT,
    lease_until REAL,
    events TEXT NOT NULL DEFAULT '[]',   -- JSON array of {at, kind, note, errcode}
    request_digest TEXT                  -- a repeat of its key must carry the same
) STRICT;

CREATE TABLE IF NOT EXISTS pauses (
    app TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    until REAL,
    errcode INTEGER,
    note TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS nonces (
    app TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (app, nonce)
) STRICT, WITHOUT ROWID;

-- Reports that arrived before the settle storing their msgid committed. `target` is
-- the status the report decided (delivered or rejected), `report_status` WeChat's text.
CREATE TABLE IF NOT EXISTS pending_reports (
    app TEXT NOT NULL,
    msgid INTEGER NOT NULL,
    report_status TEXT NOT NULL,
    target TEXT NOT NULL,
    received_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (app, msgid)
) STRICT;

-- The webhook outbox: a row per move of a message (notify = 1) into a settled
-- status, written in the move's transaction. The webhook dispatcher delivers them.
CREATE TABLE IF NOT EXISTS webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    app TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    errcode INTEGER,
    errmsg TEXT,
    msgid INTEGER,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending, sending, delivered, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL
) STRICT;

-- Access tokens and their fetch locks (backends/sqlite_tokens.py). A lock row outlives
-- its release (owner '' and expires_at 0) so that its fencing counter only grows.
CREATE TABLE IF NOT EXISTS wx_access_tokens (
    app TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    fetched_at REAL NOT NULL,
    fence INTEGER NOT NULL,
    forced_at REAL NOT NULL,
    forced_count INTEGER NOT NULL DEFAULT 0,
    forced_day INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS wx_access_token_locks (
    app TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    fence INTEGER NOT NULL
);

-- The template registry (backends/sqlite_templates.py): each app's templates as its
-- last sync stored them, and how the last sync of each kind went.
CREATE TABLE IF NOT EXISTS wx_templates (
    app TEXT NOT NULL,
    template_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,                  -- RegisteredTemplate.to_json
    PRIMARY KEY (app, template_id)
) WITHOUT ROWID, STRICT;

CREATE TABLE IF NOT EXISTS wx_template_syncs (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,                 -- TemplateSyncState.to_json
    PRIMARY KEY (app, kind)
) WITHOUT ROWID, STRICT;

-- The suppression list (backends/sqlite_suppressions.py): no rowid, so an entry is
-- one b-tree cell of (app, openid, value).
CREATE TABLE IF NOT EXISTS suppressions (
    app TEXT NOT NULL,
    openid TEXT NOT NULL,
    value TEXT NOT NULL,                 -- Suppression.encode: "reason|errcode|since"
    PRIMARY KEY (app, openid)
) WITHOUT ROWID, STRICT;
-- Subscribe messages: the grant ledger (backends/sqlite_grants.py), what each user
-- allowed for each template of an app, as far as this gateway has heard.
CREATE TABLE IF NOT EXISTS subscribe_grants (
    app TEXT NOT NULL,
    touser TEXT NOT NULL,
    template_id TEXT NOT NULL,
    one_time INTEGER NOT NULL DEFAULT 0,
    long_term INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app, touser, template_id)
) STRICT;

-- Subscribe messages: sent events that beat the worker's settle (backends/sent_events.py),
-- taken by the worker once its settle is written.
CREATE TABLE IF NOT EXISTS pending_sent_results (
    app TEXT NOT NULL,
    touser TEXT NOT NULL,
    template_id TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS pending_sent_results_key
    ON pending_sent_results (app, touser, template_id);

-- Per-recipient send caps (backends/sqlite_caps.py): one row per slot a message holds
-- in one limit (scope '' for the app's, a template id for that template's), until
-- expires_at.
CREATE TABLE IF NOT EXISTS recipient_cap_slots (
    app TEXT NOT NULL,
    touser TEXT NOT NULL,
    scope TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (app, touser, scope, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipient_cap_slots_expiry ON recipient_cap_slots (expires_at);

-- The dedupe window (backends/sqlite_dedupe.py): the first message id of one
-- (app, digest of recipient, template and data), until expires_at.
CREATE TABLE IF NOT EXISTS dedupe_window (
    app TEXT NOT NULL,
    digest TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (app, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_window_expiry ON dedupe_window (expires_at);

-- API keys kept in storage (backends/sqlite_api_keys.py): only the key's SHA-256.
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    apps TEXT NOT NULL,                  -- JSON list; empty: every app
    scopes TEXT NOT NULL,                -- JSON list
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL
);

-- The audit log of operator actions (backends/sqlite_audit.py).
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

# Columns each version added to a table that an older file may hold: (table, column,
# definition). A table the file lacks is created whole later, so it is skipped here.
_ADDED_COLUMNS: Final[dict[int, tuple[tuple[str, str, str], ...]]] = {
    2: (
        # Reports are decided before storage; version 1 kept only WeChat's text.
        ("pending_reports", "target", "TEXT NOT NULL DEFAULT 'rejected'"),
        # A repeated key must carry the same request (its digest); a keyed batch's
        # members are found by position, in a namespace of their own.
        ("messages", "request_digest", "TEXT"),
        ("messages", "batch_position", "INTEGER"),
        ("batches", "digest", "TEXT"),
        # stable_token force refreshes are budgeted per day.
        ("wx_access_tokens", "forced_count", "INTEGER NOT NULL DEFAULT 0"),
        ("wx_access_tokens", "forced_day", "INTEGER NOT NULL DEFAULT 0"),
        # The kinds of notification, priority and scheduled sends.
        ("messages", "kind", "TEXT NOT NULL DEFAULT 'template'"),
        ("messages", "urgent", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "send_at", "REAL"),
        # Status webhooks.
        ("messages", "notify", "INTEGER NOT NULL DEFAULT 0"),
        ("messages", "callback_url", "TEXT"),
    ),
}
# Statements run after a version's columns were added.
_BACKFILLS: Final[dict[int, tuple[str, ...]]] = {
    # The one place WeChat's report text is read in storage: a version-1 row was
    # written before the decision moved to the WeChat layer.
    2: (
        "UPDATE pending_reports SET target = 'delivered' WHERE report_status = 'success'",
        # More statuses are settled now: the partial index is made again below.
        "DROP INDEX IF EXISTS messages_settled",
    ),
}

_INDEXES = f"""
-- The due queue: app is included so exclude_apps is answered from the index alone.
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, next_attempt_at, app);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency
    ON messages (app, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_batch_position
    ON messages (batch_id, batch_position) WHERE batch_position IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_msgid ON messages (app, msgid) WHERE msgid IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_batch
    ON messages (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_listing ON messages (status, id);
CREATE INDEX IF NOT EXISTS messages_touser ON messages (touser, id);
-- Purge walks only settled rows, oldest update first.
CREATE INDEX IF NOT EXISTS messages_settled
    ON messages (updated_at) WHERE status IN {SETTLED_SQL};
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_events_message ON webhook_events (message_id, seq);
CREATE INDEX IF NOT EXISTS pending_reports_expiry ON pending_reports (expires_at);
"""


class SchemaVersionError(sqlite3.DatabaseError):
    """The file was written by a newer wxgate whose schema this one does not know."""


def enable_wal(conn: sqlite3.Connection, timeout_s: float = _BUSY_TIMEOUT_S) -> None:
    """Put the file in WAL mode (a property of the file, kept by later connections).

    Processes opening a new file at the same moment (an API and a worker started
    together) race to switch it: each reads under a shared lock and then needs the
    exclusive one, and SQLite answers one of them "database is locked" at once,
    without waiting out the busy timeout, to break the deadlock. So this retries,
    with a little jitter, until `timeout_s` has passed. Seen when the chaos stack
    started two API processes on one fresh file: one exited before it was ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(random.uniform(0.005, 0.02))


def create_schema(conn: sqlite3.Connection, now: float) -> None:
    """Create every table and index (if missing), migrate an older file, and record
    the schema version."""
    enable_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_META)
        version = stored_version(conn)
        if version is not None:
            _migrate(conn, version)
        # Statements are split by hand: executescript would COMMIT the open transaction.
        for statement in _COMMENT.sub("", _TABLES + _INDEXES).split(";"):
            if statement.strip():
                conn.execute(statement)
        _record_version(conn, version, now)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_COMMENT = re.compile(r"--[^\n]*")  # comments may say anything, semicolons included
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT"


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version; None for a new file."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database schema is version {version}; this wxgate knows up to {SCHEMA_VERSION}"
        )
    return version


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Each step after `version`, in order (before the tables of today are created, so
    an index on a new column finds it)."""
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for table, column, definition in _ADDED_COLUMNS.get(step, ()):
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if present and column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        for statement in _BACKFILLS.get(step, ()):
            conn.execute(statement)


def _record_version(conn: sqlite3.Connection, version: int | None, now: float) -> None:
    if version is None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(now))],
        )
    elif version < SCHEMA_VERSION:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
