"""The webhook outbox as the dispatcher sees it: claim, finish, list, replay, measure.

Storage writes an outbox event (base.WebhookEvent) in the same atomic step as a
notify message's move into a settled status; this protocol is how the webhook
dispatcher reads those events back, one engine each (sqlite_webhooks.py,
redis_webhooks.py), reached with `Backend.webhook_outbox()`. The rules both
engines keep:
- an event is claimed only while no earlier event of the same message is still
  undelivered (pending or claimed): a message's events reach its receiver in order;
- a claim is a lease: until `deadline` no other dispatcher takes the event; a lease
  that runs out makes it claimable again (at-least-once: it may be posted twice, with
  the same `webhook_id`, so a receiver de-duplicates);
- `finish` applies only under the claim's token: a dispatcher whose lease ran out and
  was taken over writes nothing;
- a dead event stays until replayed; a delivered one is gone from every listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from wxgate.backends.base import WebhookEvent


class HookState(StrEnum):
    """Where an outbox event stands."""

    PENDING = "pending"  # waiting for a dispatcher, or for its retry time
    SENDING = "sending"  # claimed by a dispatcher until its lease deadline
    DEAD = "dead"  # retries ran out; replayable


class HookOutcome(StrEnum):
    """How a dispatcher finishes a claim."""

    DELIVERED = "delivered"  # the receiver answered 2xx: the event is done
    RETRY = "retry"  # back to pending until next_attempt_at
    DEAD = "dead"  # given up: kept as dead until replayed


@dataclass(frozen=True, slots=True)
class HookClaim:
    """An event a dispatcher holds until `deadline`; finish it with its `token`.

    The message's own fields (recipient, keys, its callback URL) are read with the
    claim; they are None when the message record is gone (purged)."""

    event: WebhookEvent
    attempts: int  # attempts made before this claim
    token: str
    deadline: float
    touser: str | None = None
    idempotency_key: str | None = None
    batch_id: str | None = None
    callback_url: str | None = None

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.event)


def webhook_id(event: WebhookEvent) -> str:
    """The event's `webhook-id`: the same on every attempt and replay of this event, and
    no other event's (the message id with the event's place in its store)."""
    return f"msg_{event.message_id}_{event.seq}"


@dataclass(frozen=True, slots=True)
class HookResult:
    claim: HookClaim
    outcome: HookOutcome
    next_attempt_at: float | None = None  # RETRY
    error: str | None = None  # why the attempt failed (no secret, no body)


@dataclass(frozen=True, slots=True)
class HookEntry:
    """An undelivered event as listings show it."""

    event: WebhookEvent
    state: HookState
    attempts: int
    next_attempt_at: float  # its retry time, lease deadline, or (dead) when it died
    last_error: str | None


@dataclass(frozen=True, slots=True)
class HookBacklog:
    """One app's outbox at a glance (metrics, the console, `wxgate webhooks list`)."""

    app: str
    pending: int  # events not delivered yet, claimed ones included
    dead: int
    oldest_at: float | None  # when the oldest pending event was written; None: none pending

    def oldest_age(self, now: float) -> float:
        return 0.0 if self.oldest_at is None else max(0.0, now - self.oldest_at)


class WebhookOutbox(Protocol):
    """The outbox of one storage engine (see the module docstring)."""

    async def claim(
        self, apps: Sequence[str], limit: int, lease_s: float, now: float
    ) -> list[HookClaim]:
        """Up to `limit` due events of `apps` (pending with next_attempt_at <= now, or
        claimed with an expired lease), each the oldest undelivered event of its message,
        leased until now + lease_s; oldest due first within an app."""
        ...

    async def finish(self, results: Sequence[HookResult], now: float) -> list[bool]:
        """Apply each result; False (nothing written) where the claim's lease was lost."""
        ...

    async def entries(self, app: str, state: HookState, limit: int) -> list[HookEntry]:
        """Undelivered events of `app` in `state` (PENDING includes claimed ones), oldest
        first."""
        ...

    async def replay(self, app: str, seqs: Sequence[str] | None, now: float) -> int:
        """Dead events of `app` (those named, or every one for None) back to pending, due
        now with attempts reset and their webhook ids unchanged; the count moved."""
        ...

    async def backlog(self, apps: Sequence[str]) -> list[HookBacklog]:
        """Each app's pending and dead counts and its oldest pending event, in `apps` order."""
        ...

    async def purge(self, apps: Sequence[str], older_than: float) -> int:
        """Forget the delivered and dead events of `apps` finished before `older_than`;
        the count of dead ones forgotten (and, in SQLite, of delivered ones)."""
        ...
