"""The storage contract: where messages live between intake and WeChat's report.

`Backend` is the protocol both engines (SQLite, Redis) implement and the
contract tests in tests/backends/ run against. The records and commands that
cross it are the dataclasses below. Every method that changes state is atomic:
a killed process leaves each message either before or after a call, never half
way through one.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from wxgate.wechat.tokenstore import TokenStore


class Status(StrEnum):
    QUEUED = "queued"  # waiting for a worker, or for its retry time
    SENDING = "sending"  # leased by a worker until the lease deadline
    SENT = "sent"  # WeChat accepted it (errcode 0); its report may follow
    DELIVERED = "delivered"  # TEMPLATESENDJOBFINISH said success
    REJECTED = "rejected"  # TEMPLATESENDJOBFINISH said failed (user block, system failed)
    FAILED = "failed"  # a permanent error for this message
    DEAD = "dead"  # retries exhausted or app misconfigured; replayable


def report_target(report_status: str) -> Status:
    """What a TEMPLATESENDJOBFINISH Status means: "success" delivered, anything else rejected."""
    return Status.DELIVERED if report_status == "success" else Status.REJECTED


SEND_BURST_S = 0.05


def send_burst(rate_per_s: float) -> float:
    """The send bucket's capacity: a twentieth of a second of rate (at least one send).

    A bucket holding a whole second would let 2x the rate through in the first
    second after an idle spell. A twentieth keeps every 1-second window of permits
    within 5% of the rate, and leaves the other 5% of a 10% allowance for what
    happens between a permit and its request reaching WeChat: with a tenth, the
    scale-out test (3 workers sharing 600/s through Redis) saw 669 sends within one
    second at the sandbox, because permits taken together arrived spread out by
    scheduling and stalls, and a later window caught more of them."""
    return max(rate_per_s * SEND_BURST_S, 1.0)


class BackendError(Exception):
    """Storage failed; nothing of the failed call took effect."""


class StorageUnavailable(BackendError):
    """The storage cannot be reached, is not open, or stayed busy past its timeout."""


# No worker will touch these again (a `sent` message only waits for its report).
SETTLED = frozenset({Status.SENT, Status.DELIVERED, Status.REJECTED, Status.FAILED, Status.DEAD})
REPLAYABLE = frozenset({Status.DEAD, Status.FAILED})


class Outcome(StrEnum):
    """How a worker settles a lease."""

    SENT = "sent"  # -> sent, msgid stored (None for 40241 "duplicate")
    RETRY = "retry"  # -> queued until next_attempt_at, attempt counted
    FAILED = "failed"  # -> failed (permanent for this message)
    DEAD = "dead"  # -> dead (retries exhausted, or CONFIG)
    RELEASE = "release"  # -> queued until next_attempt_at, no attempt counted (pause, shutdown)


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a message's history."""

    at: float
    kind: str  # accepted, sent, retry, failed, dead, released, lease_expired, report, replayed
    note: str = ""
    errcode: int | None = None


MAX_EVENTS = 50  # the oldest lines are dropped beyond this


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What intake hands to `enqueue`."""

    app: str
    payload: dict[str, Any]  # the template/send body, without client_msg_id
    idempotency_key: str | None = None
    trace_id: str | None = None
    batch_id: str | None = None
    id: str = field(default_factory=lambda: new_id())

    @property
    def touser(self) -> str:
        return str(self.payload.get("touser", ""))

    @property
    def template_id(self) -> str:
        return str(self.payload.get("template_id", ""))


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer for one enqueued message; `created` is False for a reused idempotency key."""

    id: str
    status: Status
    created: bool


@dataclass(slots=True)
class MessageRecord:
    id: str
    app: str
    touser: str
    template_id: str
    payload: dict[str, Any]
    status: Status
    attempts: int = 0
    next_attempt_at: float = 0.0
    idempotency_key: str | None = None
    msgid: int | None = None
    last_errcode: int | None = None
    last_errmsg: str | None = None
    last_category: str | None = None
    report_status: str | None = None  # WeChat's raw Status string, e.g. "failed:user block"
    trace_id: str | None = None
    batch_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    sent_at: float | None = None
    delivered_at: float | None = None  # when the report (success or failure) came in
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lease:
    """A message a worker holds until `deadline`; settle it with its `token`."""

    record: MessageRecord
    token: str
    deadline: float

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True, slots=True)
class Settlement:
    lease: Lease
    outcome: Outcome
    msgid: int | None = None
    next_attempt_at: float | None = None  # RETRY and RELEASE
    errcode: int | None = None
    errmsg: str | None = None
    category: str | None = None
    note: str = ""


class PauseReason(StrEnum):
    QUOTA = "QUOTA"  # a daily quota is used up; lifts itself at the reset
    CONFIG = "CONFIG"  # the account is misconfigured; lifted by an operator (resume or replay)


@dataclass(frozen=True, slots=True)
class Pause:
    """An app the workers leave alone until `until` (None: until an operator resumes it)."""

    app: str
    reason: str  # a PauseReason value
    since: float
    until: float | None = None
    errcode: int | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class ReportApplied:
    """What a delivery report (TEMPLATESENDJOBFINISH) did."""

    message_id: str | None  # None: no message with that msgid (yet); the report is kept a while
    status: Status | None
    changed: bool  # False for a repeated report (WeChat retries) or an unknown msgid


@dataclass(frozen=True, slots=True)
class ListFilter:
    status: Status | None = None
    app: str | None = None
    touser: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    app: str | None = None
    errcode: int | None = None
    since: float | None = None  # on updated_at (when it went dead)
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[MessageRecord]
    next_cursor: str | None


class Backend(Protocol):
    """Durable message storage, the queue, and the shared state of workers."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the storage answers (readiness)."""
        ...

    # -- intake ---------------------------------------------------------------
    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[Enqueued]:
        """Store messages durably (one atomic write for the whole sequence); return only
        after they are committed. A message whose (app, idempotency_key) is already
        stored is not stored again: its Enqueued names the first id, created=False."""
        ...

    # -- the queue --------------------------------------------------------------
    async def lease_batch(
        self,
        worker_id: str,
        limit: int,
        lease_s: float,
        now: float,
        exclude_apps: frozenset[str] = frozenset(),
    ) -> list[Lease]:
        """Up to `limit` due messages (queued with next_attempt_at <= now, or sending with
        an expired lease, which counts as a spent attempt), oldest due first, moved to
        `sending` with a deadline of now + lease_s."""
        ...

    async def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        """Apply worker outcomes atomically. A settlement whose lease token no longer
        matches (the lease expired and another worker took the message) is refused:
        False at its position, nothing written for it."""
        ...

    async def replay(self, ids: Sequence[str], now: float) -> int:
        """dead or failed messages back to queued with attempts reset; the count moved."""
        ...

    async def replay_dead(self, flt: DeadLetterFilter, now: float) -> int:
        """Every dead message matching the filter back to queued; the count moved."""
        ...

    # -- reads ------------------------------------------------------------------
    async def get(self, message_id: str) -> MessageRecord | None: ...

    async def list(self, flt: ListFilter, limit: int, cursor: str | None = None) -> Page:
        """Newest first; `cursor` is the `next_cursor` of the previous page."""
        ...

    async def batch_counts(self, batch_id: str) -> dict[Status, int] | None:
        """Messages of a batch per status, or None when no such batch exists."""
        ...

    async def counts(self, app: str | None = None) -> dict[Status, int]:
        """Messages per status (every status present, zeros included)."""
        ...

    # -- delivery reports ---------------------------------------------------------
    async def apply_report(
        self, app: str, msgid: int, report_status: str, now: float
    ) -> ReportApplied:
        """sent -> delivered (report "success") or rejected (anything "failed..."), by
        msgid. Idempotent. A report for a msgid not stored yet (the report can beat the
        worker's settle) is kept and applied when a settle stores that msgid."""
        ...

    async def remember_nonce(self, app: str, nonce: str, ttl_s: float, now: float) -> bool:
        """True the first time (app, nonce) is seen within ttl_s; False for a reuse."""
        ...

    # -- shared worker state ----------------------------------------------------
    async def pause_app(self, pause: Pause) -> None: ...

    async def resume_app(self, app: str, now: float) -> bool:
        """Lift a pause; True if there was one. Messages a timed pause held back (their
        retry time at or after the pause's end) become due at `now`, so an operator who
        lifts a QUOTA pause early does not wait for the reset."""
        ...

    async def pauses(self, now: float) -> dict[str, Pause]:
        """Pauses in force at `now` (expired ones are not returned)."""
        ...

    async def take_send_budget(self, app: str, rate_per_s: float, want: int, now: float) -> int:
        """Take up to `want` sends from the app's token bucket (capacity:
        `send_burst(rate_per_s)`); return how many were granted. Shared by every
        worker of the engine."""
        ...

    def token_store(self) -> TokenStore:
        """Where this engine keeps access tokens (shared like the queue is)."""
        ...

    async def purge(self, older_than: float) -> int:
        """Delete settled records last updated before `older_than`; the count deleted."""
        ...


# -- ids ----------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _IdRandom:
    """80 random bits per id from a generator seeded by the OS once per process.

    os.urandom per id cost 13-53 us under intake load (measured); ids need
    uniqueness, not secrecy. A forked child reseeds, so it never repeats its parent."""

    def __init__(self) -> None:
        self._pid = -1
        self._rng = random.Random()

    def bits80(self) -> int:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._rng = random.Random(os.urandom(32))
        return self._rng.getrandbits(80)


_ID_RANDOM = _IdRandom()


def new_id(now: float | None = None) -> str:
    """A 26-character ULID: sortable by creation time, unique without coordination.

    Also used as the WeChat client_msg_id, so a resend de-duplicates."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | _ID_RANDOM.bits80()
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))
