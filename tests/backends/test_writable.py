"""`Backend.writable()`, the readiness check `storage_writable`: True while the store
takes writes, False while it answers but refuses them, True again once it takes them,
with no restart.

SQLite: a full disk (an 8 MB tmpfs of the test's own, kept full by another writer;
skipped, saying why, where it cannot be mounted). The writer then also checkpoints the
WAL and truncates it, so the space the WAL held goes back to the volume. Redis: a
redis-server of the test's own that refuses writes (`min-replicas-to-write`, as it
refuses them with MISCONF when it cannot persist).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.chaos.processes import Service, redis_answers
from tests.conftest import free_port
from tests.small_volume import Filler
from wxgate.backends.base import Backend, NewMessage, StorageUnavailable
from wxgate.backends.sqlite import SqliteBackend
from wxgate.backends.sqlite_db import WRITABLE_AGAIN_S


def messages(count: int, tag: str) -> list[NewMessage]:
    payload = {"touser": f"o{tag}", "template_id": "tpl", "data": {"thing1": {"value": "x" * 200}}}
    return [NewMessage("shop", payload) for _ in range(count)]


async def test_an_open_store_is_writable(backend: Backend) -> None:
    assert await backend.writable()


async def test_a_closed_store_is_not_writable(backend: Backend) -> None:
    await backend.close()
    assert not await backend.writable()


# -- SQLite on a full disk ----------------------------------------------------------------


async def test_sqlite_on_a_full_disk_is_not_writable_until_space_is_back(volume: Path) -> None:
    backend = SqliteBackend(volume / "full.db", busy_timeout_s=1.0)
    await backend.start()
    filler = Filler(volume)
    try:
        for n in range(10):
            await backend.enqueue(messages(100, f"before{n}"), time.time())
        wal = volume / "full.db-wal"
        wal_before = wal.stat().st_size
        filler.start()
        with pytest.raises(StorageUnavailable, match="full"):
            for n in range(100):  # far more than the volume holds
                await backend.enqueue(messages(100, f"full{n}"), time.time())
        assert not await backend.writable()

        filler.stop()
        await asyncio.sleep(WRITABLE_AGAIN_S)
        writable = await backend.writable()
        wal_after = wal.stat().st_size
        [stored] = await backend.enqueue(messages(1, "after"), time.time())
    finally:
        filler.stop()
        await backend.close()
    assert writable and stored.created
    # Checkpointed and truncated: the WAL gave its space back instead of keeping it.
    assert wal_after < wal_before / 4, (wal_before, wal_after)


# -- Redis refusing writes ----------------------------------------------------------------


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[int]:
    """A redis-server of this test's own; its port."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    port = free_port()
    argv = ("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "")
    server = Service("redis", argv, tmp_path / "redis.log")
    await server.start()
    await server.until(lambda: redis_answers(port), 20, "PING answer")
    yield port
    await server.stop()


async def test_redis_that_refuses_writes_is_not_writable_until_it_takes_them(
    own_redis: int,
) -> None:
    from wxgate.backends.redis import RedisBackend

    backend = RedisBackend(f"redis://127.0.0.1:{own_redis}/0", prefix="writable")
    await backend.start()
    admin = aioredis.Redis(port=own_redis)
    try:
        assert await backend.writable()
        await admin.config_set("min-replicas-to-write", 1)  # no replica: writes refused
        refused = await backend.writable()
        answers = await backend.ping()
        await admin.config_set("min-replicas-to-write", 0)
        again = await backend.writable()
    finally:
        await admin.aclose()
        await backend.close()
    assert (answers, refused, again) == (True, False, True)
