-- The SQLite schema of version 1 (wxgate as of stop 8), for the migration test.
-- Kept as it was: a file written by that version looks like this.
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
    ON messages (updated_at) WHERE status IN ('sent', 'delivered', 'rejected', 'failed', 'dead');
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE INDEX IF NOT EXISTS pending_reports_expiry ON pending_reports (expires_at);
CREATE TABLE IF NOT EXISTS wx_access_tokens (
    app TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL,
    fetched_at REAL NOT NULL,
    fence INTEGER NOT NULL,
    forced_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS wx_access_token_locks (
    app TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    fence INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
