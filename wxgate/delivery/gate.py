"""The gate: whether an app may send now, per app and shared by a worker's sends.

For each configured app it holds the circuit breaker, the send budget (permits of
the app's shared token bucket), the cap on messages held at once, and a cached view
of the pauses every worker shares through storage (QUOTA until the reset, CONFIG
until an operator resumes). The worker asks it which apps to lease and, right
before each request, whether the request may go out.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from typing import NamedTuple

from wxgate.backends.base import Backend, Lease, Pause, PauseReason
from wxgate.clock import Clock
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery.breaker import BreakerState, CircuitBreaker
from wxgate.delivery.events import AppPaused, AppResumed, BreakerChanged, WorkerEvent
from wxgate.delivery.messagelog import MessageLog
from wxgate.delivery.policy import CONFIG_ACTION
from wxgate.delivery.ratelimit import SendBudget
from wxgate.observability import get_logger
from wxgate.wechat.client import Pace
from wxgate.wechat.errors import Category, WeChatError, acted_on_as

PAUSE_CACHE_S = 1.0  # how stale the view of app pauses may be

_log = get_logger("wxgate.delivery.worker")


class Withheld(Exception):
    """No request may go out for this message now (raised by the pace hook, so before
    WeChat saw it): it goes back to the queue uncounted, due at `next_attempt_at`."""

    def __init__(self, next_attempt_at: float, why: str, while_paused: bool = False) -> None:
        super().__init__(why)
        self.next_attempt_at = next_attempt_at
        self.why = why
        self.while_paused = while_paused


class Hold(NamedTuple):
    """Why an app may not send now, and until when; `while_paused`: a pause holds it
    (storage makes the release due at once if the pause is gone when it is written)."""

    next_attempt_at: float
    why: str
    while_paused: bool = False


def in_force(pause: Pause, now: float) -> bool:
    return pause.until is None or pause.until > now


class Gate:
    """Pauses, breakers, budgets and in-flight caps of a worker's apps."""

    def __init__(
        self,
        backend: Backend,
        apps: Mapping[str, AppSettings],
        settings: DeliverySettings,
        clock: Clock,
        emit: Callable[[WorkerEvent], None],
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._emit = emit
        self._breakers = {name: self._new_breaker(name) for name in apps}
        self._budgets = {name: self._new_budget(name, app) for name, app in apps.items()}
        # Messages of one app held at once: as many as its rate sends in half a lease,
        # so none waits for budget until its lease runs out.
        self._in_flight_cap = {
            name: max(1, int(app.rate_limit_per_s * settings.lease_s / 2))
            for name, app in apps.items()
        }
        self._pauses: dict[str, Pause] = {}
        self._pauses_fresh_until = float("-inf")  # on clock.monotonic()
        self._pause_lock = asyncio.Lock()

    def breaker_state(self, app: str) -> BreakerState:
        return self._breakers[app].state

    # -- what to lease ---------------------------------------------------------------

    def excluded(self, held: Counter[str]) -> tuple[frozenset[str], int]:
        """Apps not to lease now (paused, breaker open, or holding their cap of `held`
        messages), and how many messages the others can take before they are full."""
        now = self._clock.now()
        excluded = {app for app, pause in self._pauses.items() if in_force(pause, now)}
        excluded |= {app for app, breaker in self._breakers.items() if not breaker.accepting()}
        room = 0
        for app, cap in self._in_flight_cap.items():
            if app not in excluded and held[app] >= cap:
                excluded.add(app)
            elif app not in excluded:
                room += cap - held[app]
        return frozenset(excluded), room

    async def refresh_pauses(self, *, force: bool = False) -> None:
        """Read the shared pauses again, unless the cached view is fresh enough."""
        started = self._clock.monotonic()
        if not force and started < self._pauses_fresh_until:
            return
        async with self._pause_lock:
            fresh = await self._backend.pauses(self._clock.now())
            before, self._pauses = self._pauses, fresh
            self._pauses_fresh_until = started + PAUSE_CACHE_S
        for app in before.keys() - fresh.keys():
            _log.info("app resumed", app=app, reason=before[app].reason)
            self._emit(AppResumed(app, before[app].reason))
        for app in fresh.keys() - before.keys():
            pause = fresh[app]
            self._emit(AppPaused(app, pause.reason, pause.until, pause.errcode))

    # -- whether one message may go out ------------------------------------------------

    def held_back(self, app: str, *, take_probe: bool, holds_probe: bool = False) -> Hold | None:
        """A Hold when the app may not send now, else None. With
        `take_probe`, a half-open breaker's one probe is taken by this call; with
        `holds_probe`, the caller is that probe, sending again (a resend after a token
        error is part of its probe, not a second one)."""
        now = self._clock.now()
        pause = self._pauses.get(app)
        if pause is not None and in_force(pause, now):
            until = pause.until if pause.until is not None else now
            return Hold(until, f"app paused ({pause.reason})", while_paused=True)
        breaker = self._breakers[app]
        if take_probe:
            open_to_us = breaker.allow()
        elif holds_probe:
            open_to_us = breaker.state is not BreakerState.OPEN
        else:
            open_to_us = breaker.accepting()
        return None if open_to_us else Hold(now, "circuit breaker open")

    def rate_waits(self, app: str) -> int:
        """How many times a send of `app` has waited for its rate limit so far."""
        return self._budgets[app].empty_waits

    def pace(self, lease: Lease) -> Pace:
        """What the client awaits right before each request of this message (the resend
        after a TOKEN answer included), once it has the token: a permit of the app's send
        budget, then the pause and breaker checks again, as they may have changed while
        it waited. Taken there, no token fetch or refresh stands between a permit and
        its request, so requests reach WeChat as evenly as the permits were granted.
        Raises Withheld when the request may not go out."""
        app = lease.record.app
        budget = self._budgets[app]
        # Budget is waited for during the first half of the lease only, so the send
        # itself still fits in it; a message that waited longer goes back uncounted.
        until = lease.deadline - self._settings.lease_s / 2
        breaker = self._breakers[app]
        first, holds_probe = True, False

        async def pace() -> None:
            nonlocal first, holds_probe
            if not await budget.acquire(until):
                raise Withheld(self._clock.now(), "no send budget within half the lease")
            # One breaker probe per message: a resend (after a token error: the tokens
            # were rotated during the outage) rides on the first request's probe.
            if first:
                half_open = breaker.state is BreakerState.HALF_OPEN
                held_back = self.held_back(app, take_probe=True)
                holds_probe = held_back is None and half_open
            else:
                held_back = self.held_back(app, take_probe=False, holds_probe=holds_probe)
            first = False
            if held_back is not None:
                raise Withheld(*held_back)

        return pace

    # -- what an answer tells about the app ---------------------------------------------

    def feed_breaker(self, app: str, error: WeChatError | None) -> None:
        """A send's answer tells the app's breaker whether WeChat is up. An error about one
        recipient (43117, 43108: that user is being throttled) says nothing of the app."""
        breaker = self._breakers[app]
        if error is not None and error.per_recipient:
            return
        if error is not None and acted_on_as(error.category) is Category.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()  # any definite answer shows WeChat is up

    async def pause(
        self,
        app: str,
        reason: PauseReason,
        until: float | None,
        error: WeChatError,
        log: MessageLog,
    ) -> None:
        """Pause the app for every worker; once, however many sends bring the same news."""
        async with self._pause_lock:
            now = self._clock.now()
            current = self._pauses.get(app)
            if (
                current is not None
                and in_force(current, now)
                and current.reason in (reason, PauseReason.CONFIG)
            ):
                return  # already paused; a QUOTA never shortens a CONFIG pause
            pause = Pause(app, reason, now, until, error.errcode, note=error.errmsg)
            self._pauses[app] = pause
            await self._backend.pause_app(pause)
        self._emit(AppPaused(app, reason, until, error.errcode))
        if reason is PauseReason.CONFIG:
            log.error(
                "app misconfigured: every message of this app fails the same way; "
                "the app is paused until an operator resumes it",
                errcode=error.errcode,
                errmsg=error.errmsg,
                action=CONFIG_ACTION,
            )
        else:
            log.warning("daily quota used up: app paused until the reset", until=until)

    # -- construction --------------------------------------------------------------------

    def _new_budget(self, name: str, app: AppSettings) -> SendBudget:
        rate = app.rate_limit_per_s
        take = functools.partial(self._backend.take_send_budget, name, rate)
        return SendBudget(take, rate, self._clock)

    def _new_breaker(self, app: str) -> CircuitBreaker:
        s = self._settings
        on_change = functools.partial(self._breaker_moved, app)
        return CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s, self._clock, on_change)

    def _breaker_moved(self, app: str, state: BreakerState) -> None:
        _log.warning("circuit breaker moved", app=app, state=state.value)
        self._emit(BreakerChanged(app, state))
