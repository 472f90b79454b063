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
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Protocol,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import orjson

from wxgate.backends.api_keys import ApiKeyStore
from wxgate.backends.audit import AuditLog
from wxgate.backends.caps import CapStore
from wxgate.backends.dedupe import DedupeStore
from wxgate.backends.grants import GrantStore
from wxgate.clock import rfc3339
from wxgate.wechat.errors import Category
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.tokenstore import TokenStore

if TYPE_CHECKING:
    from wxgate.backends.suppressions import SuppressionStore
    from wxgate.backends.templates import TemplateStore
    from wxgate.backends.webhook_outbox import WebhookOutbox


class Status(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its send_at; a worker takes it once due
    QUEUED = "queued"  # waiting for a worker, or for its retry time
    SENDING = "sending"  # leased by a worker until the lease deadline
    SENT = "sent"  # WeChat accepted it (errcode 0); its report may follow
    DELIVERED = "delivered"  # WeChat's report said it reached the user
    REJECTED = "rejected"  # WeChat's report said it did not (user block, system failed)
    FAILED = "failed"  # a permanent error for this message
    DEAD = "dead"  # retries exhausted or app misconfigured; replayable
    UNKNOWN = "unknown"  # sent without an answer, and not safe to resend (no client_msg_id)
    CANCELLED = "cancelled"  # cancelled by the caller or an operator before it was sent
    SUPPRESSED = "suppressed"  # its recipient is on the app's suppression list; not sent
    THROTTLED = "throttled"  # past the recipient's frequency cap; not sent


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


class IdempotencyConflict(BackendError):
    """A key (or a keyed batch) already stored for a different request: nothing of the
    call was stored. `key` names it as the caller sent it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request")
        self.key = key


# A worker leases these once due (a scheduled message goes straight to sending).
LEASABLE = frozenset({Status.SCHEDULED, Status.QUEUED})
# No worker will touch these again (a `sent` message only waits for its report, an
# `unknown` one for a subscribe sent event or an operator).
SETTLED = frozenset(
    {
        Status.SENT,
        Status.DELIVERED,
        Status.REJECTED,
        Status.FAILED,
        Status.DEAD,
        Status.UNKNOWN,
        Status.CANCELLED,
        Status.SUPPRESSED,
        Status.THROTTLED,
    }
)
# An operator may send these again (replay): back to queued, attempts reset.
REPLAYABLE = frozenset(
    {Status.DEAD, Status.FAILED, Status.UNKNOWN, Status.SUPPRESSED, Status.THROTTLED}
)
# A cancel takes these; a message a worker holds (sending) or has sent wins the race.
CANCELLABLE = LEASABLE
PENDING_REPORT_TTL_S: Final = 3600  # how long a report that beat its settle waits for it
RECENT_SENDS_S: Final = 3600  # how far back `recent_sends` can look
# Settled as sent (or unknown): what a report or a sent event may still be about.
RECENTLY_SENT: Final = frozenset({Status.SENT, Status.UNKNOWN})


class EventKind(StrEnum):
    """What one line of a message's history records."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    DEAD = "dead"
    RELEASED = "released"
    LEASE_EXPIRED = "lease_expired"
    REPORT = "report"
    REPLAYED = "replayed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"
    THROTTLED = "throttled"


class Outcome(StrEnum):
    """How a worker settles a lease; what each one writes is decided by the properties
    below, so both engines apply the same rules and only serialise them."""

    SENT = "sent"  # -> sent, msgid stored (None for 40241 "duplicate")
    RETRY = "retry"  # -> queued until next_attempt_at, attempt counted
    FAILED = "failed"  # -> failed (permanent for this message)
    DEAD = "dead"  # -> dead (retries exhausted, or CONFIG)
    RELEASE = "release"  # -> queued until next_attempt_at, no attempt counted (pause, shutdown)
    UNKNOWN = "unknown"  # -> unknown: sent, no answer, not to be resent blindly
    THROTTLED = "throttled"  # -> throttled: past the recipient's cap, not sent

    @property
    def status(self) -> Status:
        """The status the message takes."""
        return _OUTCOME_STATUS[self]

    @property
    def event_kind(self) -> EventKind:
        return _OUTCOME_EVENT[self]

    @property
    def counts_attempt(self) -> bool:
        """A settle that sent (or tried to) spends one of the message's attempts."""
        return self is not Outcome.RELEASE and self is not Outcome.THROTTLED

    @property
    def waits(self) -> bool:
        """The message goes back to the queue until its next_attempt_at."""
        return self is Outcome.RETRY or self is Outcome.RELEASE

    @property
    def keeps_msgid(self) -> bool:
        """WeChat took the message: its msgid and sent_at are stored."""
        return self is Outcome.SENT


_OUTCOME_STATUS: Final = {
    Outcome.SENT: Status.SENT,
    Outcome.RETRY: Status.QUEUED,
    Outcome.FAILED: Status.FAILED,
    Outcome.DEAD: Status.DEAD,
    Outcome.RELEASE: Status.QUEUED,
    Outcome.UNKNOWN: Status.UNKNOWN,
    Outcome.THROTTLED: Status.THROTTLED,
}
_OUTCOME_EVENT: Final = {
    Outcome.SENT: EventKind.SENT,
    Outcome.RETRY: EventKind.RETRY,
    Outcome.FAILED: EventKind.FAILED,
    Outcome.DEAD: EventKind.DEAD,
    Outcome.RELEASE: EventKind.RELEASED,
    Outcome.UNKNOWN: EventKind.UNKNOWN,
    Outcome.THROTTLED: EventKind.THROTTLED,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a message's history."""

    at: float
    kind: EventKind
    note: str = ""
    errcode: int | None = None

    def to_json(self) -> bytes:
        """The line as both engines store it: a JSON object."""
        return orjson.dumps(
            {"at": self.at, "kind": self.kind, "note": self.note, "errcode": self.errcode}
        )

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Event:
        return cls(item["at"], EventKind(item["kind"]), item.get("note") or "", item.get("errcode"))


def accepted_event(now: float) -> Event:
    """The first line of every message's history."""
    return Event(now, EventKind.ACCEPTED)


def first_events(message: NewMessage, now: float) -> list[Event]:
    """A new message's history as it is stored: accepted, then scheduled (with its time)
    or the verdict that settled it at once."""
    events = [accepted_event(now)]
    if message.verdict is not None:
        verdict = message.verdict
        events.append(Event(now, verdict.event_kind, verdict.note, verdict.errcode))
    elif message.send_at is not None:
        events.append(Event(now, EventKind.SCHEDULED, f"due at {rfc3339(message.send_at)}"))
    return events


MAX_EVENTS = 50  # the oldest lines are dropped beyond this


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What intake hands to `enqueue`.

    A message is deduplicated by its caller's `idempotency_key`, or, as a member of a
    keyed batch (`enqueue` given its NewBatch) without a key of its own, by its
    `batch_position` in that batch: two namespaces, so no key a caller sends can name a
    batch's member. `digest` is the request's canonical digest: a repeat of a key must
    carry the same one."""

    app: str
    payload: dict[str, Any]  # the template/send body, without client_msg_id
    idempotency_key: str | None = None
    trace_id: str | None = None
    batch_id: str | None = None
    id: str = field(default_factory=lambda: new_id())
    digest: str = ""
    batch_position: int | None = None
    kind: MessageKind = MessageKind.TEMPLATE
    urgent: bool = False  # sent even inside the app's quiet hours
    send_at: float | None = None  # scheduled: not sent before this time
    verdict: Verdict | None = None  # stored as already decided: never queued, never sent
    notify: bool = False  # its moves into settled statuses go to the webhook outbox
    callback_url: str | None = None  # the caller's own webhook for this message

    @property
    def status(self) -> Status:
        """The status it is stored in."""
        if self.verdict is not None:
            return self.verdict.status
        return Status.SCHEDULED if self.send_at is not None else Status.QUEUED

    @property
    def touser(self) -> str:
        return str(self.payload.get("touser", ""))

    @property
    def template_id(self) -> str:
        return str(self.payload.get("template_id", ""))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What intake decided instead of queueing a message: a settled status (SUPPRESSED,
    or FAILED such as a missing grant), with the reason kept on the record."""

    status: Status
    note: str
    errcode: int | None = None
    errmsg: str | None = None

    def __post_init__(self) -> None:
        if self.status not in SETTLED or self.status is Status.SENT:
            raise ValueError(f"a verdict settles a message unsent, not as {self.status}")

    @property
    def event_kind(self) -> EventKind:
        return EventKind.SUPPRESSED if self.status is Status.SUPPRESSED else EventKind.FAILED


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A keyed batch `enqueue` records with its messages: a repeat of the batch must
    carry the same digest (the same recipients, template and data), and its members
    without a key of their own are deduplicated by position."""

    id: str
    app: str
    key: str  # the caller's key for the batch, to name it in a conflict
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer for one enqueued message; `created` is False for a reused idempotency key."""

    id: str
    status: Status
    created: bool


@dataclass(slots=True)
class MessageRecord:
    """A stored message. Its fields (events apart) are the record's columns in both
    engines: `RECORD_FIELDS` and `decode_record` are derived from this class."""

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
    last_category: Category | None = None
    report_status: str | None = None  # WeChat's raw Status string, e.g. "failed:user block"
    trace_id: str | None = None
    batch_id: str | None = None
    batch_position: int | None = None  # its place among the batch's recipients, from 0
    created_at: float = 0.0
    updated_at: float = 0.0
    sent_at: float | None = None
    delivered_at: float | None = None  # when the report (success or failure) came in
    kind: MessageKind = MessageKind.TEMPLATE
    urgent: bool = False
    send_at: float | None = None
    notify: bool = False
    callback_url: str | None = None
    events: list[Event] = field(default_factory=list)


# The record's stored fields, in one order every engine uses (events are stored apart).
RECORD_FIELDS: Final = tuple(f.name for f in fields(MessageRecord) if f.name != "events")


def _decoder(annotation: Any) -> Callable[[Any], Any]:
    """How a stored value becomes the field's type: str, int, float, an enum, or JSON."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is dict:
        return orjson.loads
    if annotation is bool:
        return _stored_bool
    return annotation  # type: ignore[no-any-return]  # str, int, float and the StrEnums


def _stored_bool(value: Any) -> bool:
    """SQLite stores 0/1, Redis "0"/"1" (bool("0") would be True)."""
    return value in (1, "1", True)


_HINTS = get_type_hints(MessageRecord)
_DECODERS: Final = tuple(_decoder(_HINTS[name]) for name in RECORD_FIELDS)
# What an absent value of a field that is not optional reads as: its default (a field
# added later, e.g. `kind`, is absent from records stored before it).
_ABSENT: Final = tuple(
    None if f.default is MISSING else f.default for f in fields(MessageRecord) if f.name != "events"
)


def decode_record(values: Sequence[Any], events: list[Event] | None = None) -> MessageRecord:
    """A record from its stored values in RECORD_FIELDS order (None for an absent one).

    Each value goes through its field's type, so text (Redis) and typed columns
    (SQLite, whose RETURNING hands back integral REAL values as ints) read alike."""
    return MessageRecord(
        *[
            absent if value is None else decode(value)
            for decode, absent, value in zip(_DECODERS, _ABSENT, values, strict=True)
        ],
        events=[] if events is None else events,
    )


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
    category: Category | None = None
    note: str = ""
    # A release because the app is paused: due at once instead, if by the time storage
    # writes it the app has no pause in force (an operator resumed it meanwhile, after
    # the resume had made the held messages due, so this one would wait for nothing).
    while_paused: bool = False


@dataclass(frozen=True, slots=True)
class SettleChange:
    """What one settlement writes, decided here once; each engine only serialises it.

    Applied only while the message is `sending` under the same lease token."""

    id: str
    token: str
    status: Status
    counted: int  # 1 when an attempt is spent, else 0
    next_attempt_at: float | None  # None: keep the stored one (not waiting)
    msgid: int | None  # stored only when WeChat took the message
    sent_at: float | None
    answered: bool  # WeChat (or the transport) answered: the last error is replaced
    errcode: int | None
    errmsg: str | None
    category: Category | None
    event: Event
    while_paused: bool = False  # due now if the app has no pause in force (Settlement's)


def settle_change(s: Settlement, now: float) -> SettleChange:
    """The change a settlement makes at `now` (see Outcome's properties)."""
    outcome = s.outcome
    waits = outcome.waits
    keeps = outcome.keeps_msgid
    return SettleChange(
        id=s.lease.id,
        token=s.lease.token,
        status=outcome.status,
        counted=1 if outcome.counts_attempt else 0,
        next_attempt_at=(now if s.next_attempt_at is None else s.next_attempt_at)
        if waits
        else None,
        msgid=s.msgid if keeps else None,
        sent_at=now if keeps else None,
        # A settlement without any answer (a plain release) keeps the last one recorded.
        answered=s.errcode is not None or s.errmsg is not None or s.category is not None,
        errcode=s.errcode,
        errmsg=s.errmsg,
        category=s.category,
        event=Event(now, outcome.event_kind, s.note, s.errcode),
        while_paused=s.while_paused and outcome is Outcome.RELEASE,
    )


class PauseReason(StrEnum):
    QUOTA = "QUOTA"  # a daily quota is used up; lifts itself at the reset
    CONFIG = "CONFIG"  # the account is misconfigured; lifted by an operator (resume or replay)


@dataclass(frozen=True, slots=True)
class Pause:
    """An app the workers leave alone until `until` (None: until an operator resumes it)."""

    app: str
    reason: PauseReason
    since: float
    until: float | None = None
    errcode: int | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """A delivery report (TEMPLATESENDJOBFINISH), already decided by the WeChat layer:
    `status` is DELIVERED or REJECTED; `text` is WeChat's Status string, kept as said."""

    app: str
    msgid: int
    status: Status
    text: str

    def __post_init__(self) -> None:
        if self.status not in REPORTED:
            raise ValueError(
                f"a report moves a message to delivered or rejected, not {self.status}"
            )


REPORTED = frozenset({Status.DELIVERED, Status.REJECTED})
# What a subscribe sent event settles a message as (apply_sent_result).
SENT_RESULTS = frozenset({Status.DELIVERED, Status.FAILED})


@dataclass(frozen=True, slots=True)
class ReportApplied:
    """What a delivery report (TEMPLATESENDJOBFINISH) did."""

    message_id: str | None  # None: no message with that msgid (yet); the report is kept a while
    status: Status | None
    changed: bool  # False for a repeated report (WeChat retries) or an unknown msgid


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel did to one message."""

    id: str
    status: Status | None  # its status after the call; None: no such message
    cancelled: bool  # True when this call cancelled it (else a worker or an earlier call won)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One entry of the webhook outbox: a message of `notify=True` moved into a settled
    status. Storage writes it in the same atomic step as the move, so a status change a
    caller cares about is never lost between the two; the webhook dispatcher delivers
    it. The fields are a snapshot taken at the move; `seq` orders a store's events."""

    seq: str  # SQLite: the row number; Redis: the outbox stream's entry id
    message_id: str
    app: str
    status: Status
    at: float
    errcode: int | None = None
    errmsg: str | None = None
    msgid: int | None = None


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

    async def writable(self) -> bool:
        """False while the storage answers but refuses writes (a full disk, an I/O error,
        a Redis that cannot persist or is out of memory), True once it takes them again
        (readiness: `storage_writable`)."""
        ...

    # -- intake ---------------------------------------------------------------
    async def enqueue(
        self, messages: Sequence[NewMessage], now: float, batch: NewBatch | None = None
    ) -> list[Enqueued]:
        """Store messages durably (one atomic write for the whole sequence); return only
        after they are committed. A message whose (app, idempotency_key), or (batch_id,
        batch_position) in the keyed `batch`, is already stored with the same digest is
        not stored again: its
        Enqueued names the first id, created=False. With another digest (or a stored
        `batch` of the same id with another digest), IdempotencyConflict is raised and
        nothing is stored. A stored message without a digest (from before digests were
        kept) matches any."""
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
        `sending` with a deadline of now + lease_s. (A queue in partitions, Redis
        Cluster's, takes its partitions in turn: oldest due first within each, and among
        what one call takes.)"""
        ...

    async def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        """Apply worker outcomes atomically. A settlement whose lease token no longer
        matches (the lease expired and another worker took the message) is refused:
        False at its position, nothing written for it."""
        ...

    async def cancel(self, ids: Sequence[str], now: float) -> list[Cancelled]:
        """scheduled or queued -> cancelled, each message atomically, with a `cancelled`
        event; one a worker holds (sending) or has settled is left as it is, and its
        answer says which status won. In the order of `ids`."""
        ...

    async def replay(self, ids: Sequence[str], now: float) -> int:
        """REPLAYABLE messages back to queued with attempts reset; the count moved."""
        ...

    async def replay_dead(self, flt: DeadLetterFilter, now: float) -> int:
        """Every dead message matching the filter back to queued; the count moved."""
        ...

    # -- reads ------------------------------------------------------------------
    async def get(self, message_id: str) -> MessageRecord | None: ...

    async def list(self, flt: ListFilter, limit: int, cursor: str | None = None) -> Page:
        """Newest first; `cursor` is the `next_cursor` of the previous page."""
        ...

    async def recent_sends(self, app: str, touser: str, since: float) -> list[MessageRecord]:
        """Messages of `app` to `touser` that a worker settled sent or unknown at or after
        `since` (at most RECENT_SENDS_S ago) and that are still in that status, newest
        first, without events: what a delivery report without a usable msgid, or a
        subscribe sent event, is matched against."""
        ...

    async def batch_counts(self, batch_id: str) -> dict[Status, int] | None:
        """Messages of a batch per status, or None when no such batch exists."""
        ...

    async def oldest(self, status: Status) -> MessageRecord | None:
        """The message in `status` accepted first (lowest id), without events; None for
        none. The console shows the age of the oldest queued message with it."""
        ...

    async def counts(self, app: str | None = None) -> dict[Status, int]:
        """Messages per status (every status present, zeros included)."""
        ...

    # -- delivery reports ---------------------------------------------------------
    async def apply_report(self, report: Report, now: float) -> ReportApplied:
        """sent -> report.status (delivered or rejected), found by (app, msgid). Idempotent.
        A report for a msgid not stored yet (the report can beat the worker's settle) is
        kept for PENDING_REPORT_TTL_S and applied when a settle stores that msgid."""
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

    def template_store(self) -> TemplateStore:
        """Where this engine keeps each app's template registry."""
        ...

    def suppression_store(self) -> SuppressionStore:
        """Where this engine keeps each app's suppression list."""
        ...

    # -- subscribe messages (docs/subscribe.md) -----------------------------------------
    def grant_store(self) -> GrantStore:
        """The grant ledger of subscribe messages (backends/grants.py)."""
        ...

    async def apply_sent_result(
        self, message_id: str, status: Status, text: str, now: float
    ) -> ReportApplied:
        """A subscribe sent event's word on one message: sent or unknown -> `status`
        (DELIVERED or FAILED), with a report event noting `text` (and the webhook outbox
        entry of a notify message); changed False when it is in neither status.
        backends/sent_events.py finds the message."""
        ...

    async def keep_sent_result(
        self,
        app: str,
        touser: str,
        template_id: str,
        result: tuple[Status, str],
        now: float,
        ttl_s: float,
    ) -> None:
        """Keep a sent event's (status, text) that matched no message yet (it beat the
        worker's settle) for `ttl_s`, after any kept before for the same key."""
        ...

    async def take_sent_result(
        self, app: str, touser: str, template_id: str, now: float
    ) -> tuple[Status, str] | None:
        """The oldest kept (status, text) of the key still in time, removed; None if none."""
        ...

    def cap_store(self) -> CapStore:
        """Where this engine keeps per-recipient send slots (caps.py)."""
        ...

    def dedupe_store(self) -> DedupeStore:
        """Where this engine keeps the dedupe window's first ids (dedupe.py)."""
        ...

    def api_key_store(self) -> ApiKeyStore:
        """Where this engine keeps the API keys made by `wxgate keys new` (api_keys.py)."""
        ...

    def audit_log(self) -> AuditLog:
        """Where this engine keeps the audit log of operator actions (audit.py)."""
        ...

    def webhook_outbox(self) -> WebhookOutbox:
        """The webhook outbox of this engine, as the dispatcher reads it."""
        ...

    async def oldest_queued(self, apps: Sequence[str]) -> dict[str, float]:
        """Per app of `apps` that has messages waiting to be sent (queued, or sending),
        when its oldest such message was created (its id's time)."""
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
