"""The token guard against the sandbox over real HTTP (issue 12 point 6): another system
refreshing this appid's token is told apart from our own refreshes, logged with the
fix and reported to a hook; stable_token's force refresh stays within 20 a Beijing day,
counted in the store that every process shares (docs/wechat-protocol.md §1)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from wxgate.clock import FakeClock
from wxgate.config import TokenMode
from wxgate.wechat.client import AccountClient, SendOk, TokenFetcher, WeChatHttp
from wxgate.wechat.errors import Category
from wxgate.wechat.template import DataItem, TemplateMessage
from wxgate.wechat.token import (
    FORCE_REFRESH_DAILY_LIMIT,
    ForceRefreshBudgetError,
    TokenManager,
    beijing_day,
)
from wxgate.wechat.tokenstore import CachedToken, MemoryTokenStore, TokenStore

from ..conftest import sqlite_token_store

APP = "default"
APPID = "wxsandbox000000001"
SECRET = "sandbox-secret"
FIX = "use stable mode everywhere, or `external` mode fed by one owner"


def early_in_a_beijing_day() -> float:
    """An hour after the last Beijing midnight: a test's few minutes stay in one day."""
    now = time.time()
    return now - (now + 8 * 3600) % 86_400 + 3600


@pytest.fixture
async def http() -> AsyncIterator[WeChatHttp]:
    async with WeChatHttp(read_timeout_s=5.0) as client:
        yield client


@pytest.fixture
def fetcher(http: WeChatHttp, sandbox: Any) -> TokenFetcher:
    return TokenFetcher(http, sandbox.base_url)


class Guarded:
    """A TokenManager (and a client on it) whose foreign-refresh reports are kept."""

    def __init__(
        self,
        fetcher: TokenFetcher,
        *,
        mode: TokenMode = "stable",
        store: TokenStore | None = None,
        clock: FakeClock | None = None,
        http: WeChatHttp | None = None,
        base_url: str = "",
    ) -> None:
        self.reports: list[str] = []
        self.tokens = TokenManager(
            APP,
            APPID,
            SECRET,
            store if store is not None else MemoryTokenStore(),
            fetcher,
            mode=mode,
            clock=clock,
            on_foreign_refresh=self.reports.append,
        )
        self.client = AccountClient(http, self.tokens, base_url) if http is not None else None

    async def send(self) -> object:
        assert self.client is not None
        message = TemplateMessage("oUSER0001", "tmpl-order-shipped", {"thing1": DataItem("x")})
        return await self.client.send_template(message)


async def test_a_foreign_force_refresh_of_a_fresh_stable_token_is_reported_with_the_fix(
    http: WeChatHttp, fetcher: TokenFetcher, sandbox: Any
) -> None:
    ours = Guarded(fetcher, http=http, base_url=sandbox.base_url)
    await ours.tokens.get()
    await fetcher.stable_token(APPID, SECRET, force_refresh=True)  # another system

    with structlog.testing.capture_logs() as logged:
        assert isinstance(await ours.send(), SendOk)  # recovered by one refresh and one resend

    assert ours.reports == [APP]
    [warning] = [entry for entry in logged if entry["log_level"] == "warning"]
    assert FIX in warning["event"]
    assert "force-refreshes" in warning["likely_cause"]
    assert (warning["app"], warning["mode"]) == (APP, "stable")


async def test_a_foreign_classic_fetch_is_reported_whatever_the_age_of_our_token(
    http: WeChatHttp, fetcher: TokenFetcher, sandbox: Any, sandbox_control: Any
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    ours = Guarded(fetcher, mode="classic", clock=clock, http=http, base_url=sandbox.base_url)
    await ours.tokens.get()
    clock.advance(3600)  # an hour old, far from its end
    await fetcher.classic_token(APPID, SECRET)  # another system: ours lives 5 more minutes
    await sandbox_control.advance_clock(301)
    clock.advance(301)

    assert isinstance(await ours.send(), SendOk)
    assert ours.reports == [APP]


async def test_a_stable_token_older_than_ten_minutes_is_not_blamed_on_another_system(
    fetcher: TokenFetcher,
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    ours = Guarded(fetcher, clock=clock)
    token = await ours.tokens.get()
    clock.advance(601)
    await ours.tokens.invalidate(token, superseded=True)
    assert ours.reports == []


async def test_a_token_near_its_end_is_not_blamed_on_another_system(
    fetcher: TokenFetcher,
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    ours = Guarded(fetcher, mode="classic", clock=clock)
    token = await ours.tokens.get()
    stored = await ours.tokens.current()
    assert stored is not None
    clock.advance(stored.remaining(clock.now()) - 200)  # under the 300 s margin
    await ours.tokens.invalidate(token, superseded=True)
    assert ours.reports == []


async def test_a_token_our_own_process_replaced_is_not_blamed_on_another_system(
    http: WeChatHttp, fetcher: TokenFetcher, sandbox: Any
) -> None:
    store = MemoryTokenStore()
    ours = Guarded(fetcher, store=store, http=http, base_url=sandbox.base_url)
    sibling = Guarded(fetcher, store=store)
    await ours.tokens.get()
    await sibling.tokens.refresh(force=True)  # an operator's `wxgate token refresh --force`
    assert isinstance(await ours.send(), SendOk)
    assert ours.reports == [] and sibling.reports == []


async def test_a_token_rejected_for_another_reason_is_not_blamed_on_another_system(
    http: WeChatHttp, fetcher: TokenFetcher, sandbox: Any, sandbox_control: Any
) -> None:
    ours = Guarded(fetcher, http=http, base_url=sandbox.base_url)
    await ours.tokens.get()
    await sandbox_control.set_faults(expire_tokens=True)  # 42001, not 40001
    assert isinstance(await ours.send(), SendOk)
    assert ours.reports == []


async def test_one_foreign_refresh_is_reported_once_by_the_processes_sharing_a_store(
    fetcher: TokenFetcher,
) -> None:
    store = MemoryTokenStore()
    one, other = Guarded(fetcher, store=store), Guarded(fetcher, store=store)
    token = await one.tokens.get()
    assert await other.tokens.get() == token
    await one.tokens.invalidate(token, superseded=True)
    await other.tokens.invalidate(token, superseded=True)  # its late 40001 for the same token
    assert one.reports + other.reports == [APP]


# ---------------------------------------------------------------------------
# The force-refresh budget


async def test_the_21st_forced_refresh_of_a_beijing_day_is_refused_without_calling_wechat(
    fetcher: TokenFetcher, sandbox_control: Any
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    store = MemoryTokenStore(clock=clock)
    ours = Guarded(fetcher, store=store, clock=clock)
    await ours.tokens.get()
    for _ in range(FORCE_REFRESH_DAILY_LIMIT):
        clock.advance(31)
        await sandbox_control.advance_clock(31)
        await ours.tokens.refresh(force=True)
    clock.advance(31)
    with pytest.raises(ForceRefreshBudgetError) as refused:
        await ours.tokens.refresh(force=True)
    assert refused.value.category is Category.CONFIG
    assert "20 forced refreshes" in str(refused.value)
    stats = await sandbox_control.stats()
    assert stats["token_fetches"]["stable_token_force"] == FORCE_REFRESH_DAILY_LIMIT


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, sqlite_path: Path) -> AsyncIterator[TokenStore]:
    if request.param == "memory":
        yield MemoryTokenStore()
        return
    async with sqlite_token_store(sqlite_path) as made:
        yield made


def spent_budget(now: float, day: int) -> CachedToken:
    return CachedToken(
        "90_shared-by-every-process",
        expires_at=now + 7000,
        fetched_at=now - 200,
        fence=1,
        forced_at=now - 3600,
        forced_count=FORCE_REFRESH_DAILY_LIMIT,
        forced_day=day,
    )


async def test_the_budget_is_read_from_the_store_every_process_shares(
    fetcher: TokenFetcher, sandbox_control: Any, store: TokenStore
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    now = clock.now()
    await store.save(APP, spent_budget(now, beijing_day(now)))
    with pytest.raises(ForceRefreshBudgetError):
        await Guarded(fetcher, store=store, clock=clock).tokens.refresh(force=True)
    assert (await sandbox_control.stats())["token_fetches_total"] == 0


async def test_the_budget_starts_again_on_the_next_beijing_day(
    fetcher: TokenFetcher, store: TokenStore
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    now = clock.now()
    await store.save(APP, spent_budget(now, beijing_day(now) - 1))  # yesterday's
    forced = await Guarded(fetcher, store=store, clock=clock).tokens.refresh(force=True)
    assert (forced.forced_count, forced.forced_day) == (1, beijing_day(now))
    assert await store.load(APP) == forced


async def test_a_normal_fetch_carries_the_days_count_over(
    fetcher: TokenFetcher, store: TokenStore
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    now = clock.now()
    spent = spent_budget(now, beijing_day(now))
    await store.save(APP, spent)
    await store.invalidate(APP, spent.token)
    fetched = await Guarded(fetcher, store=store, clock=clock).tokens.refresh()
    assert (fetched.forced_count, fetched.forced_day) == (
        FORCE_REFRESH_DAILY_LIMIT,
        spent.forced_day,
    )


async def test_classic_mode_forces_are_not_counted_against_stable_tokens_budget(
    fetcher: TokenFetcher, store: TokenStore
) -> None:
    clock = FakeClock(start=early_in_a_beijing_day())
    now = clock.now()
    await store.save(APP, spent_budget(now, beijing_day(now)))
    forced = await Guarded(fetcher, mode="classic", store=store, clock=clock).tokens.refresh(
        force=True
    )
    assert forced.forced_count == FORCE_REFRESH_DAILY_LIMIT


def test_beijing_days_turn_at_1600_utc() -> None:
    midnight_beijing = 1_700_000_000 - (1_700_000_000 + 8 * 3600) % 86_400
    assert beijing_day(midnight_beijing) == beijing_day(midnight_beijing - 1) + 1
    assert beijing_day(midnight_beijing) == beijing_day(midnight_beijing + 86_399)
