"""The worker: leases due messages, sends them to WeChat, and settles what the policy decides.

The only module that performs delivery I/O. Per message: lease, check attempts and the
gate (pauses, breaker), send with client_msg_id = message id (the send budget's permit
taken by the gate's pace hook, right before each request once the token is in hand),
`decide`, and settle; the settlement writer (`settlements.py`) writes them in groups,
and a settle is the durable write (never one before the decision). Shutdown: stop
leasing, wait for sends up to a deadline, release what is left without counting an
attempt, flush. `drain()` runs until nothing is due, so tests of backoff and pauses
move a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import socket
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from wxgate.backends.base import (
    Backend,
    Lease,
    MessageRecord,
    Outcome,
    PauseReason,
    Settlement,
    StorageUnavailable,
)
from wxgate.backends.sent_events import keep_seconds
from wxgate.clock import Clock, SystemClock
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery import policy
from wxgate.delivery.breaker import BreakerState
from wxgate.delivery.events import WorkerEvent, WorkerListener
from wxgate.delivery.gate import Gate, Withheld
from wxgate.delivery.loop_lag import IntakeActivity, LagLimit, LoopLag
from wxgate.delivery.messagelog import MessageLog
from wxgate.delivery.policy import Action, Decision
from wxgate.delivery.send_checks import SendCheck
from wxgate.delivery.settlements import Concluded, SettlementWriter
from wxgate.delivery.subscribe_keeping import SubscribeKeeper
from wxgate.delivery.window import Window
from wxgate.observability import get_logger
from wxgate.wechat.client import AccountClient, Pace, SendResult
from wxgate.wechat.errors import Category, RequestError, TransportError, WeChatError
from wxgate.wechat.fields import stored_body_problem
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

IDLE_POLL_MAX_S = 1.0  # the idle poll interval doubles up to this while nothing is due
UNKNOWN_APP_RETRY_S = 60.0  # a message of an app this worker has no config for waits this long
# Sends whose settlement is not written yet, per send slot, before sending waits for the
# writer: room for a slow group commit (an fsync of tens of ms under load) while sends
# go on, and a bound on what a crash resends (with the same client_msg_id).
SETTLING_PER_SLOT = 2
# The cyclic GC's young-generation threshold while a worker runs (CPython's default is
# 700). Every send in flight keeps its own objects alive (the lease and its record, the
# task, aiohttp's request and response), tens of thousands at 512 slots, so with the
# default every young collection found them alive, moved them on, and older collections
# kept scanning them: `perf` put 22% of a SQLite worker's CPU in gc_collect_main and
# its visitors at zero latency. At 50,000 most of a send's objects are gone before a
# collection looks at them. Measured (delivery case, same run, two rounds, 12,000
# messages): per CPU-second SQLite 3,801 -> 4,669, Redis 2,686 -> 3,162.
GC_YOUNG_THRESHOLD = 50_000
GC_MIDDLE_THRESHOLD = 20

_log = get_logger(__name__)


@dataclass
class AppRuntime:
    """What the worker needs of one configured app."""

    name: str
    settings: AppSettings
    client: AccountClient


_PAUSE_REASON = {Action.QUOTA_PAUSE: PauseReason.QUOTA, Action.CONFIG: PauseReason.CONFIG}
_OUTCOME = {
    Action.SENT: Outcome.SENT,
    Action.FAILED: Outcome.FAILED,
    Action.DEAD: Outcome.DEAD,
    Action.QUOTA_PAUSE: Outcome.RELEASE,
    Action.CONFIG: Outcome.DEAD,
    Action.UNKNOWN: Outcome.UNKNOWN,
}
_LOG_METHOD = {
    Outcome.SENT: "debug",
    Outcome.RETRY: "info",
    Outcome.RELEASE: "info",
    Outcome.FAILED: "warning",
    Outcome.DEAD: "warning",
    Outcome.UNKNOWN: "warning",
}


class Worker:
    """Leases and delivers the messages of its apps (see the module docstring)."""

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
        checks: Sequence[SendCheck] = (),
        yield_to_intake: tuple[float, IntakeActivity] | None = None,
    ) -> None:
        """`yield_to_intake`: in a process that also serves the API, the event loop's
        lateness past which the worker keeps fewer sends in flight while that API's
        intake (the IntakeActivity it marks) is busy (loop_lag.py)."""
        self._backend = backend
        self._apps = dict(apps)
        self._settings = settings
        self._clock = clock if clock is not None else SystemClock()
        self.worker_id = worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self._listeners = tuple(listeners)
        self._checks = tuple(checks)
        self._rng = rng if rng is not None else random.Random()
        app_settings = {name: app.settings for name, app in self._apps.items()}
        self._gate = Gate(backend, app_settings, settings, self._clock, self._emit)
        self._writer = SettlementWriter(backend, self._clock, self._emit)
        self._subscribe = SubscribeKeeper(
            backend, self._clock, keep_seconds(settings.connect_timeout_s, settings.read_timeout_s)
        )
        rates = [app.rate_limit_per_s for app in app_settings.values()]
        self._window = Window(settings.concurrency, settings.max_concurrency, rates)
        self._lag_limit: LagLimit | None = None
        if yield_to_intake is not None:
            target_s, intake = yield_to_intake
            self._lag_limit = LagLimit(target_s, settings.most_in_flight(), intake)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._held: dict[str, Lease] = {}  # leased, no settlement queued yet
        self._ready: deque[Lease] = deque()  # leased, waiting for a send slot
        self._sending: set[str] = set()  # lease ids whose send holds a slot
        self._slot_taken: dict[str, float] = {}  # lease id -> when it took its slot (monotonic)
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
        return self._gate.breaker_state(app)

    # -- life cycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until `stop()` (or a storage failure, which is raised after shutdown)."""
        self._begin()
        self._running = True
        restore = _widen_young_generation()
        lag = None
        if self._lag_limit is not None:
            lag = asyncio.create_task(LoopLag(self._lag_sampled).run(), name="wxgate-loop-lag")
        try:
            async with self._settling():
                await self._lease_loop()
        finally:
            if lag is not None:
                lag.cancel()
            if restore is not None:
                gc.set_threshold(*restore)
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
                await self._gate.refresh_pauses(force=True)
                for _ in range(max_rounds):
                    leases = await self._lease(self._slots())
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
        """Keep the send slots full. A slot is taken from the leases kept ready the moment
        another's send concludes (`_slot_done`), so no slot waits for a lease to be
        written; this loop only tops the ready leases up, one lease call for a share of
        the window rather than one per freed slot."""
        base_s = self._settings.idle_poll_s
        idle_s = base_s
        while not self._stop.is_set():
            self._fill_slots()
            slots = self._slots()
            prefetch = _prefetch(slots)
            want = slots - len(self._sending) + prefetch - len(self._ready)
            if want < max(1, prefetch // 2):
                await self._wait(None)
                continue
            want = min(want, self._settings.batch_size)
            leases = await self._lease(want)
            for lease in leases:
                self._held[lease.id] = lease  # released at shutdown if never sent
            self._ready.extend(leases)
            self._fill_slots()
            if len(leases) == want:
                idle_s = base_s
                continue
            await self._wait(idle_s)
            idle_s = base_s if leases else min(idle_s * 2, max(IDLE_POLL_MAX_S, base_s))

    def _fill_slots(self) -> None:
        """Start a send for ready leases while a slot is free and fewer settlements than
        SETTLING_PER_SLOT × the slots wait to be written: a slow storage slows the
        sending down rather than growing what a crash would have to resend."""
        slots = self._slots()
        ready = self._ready
        while ready and len(self._sending) < slots and not self._stop.is_set():
            if len(self._tasks) - len(self._sending) >= SETTLING_PER_SLOT * slots:
                return
            self._spawn(ready.popleft())

    def _slots(self) -> int:
        """The send slots now: the window's, under the loop-lag cap if there is one."""
        size = self._window.size
        return size if self._lag_limit is None else self._lag_limit.limit(size)

    def _lag_sampled(self, lag_s: float) -> None:
        assert self._lag_limit is not None
        before = self._slots()
        self._lag_limit.observe(lag_s)
        if self._slots() > before:  # room again: use it now, not at the next conclusion
            self._fill_slots()
            self._slot_freed.set()

    def _slot_done(self, lease_id: str) -> None:
        """The send of `lease_id` concluded (its settlement is queued, or there is none):
        its slot goes to the next ready lease now; the settlement is written meanwhile."""
        self._slot_taken.pop(lease_id, None)
        if lease_id in self._sending:
            self._sending.discard(lease_id)
            self._fill_slots()
            self._slot_freed.set()

    async def _lease(self, free: int) -> list[Lease]:
        """Up to `free` due messages of the apps that may send now; none while storage
        is unavailable (the pauses are read from it too)."""
        try:
            await self._gate.refresh_pauses()
            held = Counter(lease.record.app for lease in self._held.values())
            excluded, room = self._gate.excluded(held)
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
        self._sending.add(lease.id)
        self._slot_taken[lease.id] = self._clock.monotonic()
        task = asyncio.create_task(self._process(lease), name=f"wxgate-deliver-{lease.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        if task.cancelled() or task.exception() is None:
            self._fill_slots()  # a settlement was written: room for another send
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
        self._ready.clear()
        leftovers = list(self._held.values())
        for lease in leftovers:
            release = Settlement(lease, Outcome.RELEASE, next_attempt_at=now, note="worker stopped")
            self._submit(Concluded(release), MessageLog(lease.record))
        if leftovers:
            _log.info("released leased messages at shutdown", count=len(leftovers))

    @contextlib.asynccontextmanager
    async def _settling(self) -> AsyncIterator[None]:
        """Run the settlement writer for the duration, then wind down in the fixed order."""
        self._writer.start()
        try:
            yield
        finally:
            # Shielded: a cancellation never leaves a settlement half done.
            await asyncio.shield(self._wind_down())

    async def _wind_down(self) -> None:
        """Sends in flight finish (up to the grace), leftovers are released, all is written."""
        await self._finish_tasks(self._grace_s)
        self._release_held()
        await self._writer.close()

    # -- one message ---------------------------------------------------------------------

    async def _process(self, lease: Lease) -> bool:
        """Deliver one leased message; True once its settlement is durably written. Its
        send slot is given back as soon as the send concluded: the lease in storage
        still covers the message until the settlement is written (a crash before that
        resends it with the same client_msg_id, which WeChat deduplicates)."""
        self._held[lease.id] = lease  # until a settlement is queued; shutdown releases it
        log = MessageLog(lease.record)
        try:
            try:
                concluded = await self._deliver(lease, log)
            except StorageUnavailable as exc:
                # Storage went away mid-delivery (send budget, pause, token store), where
                # WeChat has not taken this attempt: back to the queue uncounted, written
                # once storage answers, like every settlement.
                log.warning("storage unavailable; message released", error=str(exc))
                why = "storage unavailable"
                concluded = Concluded(_release(lease, self._clock.now(), why))
            if concluded is None:
                self._held.pop(lease.id, None)
                return False
            written = self._submit(concluded, log)
        finally:
            self._slot_done(lease.id)
        if not await written:
            return False
        await self._subscribe.after_settle(lease.record, concluded.settlement, log)
        return True

    def _submit(self, concluded: Concluded, log: MessageLog) -> asyncio.Future[bool]:
        self._held.pop(concluded.settlement.lease.id, None)
        return self._writer.submit(concluded, log)

    async def _deliver(self, lease: Lease, log: MessageLog) -> Concluded | None:
        """The settlement for one lease (None: the lease ran out before the send)."""
        record = lease.record
        runtime = self._apps.get(record.app)
        if runtime is None:
            log.warning("no such app is configured in this worker; the message waits")
            later = self._clock.now() + UNKNOWN_APP_RETRY_S
            return Concluded(_release(lease, later, "app not configured in this worker"))
        if policy.attempts_exhausted(record.attempts, self._settings):
            log.warning("dead: the lease expired too often", attempts=record.attempts)
            return Concluded(Settlement(lease, Outcome.DEAD, note="lease expired too often"))
        held_back = self._gate.held_back(record.app, take_probe=False)
        if held_back is not None:
            return Concluded(_release(lease, *held_back))
        if self._clock.now() >= lease.deadline:
            log.info("lease ran out before the send; another worker will take the message")
            return None
        for check in self._checks:
            instead = await check.before_send(lease)
            if instead is not None:
                return Concluded(instead)
        try:
            result, latency_s = await self._send(runtime.client, record, self._gate.pace(lease))
        except Withheld as withheld:
            why, paused = withheld.why, withheld.while_paused
            return Concluded(_release(lease, withheld.next_attempt_at, why, paused))
        settlement = await self._conclude(lease, result, log, sent=latency_s is not None)
        settlement = await self._subscribe.after_send(record, settlement, log)
        if latency_s is None:
            return Concluded(settlement)
        category = result.category if isinstance(result, WeChatError) else Category.OK
        return Concluded(settlement, latency_s, category)

    async def _send(
        self, client: AccountClient, record: MessageRecord, pace: Pace
    ) -> tuple[SendResult, float | None]:
        """WeChat's answer and the send's duration (None when nothing could be sent);
        Withheld (from `pace`) when no request went out. The stored body is sent as it
        is (it was checked at intake; WeChat judges it now), a template message's with
        client_msg_id = the message id added: no model is rebuilt per send."""
        problem = stored_body_problem(record.payload)
        if problem is not None:
            return RequestError(
                None, f"stored payload is not a {record.kind} message: {problem}"
            ), None
        clock, app = self._clock, record.app
        started = clock.monotonic()
        rate_wait_s = 0.0

        async def paced() -> None:
            # Time spent waiting for the app's rate limit is not time a slot needs.
            nonlocal rate_wait_s
            waits, asked = self._gate.rate_waits(app), clock.monotonic()
            await pace()
            if self._gate.rate_waits(app) != waits:
                rate_wait_s += clock.monotonic() - asked

        if record.kind in SUBSCRIBE_KINDS:
            result = await client.send_subscribe_body(record.payload, record.kind, pace=paced)
        else:
            body = {**record.payload, "client_msg_id": record.id}
            result = await client.send_template_body(body, pace=paced)
        finished = clock.monotonic()
        if not isinstance(result, TransportError):
            # From the moment the send took its slot: the event loop's delay in starting
            # it is time the slot is held too (measured: with 1 ms answers on a loaded
            # machine, counting from here only sized the window to 70% of the rate).
            taken = self._slot_taken.get(record.id, started)
            self._window.observe(finished - taken - rate_wait_s)
        return result, finished - started

    async def _conclude(
        self, lease: Lease, result: SendResult, log: MessageLog, *, sent: bool
    ) -> Settlement:
        record = lease.record
        decision = policy.decide(
            result,
            record.attempts,
            self._settings,
            self._clock.now(),
            self._rng,
            resend_safe=record.kind not in SUBSCRIBE_KINDS,
        )
        error = result if isinstance(result, WeChatError) else None
        if sent:
            self._gate.feed_breaker(record.app, error)
        reason = _PAUSE_REASON.get(decision.action)
        if reason is not None and error is not None:
            await self._gate.pause(record.app, reason, decision.next_attempt_at, error, log)
        settlement = _settlement(lease, decision, error)
        _log_outcome(log, settlement, error)
        return settlement

    def _emit(self, event: WorkerEvent) -> None:
        for listener in self._listeners:
            listener.on_event(event)


def _widen_young_generation() -> tuple[int, int, int] | None:
    """Raise the GC's young thresholds to GC_YOUNG_THRESHOLD and GC_MIDDLE_THRESHOLD
    (never lower them); the thresholds to restore afterwards, or None if unchanged."""
    young, middle, old = gc.get_threshold()
    if young >= GC_YOUNG_THRESHOLD or young == 0:  # 0: collection is off; left alone
        return None
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(middle, GC_MIDDLE_THRESHOLD), old)
    return young, middle, old


def _prefetch(slots: int) -> int:
    """Leases kept ready beyond the free slots, so the slots that free while a lease call
    is being written find a lease waiting: half the window (measured with 30 ms answers,
    64 slots: a Redis lease call took ~50 ms under load, as long as a third of the
    slots took to free up)."""
    return max(1, slots // 2)


def _release(
    lease: Lease, next_attempt_at: float, why: str, while_paused: bool = False
) -> Settlement:
    return Settlement(
        lease, Outcome.RELEASE, next_attempt_at=next_attempt_at, note=why, while_paused=while_paused
    )


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
        category=error.category if error is not None else None,
        note=decision.note,
        # Released until the quota resets, with the app paused as long (see Settlement).
        while_paused=decision.action is Action.QUOTA_PAUSE,
    )


def _log_outcome(log: MessageLog, settlement: Settlement, error: WeChatError | None) -> None:
    method = _LOG_METHOD[settlement.outcome]
    if method == "debug" and error is None and not log.debug_enabled():
        return  # the happy path's line, not written: not built either
    fields: dict[str, object] = {"outcome": settlement.outcome.value}
    if settlement.msgid is not None:
        fields["msgid"] = settlement.msgid
    if settlement.next_attempt_at is not None:
        fields["next_attempt_at"] = round(settlement.next_attempt_at, 3)
    if error is not None:
        fields.update(errcode=error.errcode, errmsg=error.errmsg, category=error.category.value)
        if error.category is Category.UNKNOWN:
            log.warning("WeChat answered an errcode the catalogue does not know", **fields)
    getattr(log, method)(settlement.note or "settled", **fields)
