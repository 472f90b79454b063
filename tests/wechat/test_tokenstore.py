"""The TokenStore contract, run against the memory store and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from wxgate.clock import FakeClock
from wxgate.wechat.tokenstore import CachedToken, MemoryTokenStore, TokenStore

from ..conftest import sqlite_token_store

APP = "default"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, sqlite_path: Path, clock: FakeClock
) -> AsyncIterator[TokenStore]:
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            made: TokenStore = MemoryTokenStore(clock=clock)
            stack.push_async_callback(made.close)
        else:
            made = await stack.enter_async_context(sqlite_token_store(sqlite_path, clock))
        yield made


def token(value: str, fence: int, expires_at: float = 2e9) -> CachedToken:
    return CachedToken(token=value, expires_at=expires_at, fetched_at=1.7e9, fence=fence)


async def test_a_saved_token_is_loaded_back_whole(store: TokenStore) -> None:
    saved = CachedToken(
        "90_abc",
        expires_at=1.7e9 + 7200,
        fetched_at=1.7e9,
        fence=3,
        forced_at=5.0,
        forced_count=7,  # the day's force refreshes (WeChat allows 20)
        forced_day=19_676,
    )
    assert await store.save(APP, saved)
    assert await store.load(APP) == saved
    assert await store.load("other-app") is None


async def test_invalidate_keeps_the_days_force_refresh_count(store: TokenStore) -> None:
    saved = CachedToken("90_abc", 2e9, 1.7e9, fence=1, forced_count=3, forced_day=19_676)
    await store.save(APP, saved)
    await store.invalidate(APP, "90_abc")
    loaded = await store.load(APP)
    assert loaded is not None and (loaded.forced_count, loaded.forced_day) == (3, 19_676)


async def test_a_stale_fence_cannot_overwrite_a_newer_token(store: TokenStore) -> None:
    assert await store.save(APP, token("newer", fence=5))
    assert not await store.save(APP, token("older", fence=4))
    loaded = await store.load(APP)
    assert loaded is not None and loaded.token == "newer"


async def test_an_equal_or_higher_fence_replaces_the_token(store: TokenStore) -> None:
    await store.save(APP, token("first", fence=2))
    assert await store.save(APP, token("second", fence=2))
    assert await store.save(APP, token("third", fence=7))
    loaded = await store.load(APP)
    assert loaded is not None and loaded.token == "third"


async def test_invalidate_expires_the_token_when_it_is_still_the_stored_one(
    store: TokenStore,
) -> None:
    await store.save(APP, token("current", fence=1))
    assert await store.invalidate(APP, "current")
    loaded = await store.load(APP)
    assert loaded is not None and loaded.expires_at == 0 and loaded.fence == 1
    assert not await store.invalidate(APP, "current")


async def test_invalidate_does_not_touch_a_newer_token(store: TokenStore) -> None:
    await store.save(APP, token("newer", fence=2))
    assert not await store.invalidate(APP, "rejected-older")
    loaded = await store.load(APP)
    assert loaded is not None and loaded.token == "newer" and loaded.expires_at == 2e9


async def test_an_invalidated_token_keeps_its_fence_against_older_fetches(
    store: TokenStore,
) -> None:
    await store.save(APP, token("current", fence=4))
    await store.invalidate(APP, "current")
    assert not await store.save(APP, token("from-a-stalled-holder", fence=3))


async def test_the_lock_has_one_holder_until_it_is_released(store: TokenStore) -> None:
    first = await store.try_lock(APP, "owner-a", ttl_s=15)
    assert first is not None
    assert await store.try_lock(APP, "owner-b", ttl_s=15) is None
    await store.unlock(APP, "owner-b")  # not the holder: no effect
    assert await store.try_lock(APP, "owner-b", ttl_s=15) is None
    await store.unlock(APP, "owner-a")
    second = await store.try_lock(APP, "owner-b", ttl_s=15)
    assert second is not None and second > first


async def test_a_lock_whose_lease_ran_out_can_be_taken(store: TokenStore, clock: FakeClock) -> None:
    first = await store.try_lock(APP, "stalled", ttl_s=15)
    clock.advance(14)
    assert await store.try_lock(APP, "waiting", ttl_s=15) is None
    clock.advance(2)
    second = await store.try_lock(APP, "waiting", ttl_s=15)
    assert first is not None and second is not None and second > first


async def test_locks_of_different_apps_are_independent(store: TokenStore) -> None:
    assert await store.try_lock("app-a", "owner", ttl_s=15) is not None
    assert await store.try_lock("app-b", "other", ttl_s=15) is not None


async def test_fences_keep_growing_across_releases(store: TokenStore) -> None:
    fences = []
    for _ in range(3):
        fence = await store.try_lock(APP, "owner", ttl_s=15)
        assert fence is not None
        fences.append(fence)
        await store.unlock(APP, "owner")
    assert fences == sorted(set(fences))


async def test_two_sqlite_stores_on_one_file_share_tokens_and_the_lock(sqlite_path: Path) -> None:
    async with sqlite_token_store(sqlite_path) as one, sqlite_token_store(sqlite_path) as two:
        fence = await one.try_lock(APP, "process-1", ttl_s=15)
        assert fence is not None
        assert await two.try_lock(APP, "process-2", ttl_s=15) is None
        await one.save(APP, token("shared", fence=fence))
        await one.unlock(APP, "process-1")
        loaded = await two.load(APP)
        assert loaded is not None and loaded.token == "shared"
        later = await two.try_lock(APP, "process-2", ttl_s=15)
        assert later is not None and later > fence


async def test_a_sqlite_token_survives_closing_and_reopening_the_file(sqlite_path: Path) -> None:
    async with sqlite_token_store(sqlite_path) as store:
        await store.save(APP, token("t", fence=1))
    with sqlite3.connect(sqlite_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with sqlite_token_store(sqlite_path) as reopened:
        loaded = await reopened.load(APP)
        assert loaded is not None and loaded.token == "t"


async def test_a_busy_sqlite_file_does_not_block_the_event_loop(sqlite_path: Path) -> None:
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(sqlite_token_store(sqlite_path))
        await _lock_waits_for_a_blocker_without_blocking_the_loop(store, sqlite_path)


async def _lock_waits_for_a_blocker_without_blocking_the_loop(
    store: TokenStore, sqlite_path: Path
) -> None:
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        locking = asyncio.create_task(store.try_lock(APP, "owner", ttl_s=15))
        # Ten ticks of the loop while the lock waits (however long a busy machine takes
        # to run them); a lock that blocked the loop would have given up by then.
        deadline = time.monotonic() + 30.0
        while ticks < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not locking.done()
        assert ticks >= 10
        blocker.execute("COMMIT")
        assert await asyncio.wait_for(locking, 5) is not None
    finally:
        ticker.cancel()
        blocker.close()


def test_cached_token_repr_never_shows_the_token() -> None:
    secret_token = "90_Q8YPWmSECRETSECRETSECRET"
    shown = repr(token(secret_token, fence=1))
    assert secret_token not in shown and "SECRET" not in shown
