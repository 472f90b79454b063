"""One app's access token: fetched once per lifetime, refreshed early, shared through a store.

`TokenManager` hands every send a valid token. However many coroutines ask at
once, one fetch happens (an in-process shared task); however many processes
share a `TokenStore`, one of them fetches (the store's lock, with a fencing
number so a stalled holder cannot overwrite a newer token) and the others read
its result. Tokens are refreshed before they run out, in the background. It
also watches for another system refreshing the same appid's token (the cause of
sporadic 40001s, docs/wechat-protocol.md §8) and keeps force_refresh within
WeChat's 20 a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple, Protocol

from pydantic import SecretStr

from wxgate.clock import Clock, SystemClock
from wxgate.config import TokenMode
from wxgate.observability import get_logger, register_secret
from wxgate.wechat.errors import ConfigError, Endpoint, TransientError, WeChatError
from wxgate.wechat.tokenstore import CachedToken, TokenStore, mask

# WeChat refuses force_refresh=true more often than this, or more than this many
# times a day (docs/wechat-protocol.md §1.2); days are Beijing days, like quotas'.
FORCE_REFRESH_MIN_INTERVAL_S = 30.0
FORCE_REFRESH_DAILY_LIMIT = 20
BEIJING_UTC_OFFSET_S = 8 * 3600
DAY_S = 86_400
# A token younger than this rejected as "not latest" (40001) while far from its end
# was retired by someone else's refresh, not by ours.
FOREIGN_REFRESH_WINDOW_S = 600.0
FOREIGN_REFRESH_FIX = "use stable mode everywhere, or `external` mode fed by one owner"
_FOREIGN_CAUSES = {
    "classic": "another system fetches this appid's token from /cgi-bin/token, "
    "which retires ours 5 minutes later",
    "stable": "another system force-refreshes this appid's stable token",
    "external": "a system other than the external source refreshes this appid's token",
}
# How often a process that lost the lock looks for the winner's token.
POLL_INTERVAL_S = 0.05
# stable_token hands back the same token until its last 5 minutes, so an early
# refresh may bring nothing new; try again no sooner than this.
EARLY_REFRESH_PAUSE_S = 30.0

log = get_logger(__name__)


class FetchedToken(NamedTuple):
    """What a token endpoint answered."""

    access_token: str
    expires_in: int

    def __repr__(self) -> str:
        shown = mask(self.access_token)
        return f"FetchedToken(access_token='{shown}', expires_in={self.expires_in})"


class TokenSource(Protocol):
    """The two token endpoints (client.TokenFetcher bound to an api_base)."""

    async def classic_token(self, appid: str, secret: str) -> FetchedToken: ...

    async def stable_token(
        self, appid: str, secret: str, *, force_refresh: bool = False
    ) -> FetchedToken: ...


class FetchEndpoint(StrEnum):
    """The `endpoint` passed to `on_fetch` (a bounded metric label)."""

    TOKEN = "token"
    STABLE_TOKEN = "stable_token"
    STABLE_TOKEN_FORCE = "stable_token_force"


class ForceRefreshTooSoonError(TransientError):
    """A forced refresh was asked for less than 30 s after the previous one."""


class ForceRefreshBudgetError(ConfigError):
    """The day's 20 forced refreshes are spent; WeChat would refuse a 21st."""


def beijing_day(now: float) -> int:
    """The number of the Beijing calendar day (UTC+8) that `now` (epoch seconds) falls in."""
    return math.floor((now + BEIJING_UTC_OFFSET_S) / DAY_S)


class TokenManager:
    """A valid access token for one app, on demand.

    `mode` picks the endpoint: "stable" (POST /cgi-bin/stable_token, normal mode),
    "classic" (GET /cgi-bin/token) or "external" (never fetch; read the token
    another system writes into the store). `on_fetch(endpoint, result)` is called
    after every fetch, with result "ok" or the error's category in lower case.
    `on_foreign_refresh(app)` is called each time another system is seen refreshing
    this appid's token (see `invalidate`).
    """

    def __init__(
        self,
        app: str,
        appid: str,
        secret: str | SecretStr,
        store: TokenStore,
        fetcher: TokenSource,
        *,
        mode: TokenMode = "stable",
        refresh_margin_s: float = 300.0,
        clock: Clock | None = None,
        lock_ttl_s: float = 15.0,
        on_fetch: Callable[[str, str], None] | None = None,
        external_wait_s: float = 2.0,
        on_foreign_refresh: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in ("stable", "classic", "external"):
            raise ValueError(f"unknown token mode {mode!r}")
        self.app = app
        self.mode = mode
        self._appid = appid
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        register_secret(self._secret.get_secret_value())
        self._store = store
        self._fetcher = fetcher
        self._margin = refresh_margin_s
        self._clock = clock if clock is not None else SystemClock()
        self._lock_ttl_s = lock_ttl_s
        self._on_fetch = on_fetch
        self._on_foreign_refresh = on_foreign_refresh
        self._external_wait_s = external_wait_s
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._cached: CachedToken | None = None
        self._rejected = ""  # the last token WeChat rejected: never adopted again
        self._flight: asyncio.Task[CachedToken] | None = None
        self._early_not_before = -math.inf

    async def get(self) -> str:
        """A valid token: the cached one at once (refreshing it in the background when it
        nears its end), or, when there is none or it ran out, one fetched in the foreground."""
        now = self._clock.now()
        cached = self._cached
        if cached is not None and cached.remaining(now) > 0:
            if cached.remaining(now) < self._margin:
                self._refresh_early()
            return cached.token
        return (await self._join(need_s=0.0)).token

    async def invalidate(self, token: str, *, superseded: bool = False) -> None:
        """WeChat rejected `token`: expire it in the store if it is still the stored one,
        and forget it here if it is ours; a newer token is left alone.

        `superseded` says WeChat called it "not latest" (40001). When the store still
        held it (no process of ours replaced it) and it was far from its end and young
        (any age in classic mode, where a foreign fetch retires ours 5 minutes later),
        another system refreshed this appid's token: a WARNING and `on_foreign_refresh`.

        Forgotten here first, and never adopted again: a send that reads the cache, or
        a flight that reads the store, while the store's write is in flight (a group
        commit takes a millisecond or two) must not pick the rejected token up."""
        rejected = (
            self._cached if self._cached is not None and self._cached.token == token else None
        )
        self._rejected = token
        if rejected is not None:
            self._cached = None
        if superseded and rejected is None:
            stored = await self._store.load(self.app)
            rejected = stored if stored is not None and stored.token == token else None
        was_stored = await self._store.invalidate(self.app, token)
        if superseded and was_stored and rejected is not None and self._retired_early(rejected):
            self._report_foreign_refresh(rejected)

    async def refresh(self, *, force: bool = False) -> CachedToken:
        """Fetch now (the operator asked). `force` makes WeChat drop the current token
        (force_refresh=true); allowed once per 30 s across every process of the store."""
        if self.mode == "external":
            raise ConfigError(
                None,
                f"app {self.app} reads its token from an external source; wxgate never fetches",
                endpoint=Endpoint.TOKEN_FETCH,
            )
        while self._flight is not None and not self._flight.done():
            await asyncio.wait([self._flight])
        return await self._start_flight(need_s=math.inf, force=force)

    async def put_external(self, token: str, expires_in: float) -> CachedToken:
        """Store a token obtained elsewhere (`wxgate token set`), under the fetch lock."""
        register_secret(token)
        fence = await self._acquire_lock()
        try:
            now = self._clock.now()
            cached = CachedToken(token, now + expires_in, now, fence)
            await self._store.save(self.app, cached)
        finally:
            await self._store.unlock(self.app, self._owner)
        return self._adopt(cached)

    async def current(self) -> CachedToken | None:
        """The token the store holds (its repr is masked), for `wxgate token show`."""
        stored = await self._store.load(self.app)
        return stored if stored is not None else self._cached

    async def close(self) -> None:
        """Stop a refresh in flight (it releases the lock on its way out)."""
        flight, self._flight = self._flight, None
        if flight is not None and not flight.done():
            flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, WeChatError):
                await flight

    def _refresh_early(self) -> None:
        now = self._clock.monotonic()
        if (self._flight is not None and not self._flight.done()) or now < self._early_not_before:
            return
        self._early_not_before = now + EARLY_REFRESH_PAUSE_S
        self._flight = self._new_flight(need_s=self._margin, force=False)

    async def _join(self, need_s: float) -> CachedToken:
        if self._flight is None or self._flight.done():
            self._flight = self._new_flight(need_s=need_s, force=False)
        # shield: a caller that gives up must not cancel the fetch others wait for.
        return await asyncio.shield(self._flight)

    async def _start_flight(self, need_s: float, force: bool) -> CachedToken:
        self._flight = self._new_flight(need_s=need_s, force=force)
        return await asyncio.shield(self._flight)

    def _new_flight(self, need_s: float, force: bool) -> asyncio.Task[CachedToken]:
        task = asyncio.create_task(self._obtain(need_s, force), name=f"token-refresh-{self.app}")
        task.add_done_callback(self._flight_done)
        return task

    def _flight_done(self, task: asyncio.Task[CachedToken]) -> None:
        # Collected here so a background refresh nobody awaits still reports its failure.
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.debug("token refresh failed", app=self.app, error=str(error))

    async def _obtain(self, need_s: float, force: bool) -> CachedToken:
        """A token with more than `need_s` seconds left: the store's, or one we fetch under
        the store's lock. Losers of the lock poll the store until the winner has saved, or
        until the lock is free again (released, or its holder's lease ran out)."""
        if self.mode == "external":
            wait_s = self._external_wait_s if need_s == 0 else 0.0
            return await self._read_external(need_s, wait_s)
        while True:
            if not force:
                stored = await self._store.load(self.app)
                if self._lasts(stored, need_s):
                    return self._adopt(stored)
            fence = await self._store.try_lock(self.app, self._owner, self._lock_ttl_s)
            if fence is not None:
                return await self._fetch_locked(fence, need_s, force)
            await self._clock.sleep(POLL_INTERVAL_S)

    async def _fetch_locked(self, fence: int, need_s: float, force: bool) -> CachedToken:
        try:
            # Another process may have saved a token between our read and our lock.
            stored = await self._store.load(self.app)
            if not force and self._lasts(stored, need_s):
                return self._adopt(stored)
            counted = force and self.mode == "stable"  # only stable_token's force is limited
            if force:
                self._check_force_interval(stored)
            if counted:
                self._check_force_budget(stored)
            started = self._clock.now()
            fetched = await self._fetch(force)
            cached = _fetched_token(fetched, started, fence, stored, force, counted)
            if not await self._store.save(self.app, cached):
                # Our lease ran out and a newer holder saved first: its token wins.
                newer = await self._store.load(self.app)
                cached = newer if newer is not None and self._lasts(newer, 0.0) else cached
            return self._adopt(cached)
        finally:
            await self._store.unlock(self.app, self._owner)

    def _retired_early(self, token: CachedToken) -> bool:
        now = self._clock.now()
        young = now - token.fetched_at < FOREIGN_REFRESH_WINDOW_S or self.mode == "classic"
        return young and token.remaining(now) > self._margin

    def _report_foreign_refresh(self, token: CachedToken) -> None:
        log.warning(
            f"another system refreshes this appid's token: {FOREIGN_REFRESH_FIX}",
            app=self.app,
            mode=self.mode,
            likely_cause=_FOREIGN_CAUSES[self.mode],
            token_age_s=round(self._clock.now() - token.fetched_at),
        )
        if self._on_foreign_refresh is not None:
            self._on_foreign_refresh(self.app)

    def _check_force_budget(self, stored: CachedToken | None) -> None:
        if _forced_today(stored, self._clock.now()) >= FORCE_REFRESH_DAILY_LIMIT:
            raise ForceRefreshBudgetError(
                None,
                f"force refresh of app {self.app} refused: the {FORCE_REFRESH_DAILY_LIMIT} "
                "forced refreshes WeChat allows a day are spent; the count restarts at "
                "00:00 Beijing time",
                endpoint=Endpoint.TOKEN_FETCH,
            )

    def _check_force_interval(self, stored: CachedToken | None) -> None:
        if stored is None or stored.forced_at <= 0:
            return
        wait_s = stored.forced_at + FORCE_REFRESH_MIN_INTERVAL_S - self._clock.now()
        if wait_s > 0:
            raise ForceRefreshTooSoonError(
                None,
                f"force refresh of app {self.app} refused: the last one was less than "
                f"{FORCE_REFRESH_MIN_INTERVAL_S:.0f} s ago; try again in {math.ceil(wait_s)} s",
                endpoint=Endpoint.TOKEN_FETCH,
            )

    async def _fetch(self, force: bool) -> FetchedToken:
        secret = self._secret.get_secret_value()
        if self.mode == "classic":
            endpoint = FetchEndpoint.TOKEN
        else:
            endpoint = FetchEndpoint.STABLE_TOKEN_FORCE if force else FetchEndpoint.STABLE_TOKEN
        try:
            if endpoint is FetchEndpoint.TOKEN:
                fetched = await self._fetcher.classic_token(self._appid, secret)
            else:
                fetched = await self._fetcher.stable_token(self._appid, secret, force_refresh=force)
        except WeChatError as error:
            self._report(endpoint, error.category.value.lower())
            raise
        self._report(endpoint, "ok")
        register_secret(fetched.access_token)
        return fetched

    async def _read_external(self, need_s: float, wait_s: float) -> CachedToken:
        deadline = self._clock.monotonic() + wait_s
        while True:
            stored = await self._store.load(self.app)
            if self._lasts(stored, need_s):
                return self._adopt(stored)
            if self._clock.monotonic() >= deadline:
                raise ConfigError(
                    None,
                    f"no token from the external source for app {self.app}",
                    endpoint=Endpoint.TOKEN_FETCH,
                )
            await self._clock.sleep(POLL_INTERVAL_S)

    async def _acquire_lock(self) -> int:
        while True:
            fence = await self._store.try_lock(self.app, self._owner, self._lock_ttl_s)
            if fence is not None:
                return fence
            await self._clock.sleep(POLL_INTERVAL_S)

    def _lasts(self, token: CachedToken | None, need_s: float) -> bool:
        return (
            token is not None
            and token.token != self._rejected
            and token.remaining(self._clock.now()) > need_s
        )

    def _adopt(self, token: CachedToken) -> CachedToken:
        register_secret(token.token)
        self._cached = token
        return token

    def _report(self, endpoint: FetchEndpoint, result: str) -> None:
        if self._on_fetch is not None:
            self._on_fetch(endpoint.value, result)


def _forced_today(stored: CachedToken | None, now: float) -> int:
    """How many forced refreshes the store counts for the Beijing day of `now`."""
    if stored is None or stored.forced_day != beijing_day(now):
        return 0
    return stored.forced_count


def _fetched_token(
    fetched: FetchedToken,
    started: float,
    fence: int,
    stored: CachedToken | None,
    force: bool,
    counted: bool,
) -> CachedToken:
    """The record of a fetch, carrying the force-refresh history over from `stored`."""
    if counted:
        forced_count, forced_day = _forced_today(stored, started) + 1, beijing_day(started)
    else:
        forced_count, forced_day = (stored.forced_count, stored.forced_day) if stored else (0, 0)
    return CachedToken(
        token=fetched.access_token,
        expires_at=started + fetched.expires_in,
        fetched_at=started,
        fence=fence,
        forced_at=started if force else (stored.forced_at if stored else 0.0),
        forced_count=forced_count,
        forced_day=forced_day,
    )
