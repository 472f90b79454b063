"""The worker: leases due messages, sends them to WeChat, and settles what the policy decides.

The only module that performs delivery I/O. Per message: lease, check attempts, pauses
and the breaker, send with client_msg_id = message id (the send budget's permit taken by
the client's pace hook, right before each request once the token is in hand), `decide`,
and settle; settlements are written in groups, and a settle is the durable write (never one
before the decision). Shutdown: stop leasing, wait for sends up to a deadline, release
what is left without counting an attempt, flush. `drain()` runs until nothing is due,
so tests of backoff and pauses move a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import structlog

from wxgate.backends.base import (
    Backend,
    Lease,
    MessageRecord,
    Outcome,
    Pause,
    PauseReason,
    Settlement,
    StorageUnavailable,
)
from wxgate.clock import Clock, SystemClock
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery import policy
from wxgate.delivery.breaker import BreakerState, CircuitBreaker
from wxgate.delivery.events import (
    AppPaused,
    AppResumed,
    BreakerChanged,
    MessageSettled,
    WorkerEvent,
    WorkerListener,
)
from wxgate.delivery.policy import CONFIG_ACTION, Action, Decision
from wxgate.delivery.ratelimit import SendBudget
from wxgate.observability import get_logger
from wxgate.wechat.client import AccountClient, Pace, SendResult
from wxgate.wechat.errors import Category, RequestError, WeChatError, acted_on_as
from wxgate.wechat.template import TemplateMessage, TemplateValidationError

PAUSE_CACHE_S = 1.0  # how stale the worker's view of app pauses may be
IDLE_POLL_MAX_S = 1.0  # the idle poll interval doubles up to this while nothing is due
FLUSH_GROUP = 64  # settlements written in one backend call at most
# While storage is unreachable (a Redis restart, SQLite busy past its timeout) the
# worker keeps its settlements and retries on this real-time schedule; leases that
# run out meanwhile return their messages to the queue, so nothing is lost.
STORAGE_RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
STORAGE_RETRIES_WHEN_CLOSING = 4
UNKNOWN_APP_RETRY_S = 60.0  # a message of an app this worker has no config for waits this long
QUOTA, CONFIG = PauseReason.QUOTA.value, PauseReason.CONFIG.value

_log = get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)


class Log:
    """One message's log lines, with its trace_id, message_id and app.

    Bound on the first line, and a debug line is dropped before structlog sees it
    unless DEBUG is on: the happy path writes only a debug line, and binding plus
    rendering it cost ~17 us of the worker's ~215 us of main-thread CPU per message
    (measured); a level check costs 0.4 us."""

    __slots__ = ("_bound", "_record")

    def __init__(self, record: MessageRecord) -> None:
        self._record = record
        self._bound: structlog.stdlib.BoundLogger | None = None

    def _logger(self) -> structlog.stdlib.BoundLogger:
        if self._bound is None:
            record = self._record
            self._bound = _log.bind(trace_id=record.trace_id, message_id=record.id, app=record.app)
        return self._bound

    def debug(self, event: str, **fields: object) -> None:
        if _stdlib_log.isEnabledFor(logging.DEBUG):
            self._logger().debug(event, **fields)

    def info(self, event: str, **fields: object) -> None:
        self._logger().info(event, **fields)

    def warning(self, event: str, **fields: object) -> None:
        self._logger().warning(event, **fields)

    def error(self, event: str, **fields: object) -> None:
        self._logger().error(event, **fields)


@dataclass
class AppRuntime:
    """What the worker needs of one configured app."""

    name: str
    settings: AppSettings
    client: AccountClient


class Withheld(Exception):
    """No request may go out for this message now (raised by the pace hook, so before
    WeChat saw it): it goes back to the queue uncounted, due at `next_attempt_at`."""

    def __init__(self, next_attempt_at: float, why: str) -> None:
        super().__init__(why)
        self.next_attempt_at = next_attempt_at
        self.why = why


@dataclass(frozen=True, slots=True)
class _Concluded:
    """What became of one lease, and what its event will say once it is written."""

    settlement: Settlement
    latency_s: float | None = None  # the send's duration; None when nothing was sent
    category: str | None = None  # the category of WeChat's answer, when one came


@dataclass(frozen=True, slots=True)
class _Pending:
    """A settlement waiting for its group write."""

    concluded: _Concluded
    log: Log
    done: asyncio.Future[bool]


_PAUSE_REASON = {Action.QUOTA_PAUSE: QUOTA, Action.CONFIG: CONFIG}
_OUTCOME = {
    Action.SENT: Outcome.SENT,
    Action.FAILED: Outcome.FAILED,
    Action.DEAD: Outcome.DEAD,
    Action.QUOTA_PAUSE: Outcome.RELEASE,
    Action.CONFIG: Outcome.DEAD,
}
_LOG_METHOD = {
    Outcome.SENT: "debug",
    Outcome.RETRY: "info",
    Outcome.RELEASE: "info",
    Outcome.FAILED: "warning",
    Outcome.DEAD: "warning",
}


class Worker:
    def __init__(
        self,
        backend: Backend,
        apps: Mapping[str, AppRuntime],
        settings: DeliverySettings,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        listeners: Sequence[WorkerListener] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._backend = backend
        self._apps = dict(apps)
        self._settings = settings
        self._clock = clock if clock is not None else SystemClock()
        self.worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._listeners = tuple(listeners)
        self._rng = rng if rng is not None else random.Random()
        self._breakers = {name: self._new_breaker(name) for name in self._apps}
        self._budgets = {name: self._new_budget(name, app) for name, app in self._apps.items()}
        # Messages of one app held at once: as many as its rate sends in half a lease,
        # so none waits for budget until its lease runs out.
        self._in_flight_cap = {
            name: max(1, int(app.settings.rate_limit_per_s * settings.lease_s / 2))
            for name, app in self._apps.items()
        }
        self._pauses: dict[str, Pause] = {}
        self._pauses_fresh_until = float("-inf")  # on clock.monotonic()
        self._pause_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self._held: dict[str, Lease] = {}  # leased, no settlement queued yet
        self._buffer: list[_Pending] = []
        self._flush_wanted = asyncio.Event()
        self._closing = False
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._grace_s = 0.0
        self._running = False
        self._busy = False

    @property
    def running(self) -> bool:
        return self._running

    def breaker_state(self, app: str) -> BreakerState:
        return self._breakers[app].state

    # -- life cycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until `stop()` (or a storage failure, which is raised after shutdown)."""
        self._begin()
        self._running = True
        try:
            async with self._settling():
                await self._lease_loop()
        finally:
            self._running = False
            self._busy = False
            self._stop.clear()
            self._grace_s = 0.0
            self._stopped.set()
        if self._failure is not None:
            raise self._failure

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop leasing, let sends in flight finish for up to `grace_s` seconds (default:
        settings.shutdown_grace_s), release the rest without counting an attempt."""
        self._grace_s = self._settings.shutdown_grace_s if grace_s is None else grace_s
        self._stop.set()  # also makes a run() that has not started yet return at once
        if self._running:
            await self._stopped.wait()

    async def drain(self, max_rounds: int = 10_000) -> int:
        """Deliver until nothing is due at clock.now(); the number of settlements written."""
        self._begin()
        settled = 0
        try:
            async with self._settling():
                await self._refresh_pauses(force=True)
                for _ in range(max_rounds):
                    leases = await self._lease(self._settings.concurrency)
                    if not leases:
                        break
                    async with asyncio.TaskGroup() as group:
                        runs = [group.create_task(self._process(lease)) for lease in leases]
                    settled += sum(run.result() for run in runs)
        finally:
            self._busy = False
        return settled

    def _begin(self) -> None:
        if self._busy:
            raise RuntimeError("this worker is already running")
        self._busy = True
        self._stopped.clear()
        self._failure = None

    # -- the lease loop ------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        base_s = self._settings.idle_poll_s
        idle_s = base_s
        # Leasing waits for a quarter of the slots to free up rather than refilling
        # each freed slot: half the lease transactions (measured: 126 instead of 250
        # for 8,000 messages at 64 slots), the same throughput.
        refill_at = max(1, self._settings.concurrency // 4)
        while not self._stop.is_set():
            free = self._settings.concurrency - len(self._tasks)
            if free < refill_at:
                await self._wait(None)
                continue
            leases = await self._lease(free)
            for lease in leases:
                self._spawn(lease)
            if len(leases) == min(free, self._settings.batch_size):
                idle_s = base_s
                continue
            await self._wait(idle_s)
            idle_s = base_s if leases else min(idle_s * 2, max(IDLE_POLL_MAX_S, base_s))

    async def _lease(self, free: int) -> list[Lease]:
        """Up to `free` due messages of the apps that may send now; none while storage
        is unavailable (the pauses are read from it too)."""
        try:
            await self._refresh_pauses()
            excluded, room = self._excluded()
            limit = min(free, self._settings.batch_size, room)
            if limit <= 0:
                return []
            return await self._backend.lease_batch(
                self.worker_id, limit, self._settings.lease_s, self._clock.now(), excluded
            )
        except StorageUnavailable as exc:
            _log.warning("storage unavailable; leasing paused", error=str(exc))
            return []

    async def _wait(self, delay_s: float | None) -> None:
        """Until stop(), a freed slot (delay_s None) or the idle delay on the clock."""
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if delay_s is None:
            waiters.append(asyncio.ensure_future(self._slot_freed.wait()))
        else:
            waiters.append(asyncio.ensure_future(self._clock.sleep(delay_s)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._slot_freed.clear()

    def _spawn(self, lease: Lease) -> None:
        task = asyncio.create_task(self._process(lease), name=f"wxgate-deliver-{lease.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if task.cancelled() or task.exception() is None:
            return
        # A delivery can only fail this way when storage does (or on a bug): stop,
        # release what is still held, and let run() raise it.
        if self._failure is None:
            self._failure = task.exception()
        self._stop.set()

    async def _finish_tasks(self, grace_s: float) -> None:
        tasks = set(self._tasks)
        if not tasks:
            return
        # A real-time deadline: it bounds how long a stopping process takes even when
        # the message timeline runs on a fake clock.
        _, unfinished = await asyncio.wait(tasks, timeout=grace_s)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)

    def _release_held(self) -> None:
        """Queue a release (no attempt counted) for every lease with no settlement."""
        now = self._clock.now()
        leftovers = list(self._held.values())
        for lease in leftovers:
            release = Settlement(lease, Outcome.RELEASE, next_attempt_at=now, note="worker stopped")
            self._queue_settlement(_Concluded(release), self._message_log(lease.record))
        if leftovers:
            _log.info("released leased messages at shutdown", count=len(leftovers))

    # -- one message ---------------------------------------------------------------------

    async def _process(self, lease: Lease) -> bool:
        """Deliver one leased message; True once its settlement is durably written."""
        self._held[lease.id] = lease  # until a settlement is queued; shutdown releases it
        log = self._message_log(lease.record)
        try:
            concluded = await self._deliver(lease, log)
        except StorageUnavailable as exc:
            # Storage went away mid-delivery (send budget, pause, token store), where
            # WeChat has not taken this attempt: back to the queue uncounted, written
            # once storage answers, like every settlement.
            log.warning("storage unavailable; message released", error=str(exc))
            why = "storage unavailable"
            concluded = _Concluded(self._release(lease, self._clock.now(), why))
        if concluded is None:
            self._held.pop(lease.id, None)
            return False
        return await self._queue_settlement(concluded, log)

    async def _deliver(self, lease: Lease, log: Log) -> _Concluded | None:
        """The settlement for one lease (None: the lease ran out before the send)."""
        record = lease.record
        runtime = self._apps.get(record.app)
        if runtime is None:
            log.warning("no such app is configured in this worker; the message waits")
            later = self._clock.now() + UNKNOWN_APP_RETRY_S
            return _Concluded(self._release(lease, later, "app not configured in this worker"))
        if policy.attempts_exhausted(record.attempts, self._settings):
            log.warning("dead: the lease expired too often", attempts=record.attempts)
            return _Concluded(Settlement(lease, Outcome.DEAD, note="lease expired too often"))
        held_back = self._held_back(record.app, take_probe=False)
        if held_back is not None:
            return _Concluded(self._release(lease, *held_back))
        if self._clock.now() >= lease.deadline:
            log.info("lease ran out before the send; another worker will take the message")
            return None
        try:
            result, latency_s = await self._send(runtime.client, record, self._pace(lease))
        except Withheld as withheld:
            return _Concluded(self._release(lease, withheld.next_attempt_at, withheld.why))
        settlement = await self._conclude(lease, result, log, sent=latency_s is not None)
        if latency_s is None:
            return _Concluded(settlement)
        category = result.category if isinstance(result, WeChatError) else Category.OK
        return _Concluded(settlement, latency_s, category.value)

    def _pace(self, lease: Lease) -> Pace:
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
        first = True

        async def pace() -> None:
            nonlocal first
            if not await budget.acquire(until):
                raise Withheld(self._clock.now(), "no send budget within half the lease")
            # One breaker probe per message: a resend rides on the first request's.
            held_back = self._held_back(app, take_probe=first)
            first = False
            if held_back is not None:
                raise Withheld(*held_back)

        return pace

    def _held_back(self, app: str, *, take_probe: bool) -> tuple[float, str] | None:
        """(next_attempt_at, why) when the app may not send now, else None."""
        now = self._clock.now()
        pause = self._pauses.get(app)
        if pause is not None and _in_force(pause, now):
            return (pause.until if pause.until is not None else now), f"app paused ({pause.reason})"
        breaker = self._breakers[app]
        if breaker.allow() if take_probe else breaker.accepting():
            return None
        return now, "circuit breaker open"

    async def _send(
        self, client: AccountClient, record: MessageRecord, pace: Pace
    ) -> tuple[SendResult, float | None]:
        """WeChat's answer and the send's duration (None when nothing could be sent);
        Withheld (from `pace`) when no request went out."""
        try:
            message = TemplateMessage.from_wechat(record.payload).with_client_msg_id(record.id)
        except TemplateValidationError as exc:
            where = ", ".join(".".join(map(str, p.loc)) for p in exc.problems)
            return RequestError(None, f"stored payload is not a template message: {where}"), None
        started = self._clock.monotonic()
        result = await client.send_template(message, pace=pace)
        return result, self._clock.monotonic() - started

    async def _conclude(
        self, lease: Lease, result: SendResult, log: Log, *, sent: bool
    ) -> Settlement:
        record = lease.record
        decision = policy.decide(
            result, record.attempts, self._settings, self._clock.now(), self._rng
        )
        error = result if isinstance(result, WeChatError) else None
        if sent:
            self._feed_breaker(record.app, error)
        reason = _PAUSE_REASON.get(decision.action)
        if reason is not None and error is not None:
            await self._pause(record.app, reason, decision.next_attempt_at, error, log)
        settlement = _settlement(lease, decision, error)
        _log_outcome(log, settlement, error)
        return settlement

    def _feed_breaker(self, app: str, error: WeChatError | None) -> None:
        breaker = self._breakers[app]
        if error is not None and acted_on_as(error.category) is Category.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()  # any definite answer shows WeChat is up

    def _release(self, lease: Lease, next_attempt_at: float, why: str) -> Settlement:
        return Settlement(lease, Outcome.RELEASE, next_attempt_at=next_attempt_at, note=why)

    # -- settlements ---------------------------------------------------------------------

    def _queue_settlement(self, concluded: _Concluded, log: Log) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._held.pop(concluded.settlement.lease.id, None)
        self._buffer.append(_Pending(concluded, log, done))
        self._flush_wanted.set()
        return done

    @contextlib.asynccontextmanager
    async def _settling(self) -> AsyncIterator[None]:
        """Run the group writer for the duration, then wind down in the fixed order."""
        self._closing = False
        flusher = asyncio.create_task(self._flush_loop(), name="wxgate-settle")
        try:
            yield
        finally:
            # Shielded: a cancellation never leaves a settlement half done.
            await asyncio.shield(self._wind_down(flusher))

    async def _wind_down(self, flusher: asyncio.Task[None]) -> None:
        """Sends in flight finish (up to the grace), leftovers are released, all is written."""
        await self._finish_tasks(self._grace_s)
        self._release_held()
        self._closing = True
        self._flush_wanted.set()
        await flusher

    async def _flush_loop(self) -> None:
        # Settlements that arrive while one group is being written form the next group,
        # so the write rate adapts to the storage without a timer.
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            while self._buffer:
                group = self._buffer[:FLUSH_GROUP]
                del self._buffer[:FLUSH_GROUP]
                await asyncio.shield(self._write(group))
            if self._closing:
                return

    async def _settle_with_retries(self, settlements: list[Settlement]) -> list[bool]:
        """backend.settle, retried while storage is unavailable; all False if it stays
        down through shutdown (the leases then expire and the messages come back)."""
        for attempt in itertools.count():
            try:
                return await self._backend.settle(settlements, self._clock.now())
            except StorageUnavailable as exc:
                if self._closing and attempt >= STORAGE_RETRIES_WHEN_CLOSING:
                    _log.error(
                        "storage unavailable at shutdown; leases will expire",
                        count=len(settlements),
                        error=str(exc),
                    )
                    return [False] * len(settlements)
                delay = STORAGE_RETRY_S[min(attempt, len(STORAGE_RETRY_S) - 1)]
                _log.warning("storage unavailable; settle retried", delay_s=delay, error=str(exc))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _write(self, group: list[_Pending]) -> None:
        settlements = [pending.concluded.settlement for pending in group]
        try:
            written = await self._settle_with_retries(settlements)
        except Exception as exc:
            for pending in group:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            raise
        for pending, ok in zip(group, written, strict=True):
            if ok:
                self._emit(_settled_event(pending.concluded))
            else:
                pending.log.info("settle refused: the lease was lost to another worker")
            if not pending.done.done():
                pending.done.set_result(ok)

    # -- pauses and breakers ---------------------------------------------------------------

    def _excluded(self) -> tuple[frozenset[str], int]:
        """Apps not to lease now (paused, breaker open, or full), and how many messages
        the others can take before they are full."""
        now = self._clock.now()
        excluded = {app for app, pause in self._pauses.items() if _in_force(pause, now)}
        excluded |= {app for app, breaker in self._breakers.items() if not breaker.accepting()}
        held = Counter(lease.record.app for lease in self._held.values())
        room = 0
        for app, cap in self._in_flight_cap.items():
            if app not in excluded and held[app] >= cap:
                excluded.add(app)
            elif app not in excluded:
                room += cap - held[app]
        return frozenset(excluded), room

    async def _refresh_pauses(self, *, force: bool = False) -> None:
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

    async def _pause(
        self, app: str, reason: str, until: float | None, error: WeChatError, log: Log
    ) -> None:
        """Pause the app for every worker; once, however many sends bring the same news."""
        async with self._pause_lock:
            now = self._clock.now()
            current = self._pauses.get(app)
            in_force = current is not None and _in_force(current, now)
            if in_force and current is not None and current.reason in (reason, CONFIG):
                return  # already paused; a QUOTA never shortens a CONFIG pause
            pause = Pause(app, reason, now, until, error.errcode, note=error.errmsg)
            self._pauses[app] = pause
            await self._backend.pause_app(pause)
        self._emit(AppPaused(app, reason, until, error.errcode))
        if reason == CONFIG:
            log.error(
                "app misconfigured: every message of this app fails the same way; "
                "the app is paused until an operator resumes it",
                errcode=error.errcode,
                errmsg=error.errmsg,
                action=CONFIG_ACTION,
            )
        else:
            log.warning("daily quota used up: app paused until the reset", until=until)

    def _new_budget(self, name: str, app: AppRuntime) -> SendBudget:
        rate = app.settings.rate_limit_per_s
        take = functools.partial(self._backend.take_send_budget, name, rate)
        return SendBudget(take, rate, self._clock)

    def _new_breaker(self, app: str) -> CircuitBreaker:
        s = self._settings
        on_change = functools.partial(self._breaker_moved, app)
        return CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s, self._clock, on_change)

    def _breaker_moved(self, app: str, state: BreakerState) -> None:
        _log.warning("circuit breaker moved", app=app, state=state.value)
        self._emit(BreakerChanged(app, state))

    # -- small helpers ----------------------------------------------------------------------

    def _emit(self, event: WorkerEvent) -> None:
        for listener in self._listeners:
            listener.on_event(event)

    def _message_log(self, record: MessageRecord) -> Log:
        return Log(record)


def _in_force(pause: Pause, now: float) -> bool:
    return pause.until is None or pause.until > now


def _settlement(lease: Lease, decision: Decision, error: WeChatError | None) -> Settlement:
    if decision.action is Action.RETRY:
        outcome = Outcome.RETRY if decision.counted else Outcome.RELEASE
    else:
        outcome = _OUTCOME[decision.action]
    return Settlement(
        lease,
        outcome,
        msgid=decision.msgid,
        next_attempt_at=decision.next_attempt_at,
        errcode=error.errcode if error is not None else None,
        errmsg=error.errmsg if error is not None else None,
        category=error.category.value if error is not None else None,
        note=decision.note,
    )


def _log_outcome(log: Log, settlement: Settlement, error: WeChatError | None) -> None:
    fields: dict[str, object] = {"outcome": settlement.outcome.value}
    if settlement.msgid is not None:
        fields["msgid"] = settlement.msgid
    if settlement.next_attempt_at is not None:
        fields["next_attempt_at"] = round(settlement.next_attempt_at, 3)
    if error is not None:
        fields.update(errcode=error.errcode, errmsg=error.errmsg, category=error.category.value)
        if error.category is Category.UNKNOWN:
            log.warning("WeChat answered an errcode the catalogue does not know", **fields)
    getattr(log, _LOG_METHOD[settlement.outcome])(settlement.note or "settled", **fields)


def _settled_event(concluded: _Concluded) -> MessageSettled:
    s = concluded.settlement
    return MessageSettled(
        s.lease.record.app, s.outcome, concluded.category, s.errcode, concluded.latency_s
    )
