"""Where access tokens are kept, and the lock that makes one fetch per lifetime.

`TokenStore` is the small protocol the token manager needs; it is implemented
in memory (one process), on SQLite (processes sharing one file) and on Redis
(processes on many hosts). The lock is a lease with an owner and a fencing
number, so a holder that stalls past its lease cannot overwrite a newer token.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

from wxgate.clock import Clock, SystemClock

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CachedToken:
    token: str
    expires_at: float  # epoch seconds
    fetched_at: float  # epoch seconds
    fence: int = 0  # the lock's fencing number when it was saved; higher is newer
    forced_at: float = 0.0  # last force_refresh=true (at most one every 30 s)
    # stable_token force refreshes on Beijing day `forced_day` (WeChat allows 20 a day)
    forced_count: int = 0
    forced_day: int = 0  # token.beijing_day() of the last one; 0 for none

    def __repr__(self) -> str:  # the token itself never reaches a repr or a log line
        return (
            f"CachedToken(token='{mask(self.token)}', expires_at={self.expires_at:.0f}, "
            f"fetched_at={self.fetched_at:.0f}, fence={self.fence})"
        )

    def remaining(self, now: float) -> float:
        return self.expires_at - now


def mask(token: str) -> str:
    """A token as it may be shown to an operator: its first 4 characters only."""
    return f"{token[:4]}…({len(token)} chars)" if token else "(none)"


class TokenStore(Protocol):
    async def load(self, app: str) -> CachedToken | None: ...

    async def save(self, app: str, token: CachedToken) -> bool:
        """Store `token` unless the stored one has a higher fence; True if stored."""
        ...

    async def invalidate(self, app: str, token: str) -> bool:
        """Compare-and-invalidate: if the stored token is still `token`, mark it expired
        (expires_at = 0, fence kept, so an older fetch still cannot overwrite it)."""
        ...

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        """Take the fetch lock for `ttl_s` seconds; its fencing number, or None if held."""
        ...

    async def unlock(self, app: str, owner: str) -> None:
        """Release the lock if `owner` still holds it."""
        ...

    async def close(self) -> None: ...


class MemoryTokenStore:
    """Tokens of one process; the lock only serialises this process's managers."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._tokens: dict[str, CachedToken] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._fences: dict[str, int] = {}
        self._mutex = asyncio.Lock()

    async def load(self, app: str) -> CachedToken | None:
        return self._tokens.get(app)

    async def save(self, app: str, token: CachedToken) -> bool:
        current = self._tokens.get(app)
        if current is not None and current.fence > token.fence:
            return False
        self._tokens[app] = token
        return True

    async def invalidate(self, app: str, token: str) -> bool:
        current = self._tokens.get(app)
        if current is None or current.token != token or current.expires_at == 0:
            return False
        self._tokens[app] = replace(current, expires_at=0.0)
        return True

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        async with self._mutex:
            now = self._clock.monotonic()
            held = self._locks.get(app)
            if held is not None and held[1] > now and held[0] != owner:
                return None
            self._locks[app] = (owner, now + ttl_s)
            self._fences[app] = self._fences.get(app, 0) + 1
            return self._fences[app]

    async def unlock(self, app: str, owner: str) -> None:
        held = self._locks.get(app)
        if held is not None and held[0] == owner:
            del self._locks[app]

    async def close(self) -> None:
        return None


# One table for the tokens, one for the fetch locks. A lock row outlives its
# release (owner '' and expires_at 0) so that its fencing counter only grows.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS wx_access_tokens (
        app TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        expires_at REAL NOT NULL,
        fetched_at REAL NOT NULL,
        fence INTEGER NOT NULL,
        forced_at REAL NOT NULL,
        forced_count INTEGER NOT NULL DEFAULT 0,
        forced_day INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS wx_access_token_locks (
        app TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL,
        fence INTEGER NOT NULL
    )""",
)
# Columns added after the table first shipped, added to older files on open.
_ADDED_COLUMNS = (
    ("forced_count", "INTEGER NOT NULL DEFAULT 0"),
    ("forced_day", "INTEGER NOT NULL DEFAULT 0"),
)
_BUSY_TIMEOUT_MS = 10_000


def enable_wal(conn: sqlite3.Connection, timeout_s: float = _BUSY_TIMEOUT_MS / 1000) -> None:
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


class SqliteTokenStore:
    """Tokens and fetch locks in a SQLite file that several processes share.

    Every statement runs on one worker thread that owns the connection, so the
    event loop never blocks on the file. Writes that read before they decide
    (`save`, `try_lock`) run in `BEGIN IMMEDIATE`, which takes the file's write
    lock first: two processes cannot both see the lock free.
    """

    def __init__(self, path: str | Path, *, clock: Clock | None = None) -> None:
        self._path = str(path)
        self._clock = clock if clock is not None else SystemClock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wxgate-tokens")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            self._conn = self._connect()
        return work(self._conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        enable_wal(conn)
        # A token lost to a power cut is fetched again; no fsync per save is needed.
        conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        _add_missing_columns(conn)
        return conn

    async def load(self, app: str) -> CachedToken | None:
        return await self._run(lambda conn: _load(conn, app))

    async def save(self, app: str, token: CachedToken) -> bool:
        return await self._run(lambda conn: _save(conn, app, token))

    async def invalidate(self, app: str, token: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE wx_access_tokens SET expires_at = 0"
                " WHERE app = ? AND token = ? AND expires_at != 0",
                (app, token),
            )
            return cursor.rowcount > 0

        return await self._run(work)

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        now = self._clock.now()
        return await self._run(lambda conn: _try_lock(conn, app, owner, now, now + ttl_s))

    async def unlock(self, app: str, owner: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE wx_access_token_locks SET owner = '', expires_at = 0"
                " WHERE app = ? AND owner = ?",
                (app, owner),
            )

        await self._run(work)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def work() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, work)
        self._executor.shutdown(wait=False)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    with _immediate(conn):
        present = {row[1] for row in conn.execute("PRAGMA table_info(wx_access_tokens)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in present:
                conn.execute(f"ALTER TABLE wx_access_tokens ADD COLUMN {name} {definition}")


def _load(conn: sqlite3.Connection, app: str) -> CachedToken | None:
    row = conn.execute(
        "SELECT token, expires_at, fetched_at, fence, forced_at, forced_count, forced_day"
        " FROM wx_access_tokens WHERE app = ?",
        (app,),
    ).fetchone()
    if row is None:
        return None
    return CachedToken(*row)


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the file's write lock from its first read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _save(conn: sqlite3.Connection, app: str, token: CachedToken) -> bool:
    with _immediate(conn):
        row = conn.execute("SELECT fence FROM wx_access_tokens WHERE app = ?", (app,)).fetchone()
        if row is not None and row[0] > token.fence:
            return False
        conn.execute(
            "INSERT INTO wx_access_tokens (app, token, expires_at, fetched_at, fence, forced_at,"
            " forced_count, forced_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (app) DO UPDATE SET"
            " token = excluded.token, expires_at = excluded.expires_at,"
            " fetched_at = excluded.fetched_at, fence = excluded.fence,"
            " forced_at = excluded.forced_at, forced_count = excluded.forced_count,"
            " forced_day = excluded.forced_day",
            (
                app,
                token.token,
                token.expires_at,
                token.fetched_at,
                token.fence,
                token.forced_at,
                token.forced_count,
                token.forced_day,
            ),
        )
        return True


def _try_lock(
    conn: sqlite3.Connection, app: str, owner: str, now: float, until: float
) -> int | None:
    with _immediate(conn):
        row = conn.execute(
            "SELECT owner, expires_at, fence FROM wx_access_token_locks WHERE app = ?", (app,)
        ).fetchone()
        if row is not None and row[1] > now and row[0] != owner:
            return None
        fence = (row[2] if row is not None else 0) + 1
        conn.execute(
            "INSERT INTO wx_access_token_locks (app, owner, expires_at, fence)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (app) DO UPDATE SET"
            " owner = excluded.owner, expires_at = excluded.expires_at, fence = excluded.fence",
            (app, owner, until, fence),
        )
        return fence
