"""What only the SQLite engine promises: WAL, group commit, a file that survives
SIGKILL at any instant, several processes on one file, and the token store in it."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.backends.test_contract import T0, message
from wxgate.backends.base import (
    NewMessage,
    Outcome,
    Settlement,
    Status,
    StorageUnavailable,
)
from wxgate.backends.sqlite import PURGE_CHUNK, SqliteBackend
from wxgate.backends.sqlite_db import SqliteDatabase
from wxgate.backends.sqlite_schema import SCHEMA_VERSION, SchemaVersionError
from wxgate.wechat.tokenstore import CachedToken

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def backend(sqlite_path: Path) -> AsyncIterator[SqliteBackend]:
    engine = SqliteBackend(sqlite_path)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# -- the file --------------------------------------------------------------------------


async def test_file_is_in_wal_mode(backend: SqliteBackend, sqlite_path: Path) -> None:
    assert raw(sqlite_path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_reopening_keeps_the_data_and_the_schema_version(sqlite_path: Path) -> None:
    first = SqliteBackend(sqlite_path)
    await first.start()
    [answer] = await first.enqueue([message()], T0)
    await first.close()

    second = SqliteBackend(sqlite_path)
    await second.start()
    try:
        assert await second.get(answer.id) is not None
    finally:
        await second.close()
    version = raw(sqlite_path).execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version.fetchone() == (str(SCHEMA_VERSION),)


async def test_a_file_from_a_newer_schema_is_refused(sqlite_path: Path) -> None:
    first = SqliteBackend(sqlite_path)
    await first.start()
    await first.close()
    raw(sqlite_path).execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(SchemaVersionError):
        await SqliteBackend(sqlite_path).start()


def _version_1_file(path: Path) -> None:
    """A file as version 1 wrote it: two sent messages whose reports came first and wait
    with WeChat's text only (no decided status), one with an idempotency key."""
    conn = raw(path)
    conn.executescript((Path(__file__).parent / "sqlite_schema_v1.sql").read_text())
    for n, key in ((1, "order-1"), (2, None)):
        conn.execute(
            "INSERT INTO messages (id, app, touser, template_id, payload, status, attempts,"
            " next_attempt_at, idempotency_key, msgid, created_at, updated_at, sent_at, events)"
            " VALUES (?, 'shop', ?, 't', '{}', 'sending', 0, ?, ?, NULL, ?, ?, NULL, '[]')",
            (f"m{n}", f"o-{n}", T0 - 1, key, T0, T0),
        )
    conn.execute("INSERT INTO wx_access_tokens VALUES ('shop', '90_old', 2e9, 1.7e9, 4, 0)")
    reports = [("shop", 11, "success"), ("shop", 12, "failed:user block")]
    conn.executemany(
        "INSERT INTO pending_reports (app, msgid, report_status, received_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(app, msgid, text, T0, T0 + 3600) for app, msgid, text in reports],
    )
    conn.close()


async def test_a_version_1_file_is_migrated_and_its_waiting_reports_still_apply(
    sqlite_path: Path,
) -> None:
    _version_1_file(sqlite_path)
    backend = SqliteBackend(sqlite_path)
    await backend.start()
    try:
        leases = {lease.id: lease for lease in await backend.lease_batch("w", 10, 60, T0)}
        settlements = [
            Settlement(leases["m1"], Outcome.SENT, msgid=11),
            Settlement(leases["m2"], Outcome.SENT, msgid=12),
        ]
        assert await backend.settle(settlements, T0 + 1) == [True, True]
        delivered, rejected = await backend.get("m1"), await backend.get("m2")
        # A key stored before digests were kept matches any repeat: no conflict.
        [again] = await backend.enqueue([message(key="order-1")], T0 + 2)
        tokens = backend.token_store()
        old_token = await tokens.load("shop")
        counted = CachedToken("90_new", 2e9, 1.7e9, fence=5, forced_count=1, forced_day=9)
        assert await tokens.save("shop", counted)
        assert await tokens.load("shop") == counted
    finally:
        await backend.close()
    assert delivered is not None and delivered.status is Status.DELIVERED
    assert rejected is not None and rejected.status is Status.REJECTED
    assert rejected.report_status == "failed:user block"
    assert (again.id, again.created) == ("m1", False)
    assert old_token == CachedToken("90_old", 2e9, 1.7e9, fence=4)  # nothing forced yet
    version = raw(sqlite_path).execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version.fetchone() == (str(SCHEMA_VERSION),)


# -- the writer ------------------------------------------------------------------------


async def test_concurrent_single_enqueues_share_a_handful_of_commits(
    backend: SqliteBackend,
) -> None:
    before = backend.stats.commits
    answers = await asyncio.gather(*(backend.enqueue([message()], T0) for _ in range(200)))

    assert len({a.id for [a] in answers}) == 200
    assert backend.stats.commits - before <= 20
    assert (await backend.counts())[Status.QUEUED] == 200


async def test_enqueue_returns_only_after_its_row_is_committed(
    backend: SqliteBackend, sqlite_path: Path
) -> None:
    outside = raw(sqlite_path)

    async def enqueue_and_look() -> bool:
        [answer] = await backend.enqueue([message()], T0)
        found = outside.execute("SELECT 1 FROM messages WHERE id = ?", (answer.id,)).fetchone()
        return found is not None

    assert all(await asyncio.gather(*(enqueue_and_look() for _ in range(50))))


async def test_a_failing_command_fails_alone_in_its_group(backend: SqliteBackend) -> None:
    twice = message()
    half = message()
    good = [backend.enqueue([message()], T0) for _ in range(10)]
    bad = backend.enqueue([half, twice, twice], T0)  # the same id twice: the call fails

    results = await asyncio.gather(bad, *good, return_exceptions=True)
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert all(isinstance(r, list) for r in results[1:])
    assert backend.stats.largest_group > 1
    assert await backend.get(half.id) is None  # nothing of the failed call was kept
    assert (await backend.counts())[Status.QUEUED] == 10


async def test_commands_around_a_failing_one_are_written_once(backend: SqliteBackend) -> None:
    # The group first runs without savepoints; a failure rolls it all back and runs it
    # again, so what came before the bad command must not be written twice.
    twice = message()
    before = [backend.enqueue([message()], T0) for _ in range(5)]
    bad = backend.enqueue([twice, twice], T0)
    after = [backend.enqueue([message()], T0) for _ in range(5)]

    results = await asyncio.gather(*before, bad, *after, return_exceptions=True)
    assert isinstance(results[5], sqlite3.IntegrityError)
    assert all(isinstance(r, list) for r in results[:5] + results[6:])
    assert backend.stats.largest_group > 5
    count = raw(Path(backend.path)).execute("SELECT count(*) FROM messages").fetchone()[0]
    assert count == 10


async def test_a_cancelled_caller_does_not_undo_its_write(backend: SqliteBackend) -> None:
    new = message()
    task = asyncio.create_task(backend.enqueue([new], T0))
    await asyncio.sleep(0)  # submitted to the writer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await backend.enqueue([message()], T0)  # the writer is in order: this one comes after

    assert await backend.get(new.id) is not None


async def test_close_finishes_the_writes_already_submitted(sqlite_path: Path) -> None:
    engine = SqliteBackend(sqlite_path)
    await engine.start()
    news = [message() for _ in range(30)]
    tasks = [asyncio.create_task(engine.enqueue([new], T0)) for new in news]
    await asyncio.sleep(0)
    await engine.close()
    await asyncio.gather(*tasks)

    count = raw(sqlite_path).execute("SELECT count(*) FROM messages").fetchone()[0]
    assert count == 30


async def test_calls_after_close_are_refused(sqlite_path: Path) -> None:
    engine = SqliteBackend(sqlite_path)
    await engine.start()
    await engine.close()
    assert not await engine.ping()
    with pytest.raises(StorageUnavailable):
        await engine.enqueue([message()], T0)


async def test_an_inline_read_that_finds_the_file_busy_runs_again_on_the_pool(
    sqlite_path: Path,
) -> None:
    """read_inline's own connection never waits for a lock (busy timeout 0): a read
    that fails there (here: "database is locked" on its first run) runs on the pool."""
    db = SqliteDatabase(sqlite_path)
    await db.start()
    threads: list[str] = []

    def count(conn: sqlite3.Connection) -> int:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise sqlite3.OperationalError("database is locked")
        return int(conn.execute("SELECT count(*) FROM suppressions").fetchone()[0])

    try:
        assert await db.read_inline(count) == 0
        assert threads[0] == threading.current_thread().name  # tried inline first
        assert threads[1].startswith("wxgate-sqlite-read")  # then on the pool
    finally:
        await db.close()


async def test_an_inline_read_after_close_is_refused(sqlite_path: Path) -> None:
    db = SqliteDatabase(sqlite_path)
    await db.start()
    await db.close()
    with pytest.raises(StorageUnavailable):
        await db.read_inline(lambda conn: conn.execute("SELECT 1").fetchone())


async def test_purge_deletes_in_chunks_of_bounded_size(backend: SqliteBackend) -> None:
    total = 2 * PURGE_CHUNK + 7
    await backend.enqueue([message() for _ in range(total)], T0)
    leases = await backend.lease_batch("w", total, 30, T0)
    await backend.settle([Settlement(lease, Outcome.DEAD) for lease in leases], T0)

    before = backend.stats.commits
    assert await backend.purge(T0 + 1) == total
    assert backend.stats.commits - before >= 3


# -- several processes -----------------------------------------------------------------


def _child(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.backends.sqlite_child", *args]
    return subprocess.Popen(command, cwd=REPO, **kwargs)  # type: ignore[call-overload]


def _read_acks(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a kill may leave the last line torn
    return [line.split(" ") for line in lines]


async def _wait_for_acks(path: Path, at_least: int) -> None:
    # A child's start (interpreter, imports) takes seconds on a busy machine.
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if len(_read_acks(path)) >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the child process acknowledged {len(_read_acks(path))} < {at_least}")


def _check_consistency(path: Path, acks: list[list[str]]) -> None:
    conn = raw(path)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, touser, status, msgid, payload, events, lease_token, sent_at FROM messages"
        )
    }
    for kind, message_id, *rest in acks:
        assert message_id in rows, f"acknowledged {kind} of {message_id} was lost"
        touser, status, msgid, *_ = rows[message_id]
        if kind == "E":
            assert touser == rest[0]
        else:
            assert status == rest[0]
            assert str(msgid) == rest[1]
    for touser, status, _, payload, events, lease_token, sent_at in rows.values():
        assert orjson.loads(payload)["touser"] == touser
        assert orjson.loads(events)[0]["kind"] == "accepted"
        assert (status == Status.SENDING) == (lease_token is not None)
        assert status != Status.SENT or sent_at is not None


async def test_sigkill_at_any_instant_loses_no_acknowledged_write(sqlite_path: Path) -> None:
    acks_path = sqlite_path.with_suffix(".acks")
    rng = random.Random(7)
    for _ in range(6):
        before = len(_read_acks(acks_path))
        child = _child("churn", str(sqlite_path), str(acks_path))
        try:
            await _wait_for_acks(acks_path, at_least=before + 50)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.kill()
            child.wait()
        acks = _read_acks(acks_path)
        _check_consistency(sqlite_path, acks)
    assert sum(1 for kind, *_ in acks if kind == "S") > 0
    engine = SqliteBackend(sqlite_path)
    await engine.start()
    try:
        assert sum((await engine.counts()).values()) >= len({ack[1] for ack in acks})
    finally:
        await engine.close()


async def test_two_processes_never_lease_the_same_message(sqlite_path: Path) -> None:
    engine = SqliteBackend(sqlite_path)
    await engine.start()
    answers = await engine.enqueue([NewMessage("shop", {"touser": "o"}) for _ in range(300)], T0)
    await engine.close()

    children = [_child("lease", str(sqlite_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)]
    children.append(
        _child("lease", str(sqlite_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    )
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
    leased = [orjson.loads(child.communicate(timeout=60)[0]) for child in children]

    assert all(leased), "both processes leased"
    assert not set(leased[0]) & set(leased[1])
    assert sorted(leased[0] + leased[1]) == sorted(a.id for a in answers)


def test_processes_creating_one_new_file_at_the_same_moment_all_succeed(
    tmp_path: Path,
) -> None:
    # Switching a new file to WAL races: SQLite answers one of two processes "locked"
    # at once instead of waiting out the busy timeout. Without enable_wal's retry,
    # about one process in four failed here (and an API process of the chaos stack
    # exited at start-up).
    for attempt in range(4):
        path = tmp_path / f"fresh-{attempt}.db"
        at = str(time.time() + 1.0)  # after every child has imported wxgate
        children = [_child("schema", str(path), at, stderr=subprocess.PIPE) for _ in range(6)]
        errors = [child.communicate(timeout=60)[1].decode() for child in children]
        failures = [
            error[-500:] for child, error in zip(children, errors, strict=True) if child.returncode
        ]
        assert failures == []
        count = raw(path).execute("SELECT count(*) FROM messages").fetchone()[0]
        assert count == 6


# -- tokens ---------------------------------------------------------------------------


async def test_token_store_lives_in_the_same_file(sqlite_path: Path) -> None:
    first = SqliteBackend(sqlite_path)
    await first.start()
    token = CachedToken("ACCESS_TOKEN_IN_FILE", expires_at=T0 + 7200, fetched_at=T0, fence=3)
    assert await first.token_store().save("shop", token)
    await first.close()

    files = {p.name for p in sqlite_path.parent.iterdir()}
    assert files <= {sqlite_path.name, f"{sqlite_path.name}-wal", f"{sqlite_path.name}-shm"}
    second = SqliteBackend(sqlite_path)
    await second.start()
    try:
        loaded = await second.token_store().load("shop")
    finally:
        await second.close()
    assert loaded is not None and loaded.token == token.token
