"""One SQLite file of the embedded engine: its group-commit writer and its readers.

Every write is a command for ONE writer thread that owns one connection and
commits in groups: it takes every command waiting (waiting at most
`group_commit_ms` for more), runs them in one `BEGIN IMMEDIATE` transaction,
COMMITs once, and only then answers each caller. Should one command fail, the
group runs again from the start, each command in its own SAVEPOINT, so the bad
one fails alone. Durability so costs one fsync per group, not per message.
Reads run on read-only connections in a small thread pool beside the writer; a
point lookup on the request path may run at once on the caller's own connection
(`read_inline`), falling back to the pool should it find the file locked.
When a group fails for lack of space or an I/O error, the writer checkpoints the WAL
into the database file and truncates it (again before each later group while writes
keep failing, at most once a second), and `writable()` says so until a write succeeds.
Every store of the engine (messages, tokens, ...) runs its statements through
one `SqliteDatabase`, so the file has one writer per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from wxgate.backends.base import StorageUnavailable
from wxgate.backends.sqlite_schema import create_schema
from wxgate.clock import Clock, SystemClock
from wxgate.observability import get_logger

_T = TypeVar("_T")

Synchronous = Literal["NORMAL", "FULL", "EXTRA"]

MAX_GROUP: Final = 256  # commands per transaction
_READERS: Final = 2
# Primary result codes of a write that failed for the storage's sake, not the command's:
# the disk (or the quota) is full, or the file cannot be written.
_STORAGE_CODES: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})
RECLAIM_INTERVAL_S: Final = 1.0  # between WAL checkpoints while writes keep failing
WRITABLE_AGAIN_S: Final = 1.0  # without a failure before a write counts as recovery
# A checkpoint on a full disk waits this long for readers, not the busy timeout: the
# callers of the next group wait for it.
CHECKPOINT_BUSY_MS: Final = 200
_PROBE: Final = (
    "INSERT INTO meta (key, value) VALUES ('write_probe', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

_log = get_logger("wxgate.backends.sqlite")


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

    def __init__(self, window_s: float, busy_timeout_ms: int) -> None:
        self._window_s = window_s
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.stats = WriteStats()
        # Why the last group could not be written (space, I/O), until one is written.
        self.failure: str | None = None
        self._reclaim_after = 0.0  # monotonic time of the next checkpoint while failing
        self._failed_at = 0.0  # monotonic time of the last failure for space or I/O

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
                if self.failure is not None:
                    self._reclaim(conn)
                answers = self._execute(conn, group)
                failed = self._note(answers)  # before the answers: callers may ask at once
                _answer(answers)
                if failed:
                    self._reclaim(conn)
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

    def _note(self, answers: list[_Answer]) -> bool:
        """Keep `failure` up to date after a group; True if it failed for space or I/O
        (the WAL's space is then given back at once)."""
        failed = next((v for _, v, ok in answers if not ok and _storage_failed(v)), None)
        if failed is not None:
            if self.failure is None:
                _log.error("SQLite cannot write; checkpointing the WAL", error=str(failed))
                self._reclaim_after = 0.0
            self.failure = str(failed)
            self._failed_at = time.monotonic()
            return True
        if (
            self.failure is not None
            # A small write may fit where a larger one does not: writable again only
            # once writes have stopped failing for a while, or readiness would flap.
            and time.monotonic() - self._failed_at >= WRITABLE_AGAIN_S
            and any(ok for _, _, ok in answers)
        ):
            _log.warning("SQLite writes again", after=self.failure)
            self.failure = None
        return False

    def _reclaim(self, conn: sqlite3.Connection) -> None:
        """Checkpoint the WAL into the database file and truncate it, at most once per
        RECLAIM_INTERVAL_S. Without this the WAL kept the space of every frame it ever
        held: on a full disk the automatic checkpoint fails, the WAL cannot start over,
        and each commit that fits makes it longer, until the space freed is gone again.
        A checkpoint that fails (the database file cannot grow yet) changes nothing."""
        now = time.monotonic()
        if now < self._reclaim_after:
            return
        self._reclaim_after = now + RECLAIM_INTERVAL_S
        try:
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
            try:
                blocked, frames, moved = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        except sqlite3.Error as exc:
            _log.warning("WAL checkpoint failed", error=str(exc))
            return
        _log.info("WAL checkpointed", truncated=not blocked, frames=frames, moved=moved)


def _storage_failed(exc: BaseException) -> bool:
    """The write failed for lack of space or an I/O error, not for its own sake."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES


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


class SqliteDatabase:
    """The file, its one writer thread and its reader pool (see the module docstring)."""

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
        self._writer = _GroupCommitWriter(group_commit_ms / 1000, round(busy_timeout_s * 1000))
        self._readers = ThreadPoolExecutor(_READERS, thread_name_prefix="wxgate-sqlite-read")
        self._reader_local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None  # read_inline's, on the loop's thread
        self._state: Literal["new", "open", "closed"] = "new"

    @property
    def path(self) -> str:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def write_failure(self) -> str | None:
        """Why writes fail for lack of space or an I/O error, or None while they work."""
        return self._writer.failure

    async def writable(self) -> bool:
        """False while writes fail for lack of space or an I/O error (and for
        WRITABLE_AGAIN_S after the last such failure). While they do, each call tries a
        small write (the other writes may have stopped: a worker that cannot lease, an
        API that refuses intake), so the answer turns True once space is back."""
        if self._state != "open":
            return False
        if self._writer.failure is None:
            return True
        now = str(self._clock.now())
        with contextlib.suppress(StorageUnavailable):
            await self.write(lambda conn: conn.execute(_PROBE, (now,)))
        return self._writer.failure is None

    @property
    def stats(self) -> WriteStats:
        """Counters of the writer (commits, commands, largest group) of this process."""
        return self._writer.stats

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
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    def _connect(
        self, *, readonly: bool, busy_timeout_s: float | None = None
    ) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_s if busy_timeout_s is None else busy_timeout_s,
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

    async def write(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `run` on the writer, inside its group's transaction; return once that
        transaction is committed. `run` must not begin or end a transaction itself."""
        if self._state != "open":
            raise StorageUnavailable(f"the SQLite backend is {self._state}, not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._writer.submit(_Command(run, loop, future))
        try:
            return await future
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) or _storage_failed(exc):
                # busy past the timeout, disk full, I/O error: storage, not the command
                raise StorageUnavailable(f"SQLite write failed: {exc}") from exc
            raise

    async def read(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `run` on a read-only connection of the pool."""
        if self._state != "open":
            raise StorageUnavailable(f"the SQLite backend is {self._state}, not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: run(self._reader()))
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

    async def read_inline(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `run`, a read of a few indexed rows, on this thread's own read-only
        connection, without the hop to the pool: measured on the intake path, handing a
        point lookup to a pool thread and back cost ~60-100 µs of CPU (the queue, the
        thread's wake-up, the GIL changing hands), the lookup itself ~5 µs. That
        connection never waits for a lock: should the file be locked (a connection in
        exclusive mode, a WAL recovery), or the read fail at all, it runs on the pool as
        `read` does, which waits and maps the errors."""
        if self._state != "open":
            raise StorageUnavailable(f"the SQLite backend is {self._state}, not open")
        try:
            if self._inline is None:
                self._inline = self._connect(readonly=True, busy_timeout_s=0.0)
            return run(self._inline)
        except sqlite3.Error:
            return await self.read(run)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn
