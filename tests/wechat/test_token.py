"""TokenManager against the sandbox over real HTTP: one fetch per lifetime across
coroutines and processes, early refresh, compare-and-invalidate, fencing, the
force-refresh interval, external mode and the classification of fetch errors."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wxgate.clock import FakeClock
from wxgate.config import TokenMode
from wxgate.wechat.client import TokenFetcher, WeChatHttp
from wxgate.wechat.errors import Category, ConfigError, Endpoint
from wxgate.wechat.token import FetchedToken, ForceRefreshTooSoonError, TokenManager
from wxgate.wechat.tokenstore import MemoryTokenStore, TokenStore

from ..conftest import sqlite_token_store

APP = "default"
APPID = "wxsandbox000000001"
SECRET = "sandbox-secret"
HELPER = Path(__file__).with_name("token_process.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def http() -> AsyncIterator[WeChatHttp]:
    async with WeChatHttp(read_timeout_s=5.0) as client:
        yield client


@pytest.fixture
def fetcher(http: WeChatHttp, sandbox: Any) -> TokenFetcher:
    return TokenFetcher(http, sandbox.base_url)


class GatedFetcher:
    """The real HTTP fetcher behind a gate the test opens (a slow WeChat, in effect)."""

    def __init__(self, inner: TokenFetcher) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def _pass(self) -> None:
        self.waiting.set()
        await self.gate.wait()

    async def classic_token(self, appid: str, secret: str) -> FetchedToken:
        await self._pass()
        return await self.inner.classic_token(appid, secret)

    async def stable_token(
        self, appid: str, secret: str, *, force_refresh: bool = False
    ) -> FetchedToken:
        await self._pass()
        return await self.inner.stable_token(appid, secret, force_refresh=force_refresh)


def manager(
    store: TokenStore, fetcher: Any, *, mode: TokenMode = "stable", **options: Any
) -> TokenManager:
    secret = options.pop("secret", SECRET)
    return TokenManager(APP, APPID, secret, store, fetcher, mode=mode, **options)


async def fetches(control: Any) -> dict[str, int]:
    stats = await control.stats()
    return {**stats["token_fetches"], "total": stats["token_fetches_total"]}


async def reaches(control: Any, endpoint: str, count: int, timeout_s: float = 30.0) -> None:
    """Wait until the sandbox has counted `count` fetches at `endpoint` (not more)."""
    deadline = time.monotonic() + timeout_s
    while (seen := (await fetches(control))[endpoint]) < count:
        assert time.monotonic() < deadline, f"{endpoint}: {seen} fetches, expected {count}"
        await asyncio.sleep(0.01)
    assert seen == count


async def test_200_coroutines_asking_at_once_cause_one_fetch(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    tokens = manager(MemoryTokenStore(), fetcher)
    got = await asyncio.gather(*(tokens.get() for _ in range(200)))
    assert len(set(got)) == 1
    assert (await fetches(sandbox_control))["total"] == 1


async def test_four_processes_sharing_a_sqlite_store_fetch_once(
    sandbox: Any, sandbox_control: Any, sqlite_path: Path
) -> None:
    args = [sandbox.base_url, str(sqlite_path), APPID, SECRET]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HELPER),
            *args,
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        for proc in procs:  # every process is waiting; start them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert (await fetches(sandbox_control))["total"] == 1


async def test_a_token_near_its_end_is_returned_at_once_and_refreshed_in_the_background(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    clock = FakeClock()
    gated = GatedFetcher(fetcher)
    tokens = manager(MemoryTokenStore(clock=clock), gated, clock=clock, refresh_margin_s=300)
    first = await tokens.get()
    clock.advance(7000)  # 200 s left: inside the margin, still valid
    await sandbox_control.advance_clock(7000)
    gated.gate.clear()
    gated.waiting.clear()

    # The fetch is held until the gate opens: a get that waited on it would never return.
    assert await asyncio.wait_for(tokens.get(), 10) == first  # no wait on the fetch
    await asyncio.wait_for(gated.waiting.wait(), 10)  # the refresh did start
    assert await tokens.get() == first
    gated.gate.set()
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        current = await tokens.current()
        if current is not None and current.token != first:
            break
        await asyncio.sleep(0.01)
    second = await tokens.get()
    assert second != first
    assert (await fetches(sandbox_control))["stable_token"] == 2


async def test_an_expired_token_is_refreshed_before_get_returns(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    clock = FakeClock()
    tokens = manager(MemoryTokenStore(clock=clock), fetcher, clock=clock)
    first = await tokens.get()
    clock.advance(7300)
    await sandbox_control.advance_clock(7300)
    assert await tokens.get() != first
    assert (await fetches(sandbox_control))["stable_token"] == 2


async def test_an_early_refresh_that_brings_the_same_token_is_not_repeated_on_every_get(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    clock = FakeClock()
    # A margin wider than stable_token's own 5-minute rotation: WeChat hands back the
    # same token, so refreshing on every get would only burn calls.
    tokens = manager(MemoryTokenStore(clock=clock), fetcher, clock=clock, refresh_margin_s=1000)
    first = await tokens.get()
    clock.advance(6400)
    await sandbox_control.advance_clock(6400)
    assert await tokens.get() == first
    await reaches(sandbox_control, "stable_token", 2)  # the early refresh: same token back
    for _ in range(50):
        assert await tokens.get() == first
        await asyncio.sleep(0.002)
    assert (await fetches(sandbox_control))["stable_token"] == 2
    clock.advance(31)
    await tokens.get()
    await reaches(sandbox_control, "stable_token", 3)


async def test_a_rejected_token_is_replaced_by_the_next_get(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    store = MemoryTokenStore()
    tokens = manager(store, fetcher, mode="classic")
    first = await tokens.get()
    await tokens.invalidate(first)
    stored = await store.load(APP)
    assert stored is not None and stored.expires_at == 0
    assert await tokens.get() != first
    assert (await fetches(sandbox_control))["token"] == 2


async def test_invalidating_an_old_token_does_not_drop_a_newer_one(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    store = MemoryTokenStore()
    late, fresh = manager(store, fetcher, mode="classic"), manager(store, fetcher, mode="classic")
    old = await late.get()
    newer = (await fresh.refresh()).token
    await late.invalidate(old)  # a late 40001 for the token `fresh` already replaced
    await fresh.invalidate(old)
    stored = await store.load(APP)
    assert stored is not None and stored.token == newer and stored.expires_at > time.time()
    assert await late.get() == newer
    assert await fresh.get() == newer
    assert (await fetches(sandbox_control))["token"] == 2


async def test_a_holder_whose_lease_ran_out_cannot_overwrite_the_newer_token(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    store = MemoryTokenStore()
    gated = GatedFetcher(fetcher)
    gated.gate.clear()
    stalled = manager(store, gated, mode="classic", lock_ttl_s=0.2)
    prompt = manager(store, fetcher, mode="classic", lock_ttl_s=0.2)
    stalled_get = asyncio.create_task(stalled.get())
    await asyncio.wait_for(gated.waiting.wait(), 10)  # holds the lock, stuck in its fetch
    newer = await asyncio.wait_for(prompt.get(), 30)  # takes the lock once the lease ends
    gated.gate.set()
    assert await stalled_get == newer  # its own fetch lost to the higher fence
    stored = await store.load(APP)
    assert stored is not None and stored.token == newer
    assert (await fetches(sandbox_control))["token"] == 2


async def test_force_refresh_is_refused_within_30_seconds_even_from_another_process(
    fetcher: TokenFetcher, sandbox_control: Any, sqlite_path: Path
) -> None:
    clock = FakeClock()
    async with (
        sqlite_token_store(sqlite_path, clock) as store_a,
        sqlite_token_store(sqlite_path) as store_b,
    ):
        one = manager(store_a, fetcher, clock=clock)
        other = manager(store_b, fetcher, clock=clock)
        before = await one.get()
        forced = await one.refresh(force=True)
        assert forced.token != before
        clock.advance(20)
        with pytest.raises(ForceRefreshTooSoonError) as refused:
            await other.refresh(force=True)
        assert "30 s" in str(refused.value)
        clock.advance(11)
        await sandbox_control.advance_clock(31)
        again = await other.refresh(force=True)
        assert again.token != forced.token
        assert (await fetches(sandbox_control))["stable_token_force"] == 2


async def test_external_mode_reads_the_store_and_never_fetches(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    store = MemoryTokenStore()
    writer = manager(store, fetcher, mode="external")
    reader = manager(store, fetcher, mode="external")
    await writer.put_external("90_from-the-central-token-service", 7200)
    assert await reader.get() == "90_from-the-central-token-service"
    with pytest.raises(ConfigError):
        await reader.refresh()
    assert (await fetches(sandbox_control))["total"] == 0


async def test_external_mode_without_a_token_is_a_config_error(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    tokens = manager(MemoryTokenStore(), fetcher, mode="external", external_wait_s=0.2)
    with pytest.raises(ConfigError) as missing:
        await tokens.get()
    assert missing.value.category is Category.CONFIG
    assert "external source" in str(missing.value)
    assert (await fetches(sandbox_control))["total"] == 0


async def test_external_mode_picks_up_a_token_written_while_it_waits(
    fetcher: TokenFetcher,
) -> None:
    store = MemoryTokenStore()
    reader = manager(store, fetcher, mode="external", external_wait_s=2.0)
    writer = manager(store, fetcher, mode="external")
    await writer.put_external("90_old", 7200)
    assert await reader.get() == "90_old"
    await reader.invalidate("90_old")
    waiting = asyncio.create_task(reader.get())
    await asyncio.sleep(0.15)
    assert not waiting.done()
    await writer.put_external("90_new", 7200)
    assert await asyncio.wait_for(waiting, 10) == "90_new"  # its own wait is 2 s


@pytest.mark.parametrize(
    ("mode", "endpoint", "errcode"),
    [("stable", "stable_token", 40125), ("classic", "token", 40001)],
)
async def test_a_wrong_secret_is_a_config_error_of_the_token_fetch(
    fetcher: TokenFetcher, mode: TokenMode, endpoint: str, errcode: int
) -> None:
    reported: list[tuple[str, str]] = []
    tokens = manager(
        MemoryTokenStore(),
        fetcher,
        mode=mode,
        secret="wrong-secret-1234",
        on_fetch=lambda *report: reported.append(report),
    )
    with pytest.raises(ConfigError) as wrong:
        await tokens.get()
    assert wrong.value.errcode == errcode
    assert wrong.value.category is Category.CONFIG
    assert wrong.value.endpoint is Endpoint.TOKEN_FETCH
    assert reported == [(endpoint, "config")]
    assert "wrong-secret-1234" not in str(wrong.value)


async def test_a_failed_fetch_leaves_the_lock_free_for_the_next_attempt(
    fetcher: TokenFetcher, sandbox_control: Any, sqlite_path: Path
) -> None:
    async with sqlite_token_store(sqlite_path) as store:
        lease_s = 60.0  # a failed fetch that kept the lock would cost a wait this long
        tokens = manager(store, fetcher, secret="wrong-secret-1234", lock_ttl_s=lease_s)
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(ConfigError):
                await tokens.get()
        assert time.monotonic() - started < lease_s / 3  # nobody waited for the lease
        assert (await fetches(sandbox_control))["stable_token"] == 3


async def test_the_token_is_masked_in_every_repr(fetcher: TokenFetcher) -> None:
    tokens = manager(MemoryTokenStore(), fetcher)
    token = await tokens.get()
    current = await tokens.current()
    assert token not in repr(current)
    assert token not in repr(FetchedToken(token, 7200))
    assert hashlib.sha256(token.encode()).hexdigest() not in repr(current)
