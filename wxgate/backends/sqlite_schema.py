"""The SQLite engine's tables and indexes, and the version row that guards them.

`create_schema` is idempotent and safe when several processes open one file at
once (it runs in one `BEGIN IMMEDIATE`). The token tables are not here: they
belong to `SqliteTokenStore`, which creates its own in the same file.
"""

from __future__ import annotations

import sqlite3

from wxgate.wechat.tokenstore import enable_wal

SCHEMA_VERSION = 1

# Statuses no worker will touch again, spelled once for SQL (they mirror base.SETTLED).
SETTLED_SQL = "('sent', 'delivered', 'rejected', 'failed', 'dead')"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    created_at REAL NOT NULL,
    size INTEGER NOT NULL
) STRICT;

-- The column order of messages up to delivered_at mirrors base.MessageRecord.
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
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    delivered_at REAL,
    lease_owner TEXT,
    lease_token TEXT,
    lease_until REAL,
    events TEXT NOT NULL DEFAULT '[]'    -- JSON array of {at, kind, note, errcode}
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

-- Reports that arrived before the settle storing their msgid committed.
CREATE TABLE IF NOT EXISTS pending_reports (
    app TEXT NOT NULL,
    msgid INTEGER NOT NULL,
    report_status TEXT NOT NULL,
    received_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (app, msgid)
) STRICT;
"""

_INDEXES = f"""
-- The due queue: app is included so exclude_apps is answered from the index alone.
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, next_attempt_at, app);
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency
    ON messages (app, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_msgid ON messages (app, msgid) WHERE msgid IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_batch
    ON messages (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_listing ON messages (status, id);
CREATE INDEX IF NOT EXISTS messages_touser ON messages (touser, id);
-- Purge walks only settled rows, oldest update first.
CREATE INDEX IF NOT EXISTS messages_settled
    ON messages (updated_at) WHERE status IN {SETTLED_SQL};
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE INDEX IF NOT EXISTS pending_reports_expiry ON pending_reports (expires_at);
"""


class SchemaVersionError(sqlite3.DatabaseError):
    """The file was written by a newer wxgate whose schema this one does not know."""


def create_schema(conn: sqlite3.Connection, now: float) -> None:
    """Create every table and index (if missing) and record the schema version."""
    enable_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Statements are split by hand: executescript would COMMIT the open transaction.
        for statement in (_TABLES + _INDEXES).split(";"):
            if statement.strip():
                conn.execute(statement)
        _check_version(conn, now)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_version(conn: sqlite3.Connection, now: float) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(now))],
        )
    elif int(row[0]) > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database schema is version {row[0]}; this wxgate knows up to {SCHEMA_VERSION}"
        )
