"""The storage contract, run against every engine (see conftest.OPENERS).

Only the `Backend` protocol is used here: no SQL, no Redis keys, no engine
internals. Time is a fake timeline passed as `now`, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest

from tests.backends.conftest import OpenBackend
from wxgate.backends.base import (
    MAX_EVENTS,
    Backend,
    DeadLetterFilter,
    EventKind,
    IdempotencyConflict,
    Lease,
    ListFilter,
    NewBatch,
    NewMessage,
    Outcome,
    Pause,
    PauseReason,
    Report,
    Settlement,
    Status,
    Verdict,
    new_id,
    send_burst,
)
from wxgate.backends.redis import RedisBackend
from wxgate.backends.sqlite import SqliteBackend
from wxgate.tokenbucket import WHOLE_EPSILON
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.tokenstore import CachedToken

T0 = 1_700_000_000.0
BIG_MSGID = 2**53 + 12345  # a float would lose it: WeChat's msgids are int64
_times = itertools.count()


def message(
    app: str = "shop",
    touser: str = "o-user-1",
    *,
    key: str | None = None,
    batch: str | None = None,
    trace: str | None = None,
    at: float | None = None,
    **payload: Any,
) -> NewMessage:
    """A message whose id sorts after every earlier one (ids are time-ordered)."""
    created = at if at is not None else T0 + next(_times) / 1000
    body = {"touser": touser, "template_id": "tpl-order", "data": {"k1": {"value": "已发货"}}}
    body.update(payload)
    return NewMessage(
        app, body, idempotency_key=key, trace_id=trace, batch_id=batch, id=new_id(created)
    )


async def enqueue_one(backend: Backend, now: float = T0, **kwargs: Any) -> str:
    [answer] = await backend.enqueue([message(**kwargs)], now)
    return answer.id


async def lease_only(backend: Backend, message_id: str, now: float, lease_s: float = 30) -> Lease:
    """Lease when `message_id` is the one message due, and check that it was."""
    leases = await backend.lease_batch("worker-a", 10, lease_s, now)
    assert [lease.id for lease in leases] == [message_id]
    return leases[0]


async def settle_one(
    backend: Backend, lease: Lease, outcome: Outcome, now: float, **kwargs: Any
) -> bool:
    [ok] = await backend.settle([Settlement(lease, outcome, **kwargs)], now)
    return ok


async def to_status(backend: Backend, outcome: Outcome, now: float, **kwargs: Any) -> str:
    """A new message taken through one lease and settled with `outcome` at `now`."""
    app = kwargs.pop("app", "shop")
    message_id = await enqueue_one(backend, now, app=app)
    lease = await lease_only(backend, message_id, now)
    assert await settle_one(backend, lease, outcome, now, **kwargs)
    return message_id


async def sent_message(backend: Backend, msgid: int, now: float, app: str = "shop") -> str:
    return await to_status(backend, Outcome.SENT, now, app=app, msgid=msgid, errcode=0)


async def status_of(backend: Backend, message_id: str) -> Status:
    record = await backend.get(message_id)
    assert record is not None
    return record.status


# -- intake ----------------------------------------------------------------------------


async def test_enqueue_stores_a_queued_record_with_every_field(backend: Backend) -> None:
    new = message(touser="o-abc", key="order-1", batch=None, trace="trace-1")
    [answer] = await backend.enqueue([new], T0)

    assert (answer.id, answer.status, answer.created) == (new.id, Status.QUEUED, True)
    record = await backend.get(new.id)
    assert record is not None
    assert (record.app, record.touser, record.template_id) == ("shop", "o-abc", "tpl-order")
    assert record.payload == new.payload
    assert record.status is Status.QUEUED
    assert (record.attempts, record.next_attempt_at) == (0, T0)
    assert (record.idempotency_key, record.trace_id) == ("order-1", "trace-1")
    assert (record.created_at, record.updated_at) == (T0, T0)
    assert record.msgid is None and record.sent_at is None and record.delivered_at is None


async def test_enqueue_many_answers_each_message_in_order(backend: Backend) -> None:
    news = [message(touser=f"o-{i}") for i in range(5)]
    answers = await backend.enqueue(news, T0)

    assert [a.id for a in answers] == [m.id for m in news]
    assert all(a.created and a.status is Status.QUEUED for a in answers)
    assert (await backend.counts())[Status.QUEUED] == 5


async def test_enqueue_of_nothing_stores_nothing(backend: Backend) -> None:
    assert await backend.enqueue([], T0) == []
    assert sum((await backend.counts()).values()) == 0


async def test_payload_round_trips_exactly(backend: Backend) -> None:
    payload = {
        "url": "https://example.com/o?id=1&x=中文",
        "miniprogram": {"appid": "wx123", "pagepath": "pages/index?a=1"},
        "data": {"amount": {"value": "¥12.50", "color": "#173177"}, "n": {"value": 2**62}},
    }
    message_id = await enqueue_one(backend, **payload)
    record = await backend.get(message_id)
    assert record is not None
    assert record.payload["data"] == payload["data"]
    assert record.payload["url"] == payload["url"]
    assert record.payload["miniprogram"] == payload["miniprogram"]


async def test_new_message_has_an_accepted_event(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    record = await backend.get(message_id)
    assert record is not None
    assert [(e.kind, e.at) for e in record.events] == [("accepted", T0)]


async def test_repeated_idempotency_key_names_the_first_id_and_stores_nothing(
    backend: Backend,
) -> None:
    first = await enqueue_one(backend, key="order-7")
    [again] = await backend.enqueue([message(key="order-7", touser="o-other")], T0 + 5)

    assert (again.id, again.created) == (first, False)
    assert (await backend.counts())[Status.QUEUED] == 1
    record = await backend.get(first)
    assert record is not None and record.touser == "o-user-1"


async def test_repeated_idempotency_key_within_one_call_stores_one_message(
    backend: Backend,
) -> None:
    a, b, c = message(key="k"), message(key="k"), message(key="other")
    answers = await backend.enqueue([a, b, c], T0)

    assert [(x.id, x.created) for x in answers] == [(a.id, True), (a.id, False), (c.id, True)]
    assert await backend.get(b.id) is None
    assert (await backend.counts())[Status.QUEUED] == 2


async def test_idempotency_key_belongs_to_one_app(backend: Backend) -> None:
    answers = await backend.enqueue([message("shop", key="k"), message("bank", key="k")], T0)
    assert all(a.created for a in answers)
    assert answers[0].id != answers[1].id


async def test_repeated_key_answers_the_current_status_of_the_first(backend: Backend) -> None:
    first = await enqueue_one(backend, key="order-9")
    lease = await lease_only(backend, first, T0 + 1)
    await settle_one(backend, lease, Outcome.SENT, T0 + 2, msgid=BIG_MSGID)

    [again] = await backend.enqueue([message(key="order-9")], T0 + 3)
    assert (again.id, again.status, again.created) == (first, Status.SENT, False)


def digested(digest: str, **kwargs: Any) -> NewMessage:
    return replace(message(**kwargs), digest=digest)


def members(batch: NewBatch, count: int, digest: str = "d") -> list[NewMessage]:
    """The members of a keyed batch, without keys of their own."""
    return [
        replace(message(touser=f"o-{n}", batch=batch.id), batch_position=n, digest=digest)
        for n in range(count)
    ]


async def test_a_key_repeated_with_the_same_digest_names_the_first(backend: Backend) -> None:
    first = await backend.enqueue([digested("same", key="order-1")], T0)
    again = await backend.enqueue([digested("same", key="order-1")], T0 + 1)
    assert (again[0].id, again[0].created) == (first[0].id, False)


async def test_a_key_repeated_for_another_request_is_a_conflict_storing_nothing(
    backend: Backend,
) -> None:
    await backend.enqueue([digested("first", key="order-1")], T0)
    with pytest.raises(IdempotencyConflict) as conflict:
        await backend.enqueue([message(touser="o-new"), digested("other", key="order-1")], T0 + 1)
    assert conflict.value.key == "order-1"
    assert (await backend.counts())[Status.QUEUED] == 1  # o-new was not stored either


async def test_one_key_twice_in_one_call_with_two_digests_is_a_conflict(backend: Backend) -> None:
    with pytest.raises(IdempotencyConflict):
        await backend.enqueue([digested("a", key="k"), digested("b", key="k")], T0)
    assert (await backend.counts())[Status.QUEUED] == 0


async def test_a_keyed_batch_repeated_answers_its_first_ids_in_order(backend: Backend) -> None:
    batch = NewBatch("batch-1", "shop", "campaign", digest="batch-digest")
    first = await backend.enqueue(members(batch, 3), T0, batch)
    again = await backend.enqueue(members(batch, 3), T0 + 1, batch)
    assert [a.id for a in again] == [f.id for f in first]
    assert not any(a.created for a in again)
    assert (await backend.batch_counts("batch-1") or {}).get(Status.QUEUED) == 3
    record = await backend.get(first[2].id)
    assert record is not None and (record.batch_position, record.idempotency_key) == (2, None)


async def test_a_keyed_batch_repeated_with_other_recipients_is_a_conflict(
    backend: Backend,
) -> None:
    batch = NewBatch("batch-1", "shop", "campaign", digest="two-recipients")
    await backend.enqueue(members(batch, 2), T0, batch)
    larger = replace(batch, digest="three-recipients")
    with pytest.raises(IdempotencyConflict) as conflict:
        await backend.enqueue(members(larger, 3), T0 + 1, larger)
    assert conflict.value.key == "campaign"
    assert (await backend.counts())[Status.QUEUED] == 2


async def test_a_caller_key_never_names_a_batch_member(backend: Backend) -> None:
    batch = NewBatch("batch-1", "shop", "camp", digest="d")
    [_, member] = await backend.enqueue(members(batch, 2), T0, batch)
    for key in ("camp:1", "1", "batch-1:1"):
        [single] = await backend.enqueue([digested("single", key=key)], T0 + 1)
        assert single.created and single.id != member.id


async def test_a_conflict_in_a_large_batch_stores_none_of_it(backend: Backend) -> None:
    await backend.enqueue([digested("before", key="taken")], T0)
    batch = NewBatch("big", "shop", "big-campaign", digest="d")
    recipients = members(batch, 2500)
    recipients[2200] = replace(recipients[2200], idempotency_key="taken", digest="other")
    with pytest.raises(IdempotencyConflict) as conflict:
        await backend.enqueue(recipients, T0 + 1, batch)
    assert conflict.value.key == "taken"
    assert (await backend.counts())[Status.QUEUED] == 1


# -- scheduled, decided at intake, cancelled ---------------------------------------------


async def test_a_scheduled_message_waits_for_its_time_then_is_leased(backend: Backend) -> None:
    later = replace(message(touser="o-later"), send_at=T0 + 600)
    [answer] = await backend.enqueue([later], T0)
    assert (answer.status, await status_of(backend, later.id)) == (Status.SCHEDULED,) * 2
    assert await backend.lease_batch("w", 10, 30, T0 + 599) == []
    assert (await backend.counts())[Status.SCHEDULED] == 1

    [lease] = await backend.lease_batch("w", 10, 30, T0 + 600)
    assert lease.id == later.id and lease.record.send_at == T0 + 600
    record = await backend.get(later.id)
    assert record is not None and record.status is Status.SENDING
    assert [e.kind for e in record.events] == [EventKind.ACCEPTED, EventKind.SCHEDULED]
    assert (await backend.counts())[Status.SCHEDULED] == 0


async def test_a_message_decided_at_intake_is_stored_settled_and_never_leased(
    backend: Backend,
) -> None:
    verdict = Verdict(Status.SUPPRESSED, "not following (43004)", 43004, "require subscribe")
    decided = replace(message(touser="o-gone"), verdict=verdict)
    answer, _ = await backend.enqueue([decided, message(touser="o-here")], T0)
    assert answer.status is Status.SUPPRESSED
    leases = await backend.lease_batch("w", 10, 30, T0 + 1)
    assert [lease.record.touser for lease in leases] == ["o-here"]
    record = await backend.get(decided.id)
    assert record is not None and record.status is Status.SUPPRESSED
    assert (record.last_errcode, record.last_errmsg) == (43004, "require subscribe")
    assert record.events[-1].kind is EventKind.SUPPRESSED
    assert record.events[-1].note == "not following (43004)"
    assert (await backend.counts())[Status.SUPPRESSED] == 1
    assert await backend.purge(T0 + 1) == 1  # settled: purged with the others


async def test_kind_and_urgency_are_stored_with_the_message(backend: Backend) -> None:
    sub = replace(message(), kind=MessageKind.SUBSCRIBE, urgent=True)
    await backend.enqueue([sub], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    assert (lease.record.kind, lease.record.urgent) == (MessageKind.SUBSCRIBE, True)


async def test_cancel_takes_scheduled_and_queued_messages_and_reports_the_rest(
    backend: Backend,
) -> None:
    scheduled = replace(message(touser="o-s"), send_at=T0 + 60)
    queued, held = message(touser="o-q"), message(touser="o-h", at=T0 - 1)
    await backend.enqueue([held], T0 - 1)
    [lease] = await backend.lease_batch("w", 1, 30, T0)
    await backend.enqueue([scheduled, queued], T0)

    answers = await backend.cancel([scheduled.id, queued.id, lease.id, "nope"], T0 + 1)

    assert [(a.status, a.cancelled) for a in answers] == [
        (Status.CANCELLED, True),
        (Status.CANCELLED, True),
        (Status.SENDING, False),  # a worker holds it: the send wins
        (None, False),
    ]
    assert await settle_one(backend, lease, Outcome.SENT, T0 + 2, msgid=1)
    assert await backend.lease_batch("w", 10, 30, T0 + 120) == []  # neither comes back
    record = await backend.get(queued.id)
    assert record is not None and record.events[-1].kind is EventKind.CANCELLED
    counts = await backend.counts()
    assert (counts[Status.CANCELLED], counts[Status.QUEUED], counts[Status.SCHEDULED]) == (2, 0, 0)
    again = await backend.cancel([queued.id], T0 + 2)
    assert [(a.status, a.cancelled) for a in again] == [(Status.CANCELLED, False)]


async def test_an_unknown_outcome_is_settled_and_replayable(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    assert await settle_one(backend, lease, Outcome.UNKNOWN, T0 + 1, note="no answer")
    assert await status_of(backend, message_id) is Status.UNKNOWN
    assert await backend.lease_batch("w", 10, 30, T0 + 999) == []
    assert await backend.replay([message_id], T0 + 2) == 1
    assert await status_of(backend, message_id) is Status.QUEUED


async def test_a_throttled_message_spends_no_attempt(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    assert await settle_one(backend, lease, Outcome.THROTTLED, T0 + 1, note="5/1h")
    record = await backend.get(message_id)
    assert record is not None and (record.status, record.attempts) == (Status.THROTTLED, 0)


# -- the webhook outbox --------------------------------------------------------------


async def outbox(backend: Backend, app: str = "shop") -> list[tuple[str, str, str]]:
    """(message_id, status, errcode) of the app's outbox entries, in order, read from
    each engine's own structure (the webhook dispatcher has its own store for this)."""
    if isinstance(backend, SqliteBackend):
        sql = "SELECT message_id, status, errcode FROM webhook_events WHERE app = ? ORDER BY seq"
        rows = await backend.database.read(lambda conn: conn.execute(sql, (app,)).fetchall())
        return [(mid, status, "" if code is None else str(code)) for mid, status, code in rows]
    assert isinstance(backend, RedisBackend)
    keys = backend.keys
    entries = [
        entry
        for p in range(keys.partitions)
        for entry in await backend._client.xrange(keys.at(p).hooks(app))
    ]  # a partitioned queue has an outbox in each partition: in stream id order
    entries.sort(key=lambda entry: tuple(int(part) for part in entry[0].split("-")))
    return [(f["message_id"], f["status"], f["errcode"]) for _, f in entries]


async def test_every_settled_move_of_a_notify_message_reaches_the_outbox(
    backend: Backend,
) -> None:
    watched = replace(message(touser="o-w"), notify=True, callback_url="https://x.example/h")
    quiet = message(touser="o-q")
    await backend.enqueue([watched, quiet], T0)
    leases = {lease.id: lease for lease in await backend.lease_batch("w", 10, 30, T0)}
    settlements = [
        Settlement(leases[watched.id], Outcome.SENT, msgid=BIG_MSGID),
        Settlement(leases[quiet.id], Outcome.SENT, msgid=BIG_MSGID + 1),
    ]
    await backend.settle(settlements, T0 + 1)
    await backend.apply_report(
        Report("shop", BIG_MSGID, Status.REJECTED, "failed:user block"), T0 + 2
    )

    assert await outbox(backend) == [
        (watched.id, "sent", ""),
        (watched.id, "rejected", ""),
    ]
    record = await backend.get(watched.id)
    assert record is not None and (record.notify, record.callback_url) == (
        True,
        "https://x.example/h",
    )


async def test_a_notify_message_settled_at_intake_or_cancelled_reaches_the_outbox(
    backend: Backend,
) -> None:
    verdict = Verdict(Status.SUPPRESSED, "unfollowed", 43004)
    decided = replace(message(touser="o-d"), notify=True, verdict=verdict)
    scheduled = replace(message(touser="o-s"), notify=True, send_at=T0 + 60)
    await backend.enqueue([decided, scheduled], T0)
    await backend.cancel([scheduled.id], T0 + 1)
    assert await outbox(backend) == [
        (decided.id, "suppressed", "43004"),
        (scheduled.id, "cancelled", ""),
    ]


async def test_a_report_that_beat_its_settle_gives_both_moves_in_order(backend: Backend) -> None:
    watched = replace(message(), notify=True)
    await backend.enqueue([watched], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    await backend.apply_report(Report("shop", BIG_MSGID, Status.DELIVERED, "success"), T0 + 1)
    await settle_one(backend, lease, Outcome.SENT, T0 + 2, msgid=BIG_MSGID)
    assert [status for _, status, _ in await outbox(backend)] == ["sent", "delivered"]


# -- recent sends to one recipient ---------------------------------------------------


async def test_recent_sends_finds_what_a_recipient_was_sent_lately(backend: Backend) -> None:
    old, sent, unknown, other = (
        message(touser="o-a"),
        message(touser="o-a"),
        message(touser="o-a"),
        message(touser="o-b"),
    )
    await backend.enqueue([old, sent, unknown, other], T0)
    leases = {lease.id: lease for lease in await backend.lease_batch("w", 10, 30, T0)}
    await settle_one(backend, leases[old.id], Outcome.SENT, T0 + 1, msgid=1)
    await backend.settle(
        [
            Settlement(leases[sent.id], Outcome.SENT, msgid=2),
            Settlement(leases[unknown.id], Outcome.UNKNOWN),
            Settlement(leases[other.id], Outcome.SENT, msgid=3),
        ],
        T0 + 500,
    )
    await backend.apply_report(Report("shop", 1, Status.DELIVERED, "success"), T0 + 501)

    found = await backend.recent_sends("shop", "o-a", T0 + 100)
    assert sorted(r.id for r in found) == sorted([sent.id, unknown.id])
    assert {r.status for r in found} == {Status.SENT, Status.UNKNOWN}
    assert await backend.recent_sends("shop", "o-a", T0 + 600) == []
    assert await backend.recent_sends("bank", "o-a", T0) == []


# -- leasing ---------------------------------------------------------------------------


async def test_lease_moves_a_due_message_to_sending_until_a_deadline(backend: Backend) -> None:
    message_id = await enqueue_one(backend, touser="o-lease")
    [lease] = await backend.lease_batch("worker-a", 10, 30, T0 + 1)

    assert lease.id == message_id and lease.token
    assert lease.deadline == T0 + 31
    assert (lease.record.app, lease.record.touser, lease.record.attempts) == ("shop", "o-lease", 0)
    assert lease.record.payload["template_id"] == "tpl-order"
    assert await status_of(backend, message_id) is Status.SENDING


async def test_lease_takes_at_most_limit(backend: Backend) -> None:
    await backend.enqueue([message() for _ in range(7)], T0)
    first = await backend.lease_batch("worker-a", 3, 30, T0)
    second = await backend.lease_batch("worker-a", 10, 30, T0)
    assert (len(first), len(second)) == (3, 4)
    assert await backend.lease_batch("worker-a", 10, 30, T0) == []


async def test_lease_takes_the_oldest_due_first(backend: Backend) -> None:
    # A partitioned Redis queue merges its partitions' lines by stream id, which is the
    # server's clock in milliseconds, not T0's: the pauses keep b, c and a's return to
    # the line (at the lease call) in different milliseconds, as they would be in use.
    a = await enqueue_one(backend, T0)
    lease_a = await lease_only(backend, a, T0)
    await settle_one(backend, lease_a, Outcome.RETRY, T0, next_attempt_at=T0 + 10)
    b = await enqueue_one(backend, T0 + 1)
    await asyncio.sleep(0.003)
    c = await enqueue_one(backend, T0 + 2)
    await asyncio.sleep(0.003)

    leases = await backend.lease_batch("worker-a", 10, 30, T0 + 20)
    assert [lease.id for lease in leases] == [b, c, a]


async def test_lease_leaves_messages_not_yet_due(backend: Backend) -> None:
    message_id = await enqueue_one(backend, T0)
    lease = await lease_only(backend, message_id, T0)
    await settle_one(backend, lease, Outcome.RETRY, T0, next_attempt_at=T0 + 60)

    assert await backend.lease_batch("worker-a", 10, 30, T0 + 59) == []
    assert [x.id for x in await backend.lease_batch("worker-a", 10, 30, T0 + 60)] == [message_id]


async def test_leased_message_is_not_leased_again_before_its_deadline(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    await lease_only(backend, message_id, T0, lease_s=30)
    assert await backend.lease_batch("worker-b", 10, 30, T0 + 29.9) == []


async def test_lease_skips_excluded_apps(backend: Backend) -> None:
    paused = await enqueue_one(backend, app="paused")
    running = await enqueue_one(backend, app="running")
    leases = await backend.lease_batch("worker-a", 10, 30, T0, exclude_apps=frozenset({"paused"}))
    assert [lease.id for lease in leases] == [running]
    assert await status_of(backend, paused) is Status.QUEUED


async def test_expired_lease_is_leased_again_as_a_spent_attempt(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    first = await lease_only(backend, message_id, T0, lease_s=30)

    [second] = await backend.lease_batch("worker-b", 10, 30, T0 + 31)
    assert second.id == message_id and second.token != first.token
    assert second.record.attempts == 1
    record = await backend.get(message_id)
    assert record is not None and record.attempts == 1
    assert [e.kind for e in record.events] == ["accepted", "lease_expired"]


async def test_lease_keeps_taking_a_message_whose_expiries_spent_every_attempt(
    backend: Backend,
) -> None:
    message_id = await enqueue_one(backend)
    now = T0
    for _ in range(12):
        [lease] = await backend.lease_batch("worker-a", 10, 5, now)
        now += 6
    assert lease.id == message_id
    assert lease.record.attempts == 11


async def test_concurrent_leases_never_share_a_message(backend: Backend) -> None:
    await backend.enqueue([message() for _ in range(50)], T0)
    rounds = await asyncio.gather(
        *(backend.lease_batch(f"worker-{i}", 8, 30, T0) for i in range(8))
    )
    ids = [lease.id for leases in rounds for lease in leases]
    assert len(ids) == len(set(ids)) == 50


async def test_two_handles_on_one_store_never_lease_the_same_message(
    open_backend: OpenBackend,
) -> None:
    first, second = await open_backend(), await open_backend()
    await first.enqueue([message() for _ in range(60)], T0)
    rounds = await asyncio.gather(
        *(handle.lease_batch("worker", 7, 30, T0) for handle in [first, second] * 6)
    )
    ids = [lease.id for leases in rounds for lease in leases]
    assert len(ids) == len(set(ids)) == 60


# -- settling --------------------------------------------------------------------------


async def test_settle_sent_stores_the_msgid_exactly_and_counts_the_attempt(
    backend: Backend,
) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    assert await settle_one(
        backend, lease, Outcome.SENT, T0 + 2, msgid=BIG_MSGID, errcode=0, errmsg="ok"
    )

    record = await backend.get(message_id)
    assert record is not None
    assert record.status is Status.SENT
    assert record.msgid == BIG_MSGID and isinstance(record.msgid, int)
    assert (record.sent_at, record.updated_at, record.attempts) == (T0 + 2, T0 + 2, 1)
    assert record.events[-1].kind == "sent"


async def test_settle_sent_without_a_msgid_is_sent(backend: Backend) -> None:
    message_id = await to_status(backend, Outcome.SENT, T0, errcode=40241, errmsg="duplicate")
    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.msgid, record.last_errcode) == (Status.SENT, None, 40241)


async def test_settle_retry_requeues_at_next_attempt_at_with_the_error(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    await settle_one(
        backend,
        lease,
        Outcome.RETRY,
        T0 + 1,
        next_attempt_at=T0 + 9,
        errcode=-1,
        errmsg="system error rid: 1",
        category="TRANSIENT",
        note="backoff 8s",
    )

    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.next_attempt_at, record.attempts) == (Status.QUEUED, T0 + 9, 1)
    assert (record.last_errcode, record.last_errmsg, record.last_category) == (
        -1,
        "system error rid: 1",
        "TRANSIENT",
    )
    event = record.events[-1]
    assert (event.kind, event.errcode, event.note, event.at) == ("retry", -1, "backoff 8s", T0 + 1)


@pytest.mark.parametrize(
    ("outcome", "status", "errcode", "category"),
    [
        (Outcome.FAILED, Status.FAILED, 43101, "RECIPIENT"),
        (Outcome.DEAD, Status.DEAD, 48001, "CONFIG"),
    ],
)
async def test_settle_failed_or_dead_is_terminal_with_the_error(
    backend: Backend, outcome: Outcome, status: Status, errcode: int, category: str
) -> None:
    message_id = await to_status(
        backend, outcome, T0, errcode=errcode, errmsg="no", category=category
    )
    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.attempts) == (status, 1)
    assert (record.last_errcode, record.last_category) == (errcode, category)
    assert record.events[-1].kind == outcome.value
    assert await backend.lease_batch("worker-a", 10, 30, T0 + 3600) == []


async def test_settle_release_requeues_without_counting_an_attempt(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    await settle_one(backend, lease, Outcome.RELEASE, T0 + 1, next_attempt_at=T0 + 50)

    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.attempts, record.next_attempt_at) == (Status.QUEUED, 0, T0 + 50)
    assert record.events[-1].kind == "released"


async def test_release_without_an_answer_keeps_the_last_error(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    await settle_one(backend, lease, Outcome.RETRY, T0, errcode=-1, category="TRANSIENT")
    lease = await lease_only(backend, message_id, T0 + 1)
    await settle_one(backend, lease, Outcome.RELEASE, T0 + 1, note="shutdown")

    record = await backend.get(message_id)
    assert record is not None
    assert (record.last_errcode, record.last_category) == (-1, "TRANSIENT")


async def test_settle_with_a_stale_lease_token_is_refused_and_writes_nothing(
    backend: Backend,
) -> None:
    message_id = await enqueue_one(backend)
    late = await lease_only(backend, message_id, T0, lease_s=10)
    [current] = await backend.lease_batch("worker-b", 10, 30, T0 + 11)

    assert not await settle_one(backend, late, Outcome.FAILED, T0 + 12, errcode=40003)
    record = await backend.get(message_id)
    assert record is not None and record.status is Status.SENDING
    assert record.last_errcode is None
    assert await settle_one(backend, current, Outcome.SENT, T0 + 13, msgid=BIG_MSGID)
    assert await status_of(backend, message_id) is Status.SENT


async def test_settle_twice_with_one_lease_is_refused_the_second_time(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    assert await settle_one(backend, lease, Outcome.SENT, T0 + 1, msgid=BIG_MSGID)
    assert not await settle_one(backend, lease, Outcome.DEAD, T0 + 2)
    assert await status_of(backend, message_id) is Status.SENT


async def test_settle_after_the_deadline_stands_when_no_one_took_the_message(
    backend: Backend,
) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0, lease_s=10)
    assert await settle_one(backend, lease, Outcome.SENT, T0 + 60, msgid=BIG_MSGID)
    assert await status_of(backend, message_id) is Status.SENT


async def test_settle_answers_each_settlement_at_its_position(backend: Backend) -> None:
    ids = [a.id for a in await backend.enqueue([message(), message()], T0)]
    stale = await backend.lease_batch("worker-a", 1, 10, T0)
    await settle_one(backend, stale[0], Outcome.RELEASE, T0)
    leases = {lease.id: lease for lease in await backend.lease_batch("worker-b", 10, 30, T0 + 1)}
    assert set(leases) == set(ids)

    answers = await backend.settle(
        [
            Settlement(leases[ids[0]], Outcome.SENT, msgid=1),
            Settlement(stale[0], Outcome.DEAD),
            Settlement(leases[ids[1]], Outcome.SENT, msgid=2),
        ],
        T0 + 2,
    )
    assert answers == [True, False, True]
    assert {await status_of(backend, i) for i in ids} == {Status.SENT}


async def test_events_are_trimmed_to_the_newest_max_events(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    now = T0
    for n in range(MAX_EVENTS + 5):
        lease = await lease_only(backend, message_id, now)
        await settle_one(backend, lease, Outcome.RETRY, now, next_attempt_at=now, note=f"try {n}")
        now += 1

    record = await backend.get(message_id)
    assert record is not None
    assert len(record.events) == MAX_EVENTS
    assert record.events[-1].note == f"try {MAX_EVENTS + 4}"
    assert record.events[0].note == "try 5"


# -- replay ----------------------------------------------------------------------------


async def test_replay_returns_dead_and_failed_to_queued_with_attempts_reset(
    backend: Backend,
) -> None:
    dead = await to_status(backend, Outcome.DEAD, T0, errcode=48001)
    failed = await to_status(backend, Outcome.FAILED, T0, errcode=40003)

    assert await backend.replay([dead, failed], T0 + 100) == 2
    for message_id in (dead, failed):
        record = await backend.get(message_id)
        assert record is not None
        assert (record.status, record.attempts, record.next_attempt_at) == (
            Status.QUEUED,
            0,
            T0 + 100,
        )
        assert record.events[-1].kind == "replayed"
    leases = await backend.lease_batch("worker-a", 10, 30, T0 + 100)
    assert {lease.id for lease in leases} == {dead, failed}


async def test_replay_leaves_messages_that_are_not_dead_or_failed(backend: Backend) -> None:
    sent = await sent_message(backend, BIG_MSGID, T0)
    queued = await enqueue_one(backend, T0 + 1)

    assert await backend.replay([sent, queued, "01NOSUCHMESSAGE0000000000"], T0 + 2) == 0
    assert await status_of(backend, sent) is Status.SENT


async def test_replay_dead_filters_by_app_and_errcode(backend: Backend) -> None:
    shop_config = await to_status(backend, Outcome.DEAD, T0, errcode=48001)
    shop_transient = await to_status(backend, Outcome.DEAD, T0, errcode=-1)
    bank_config = await to_status(backend, Outcome.DEAD, T0, app="bank", errcode=48001)

    assert await backend.replay_dead(DeadLetterFilter(app="shop", errcode=48001), T0 + 5) == 1
    assert await status_of(backend, shop_config) is Status.QUEUED
    assert await status_of(backend, shop_transient) is Status.DEAD
    assert await status_of(backend, bank_config) is Status.DEAD


async def test_replay_dead_filters_by_when_it_died(backend: Backend) -> None:
    early = await to_status(backend, Outcome.DEAD, T0 + 10)
    middle = await to_status(backend, Outcome.DEAD, T0 + 20)
    late = await to_status(backend, Outcome.DEAD, T0 + 30)

    flt = DeadLetterFilter(since=T0 + 15, until=T0 + 25)
    assert await backend.replay_dead(flt, T0 + 40) == 1
    assert [await status_of(backend, i) for i in (early, middle, late)] == [
        Status.DEAD,
        Status.QUEUED,
        Status.DEAD,
    ]


async def test_replay_dead_leaves_failed_messages(backend: Backend) -> None:
    failed = await to_status(backend, Outcome.FAILED, T0, errcode=40003)
    dead = await to_status(backend, Outcome.DEAD, T0, errcode=-1)
    assert await backend.replay_dead(DeadLetterFilter(), T0 + 1) == 1
    assert await status_of(backend, failed) is Status.FAILED
    assert await status_of(backend, dead) is Status.QUEUED


# -- reads -----------------------------------------------------------------------------


async def test_get_of_an_unknown_id_is_none(backend: Backend) -> None:
    assert await backend.get(new_id(T0)) is None


async def test_list_is_newest_first(backend: Backend) -> None:
    ids = [await enqueue_one(backend, at=T0 + i) for i in range(4)]
    page = await backend.list(ListFilter(), 10)
    assert [r.id for r in page.items] == ids[::-1]
    assert page.next_cursor is None


async def test_list_pages_with_the_cursor_cover_every_message_once(backend: Backend) -> None:
    ids = [a.id for a in await backend.enqueue([message(at=T0 + i) for i in range(23)], T0)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await backend.list(ListFilter(), 5, cursor)
        assert len(page.items) <= 5
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_list_without_filters_pages_newest_first_across_apps(backend: Backend) -> None:
    apps = ["shop", "bank", "mall"]
    ids = [await enqueue_one(backend, at=T0 + i, app=apps[i % 3]) for i in range(11)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await backend.list(ListFilter(), 2, cursor)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_list_filters_are_anded(backend: Backend) -> None:
    shop_dead = await to_status(backend, Outcome.DEAD, T0, app="shop")
    await to_status(backend, Outcome.DEAD, T0, app="bank")
    await enqueue_one(backend, T0 + 1, app="shop")

    page = await backend.list(ListFilter(status=Status.DEAD, app="shop"), 10)
    assert [r.id for r in page.items] == [shop_dead]


async def test_list_filters_by_recipient_and_by_batch(backend: Backend) -> None:
    alice = await enqueue_one(backend, touser="o-alice")
    answers = await backend.enqueue([message(batch="b-1"), message(batch="b-1")], T0)
    await enqueue_one(backend, touser="o-bob")

    by_user = await backend.list(ListFilter(touser="o-alice"), 10)
    by_batch = await backend.list(ListFilter(batch_id="b-1"), 10)
    assert [r.id for r in by_user.items] == [alice]
    assert {r.id for r in by_batch.items} == {a.id for a in answers}


async def test_batch_counts_counts_the_messages_of_a_batch_per_status(backend: Backend) -> None:
    await backend.enqueue([message(batch="b-7") for _ in range(3)], T0)
    [lease] = await backend.lease_batch("worker-a", 1, 30, T0)
    await settle_one(backend, lease, Outcome.FAILED, T0, errcode=40003)
    await enqueue_one(backend, T0 + 1)  # not of the batch

    counts = await backend.batch_counts("b-7")
    assert counts is not None
    assert set(counts) == set(Status)
    assert (counts[Status.QUEUED], counts[Status.FAILED], sum(counts.values())) == (2, 1, 3)


async def test_batch_counts_of_an_unknown_batch_is_none(backend: Backend) -> None:
    await backend.enqueue([message(batch="b-known")], T0)
    assert await backend.batch_counts("b-unknown") is None


async def test_counts_has_every_status_and_filters_by_app(backend: Backend) -> None:
    assert await backend.counts() == dict.fromkeys(Status, 0)
    await to_status(backend, Outcome.DEAD, T0, app="shop")
    await enqueue_one(backend, T0 + 1, app="shop")
    await enqueue_one(backend, T0 + 1, app="bank")

    everyone, shop = await backend.counts(), await backend.counts("shop")
    assert set(everyone) == set(shop) == set(Status)
    assert (everyone[Status.QUEUED], everyone[Status.DEAD]) == (2, 1)
    assert (shop[Status.QUEUED], shop[Status.DEAD], shop[Status.SENT]) == (1, 1, 0)


# -- delivery reports ------------------------------------------------------------------


async def test_success_report_marks_a_sent_message_delivered(backend: Backend) -> None:
    message_id = await sent_message(backend, BIG_MSGID, T0)
    applied = await backend.apply_report(
        Report("shop", BIG_MSGID, Status.DELIVERED, "success"), T0 + 3
    )

    assert (applied.message_id, applied.status, applied.changed) == (
        message_id,
        Status.DELIVERED,
        True,
    )
    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.report_status, record.delivered_at) == (
        Status.DELIVERED,
        "success",
        T0 + 3,
    )
    assert record.events[-1].kind == "report"


@pytest.mark.parametrize("report", ["failed:user block", "failed: system failed"])
async def test_failed_report_marks_a_sent_message_rejected(backend: Backend, report: str) -> None:
    message_id = await sent_message(backend, BIG_MSGID, T0)
    applied = await backend.apply_report(Report("shop", BIG_MSGID, Status.REJECTED, report), T0 + 3)

    assert (applied.status, applied.changed) == (Status.REJECTED, True)
    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.report_status) == (Status.REJECTED, report)


async def test_repeated_report_changes_nothing(backend: Backend) -> None:
    message_id = await sent_message(backend, BIG_MSGID, T0)
    await backend.apply_report(Report("shop", BIG_MSGID, Status.DELIVERED, "success"), T0 + 3)
    again = await backend.apply_report(
        Report("shop", BIG_MSGID, Status.DELIVERED, "success"), T0 + 9
    )

    assert (again.message_id, again.status, again.changed) == (message_id, Status.DELIVERED, False)
    record = await backend.get(message_id)
    assert record is not None
    assert record.delivered_at == T0 + 3
    assert [e.kind for e in record.events].count("report") == 1


async def test_report_never_moves_a_delivered_message_back(backend: Backend) -> None:
    message_id = await sent_message(backend, BIG_MSGID, T0)
    await backend.apply_report(Report("shop", BIG_MSGID, Status.DELIVERED, "success"), T0 + 3)
    late = await backend.apply_report(
        Report("shop", BIG_MSGID, Status.REJECTED, "failed:user block"), T0 + 4
    )

    assert (late.status, late.changed) == (Status.DELIVERED, False)
    assert await status_of(backend, message_id) is Status.DELIVERED


async def test_report_before_its_msgid_is_stored_is_applied_by_the_settle(
    backend: Backend,
) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)

    early = await backend.apply_report(
        Report("shop", BIG_MSGID, Status.REJECTED, "failed:user block"), T0 + 1
    )
    assert (early.message_id, early.status, early.changed) == (None, None, False)
    assert await settle_one(backend, lease, Outcome.SENT, T0 + 2, msgid=BIG_MSGID)

    record = await backend.get(message_id)
    assert record is not None
    assert (record.status, record.report_status) == (Status.REJECTED, "failed:user block")


async def test_report_for_another_apps_msgid_changes_nothing(backend: Backend) -> None:
    message_id = await sent_message(backend, BIG_MSGID, T0, app="shop")
    applied = await backend.apply_report(
        Report("bank", BIG_MSGID, Status.DELIVERED, "success"), T0 + 1
    )

    assert (applied.message_id, applied.changed) == (None, False)
    assert await status_of(backend, message_id) is Status.SENT


async def test_kept_report_of_another_app_is_not_applied_by_a_settle(backend: Backend) -> None:
    await backend.apply_report(Report("bank", BIG_MSGID, Status.DELIVERED, "success"), T0)
    message_id = await sent_message(backend, BIG_MSGID, T0 + 1, app="shop")
    assert await status_of(backend, message_id) is Status.SENT


# -- callback nonces -------------------------------------------------------------------


async def test_nonce_is_fresh_only_once_within_its_ttl(backend: Backend) -> None:
    assert await backend.remember_nonce("shop", "n-1", 300, T0)
    assert not await backend.remember_nonce("shop", "n-1", 300, T0 + 299)


async def test_nonce_is_fresh_again_after_its_ttl(backend: Backend) -> None:
    assert await backend.remember_nonce("shop", "n-1", 300, T0)
    assert await backend.remember_nonce("shop", "n-1", 300, T0 + 301)


async def test_nonces_belong_to_one_app(backend: Backend) -> None:
    assert await backend.remember_nonce("shop", "n-1", 300, T0)
    assert await backend.remember_nonce("bank", "n-1", 300, T0)


# -- pauses ----------------------------------------------------------------------------


async def test_timed_pause_is_in_force_until_its_end(backend: Backend) -> None:
    pause = Pause("shop", PauseReason.QUOTA, since=T0, until=T0 + 100, errcode=45009, note="quota")
    await backend.pause_app(pause)

    assert await backend.pauses(T0 + 99) == {"shop": pause}
    assert await backend.pauses(T0 + 100) == {}


async def test_indefinite_pause_lasts_until_resumed(backend: Backend) -> None:
    pause = Pause("shop", PauseReason.CONFIG, since=T0, errcode=48001)
    await backend.pause_app(pause)

    assert await backend.pauses(T0 + 10**7) == {"shop": pause}
    assert await backend.resume_app("shop", T0)
    assert await backend.pauses(T0) == {}


async def test_resume_without_a_pause_is_false(backend: Backend) -> None:
    assert not await backend.resume_app("shop", T0)


async def test_resuming_a_timed_pause_makes_what_it_held_back_due_now(backend: Backend) -> None:
    held, waiting = message("shop"), message("shop")
    await backend.enqueue([held, waiting], T0)
    leases = {lease.id: lease for lease in await backend.lease_batch("w1", 10, 30, T0)}
    reset = T0 + 50_000
    await backend.pause_app(Pause("shop", PauseReason.QUOTA, since=T0, until=reset))
    await backend.settle(
        [
            Settlement(leases[held.id], Outcome.RELEASE, next_attempt_at=reset),
            Settlement(leases[waiting.id], Outcome.RETRY, next_attempt_at=T0 + 100),
        ],
        T0,
    )

    assert await backend.resume_app("shop", T0 + 10)
    due = await backend.lease_batch("w1", 10, 30, T0 + 10)

    assert [lease.id for lease in due] == [held.id]  # the backoff retry keeps its time
    assert await backend.pauses(T0 + 10) == {}


async def test_a_release_for_a_pause_written_after_the_resume_is_due_at_once(
    backend: Backend,
) -> None:
    # A worker released these because the app was paused until the quota reset; the
    # operator resumed before its settlement was written, so no resume will make them due.
    late, other = message("shop"), message("bank")
    await backend.enqueue([late, other], T0)
    leases = {lease.id: lease for lease in await backend.lease_batch("w1", 10, 30, T0)}
    reset = T0 + 50_000
    await backend.pause_app(Pause("shop", PauseReason.QUOTA, since=T0, until=reset))
    await backend.pause_app(Pause("bank", PauseReason.QUOTA, since=T0, until=reset))
    assert await backend.resume_app("shop", T0 + 5)
    await backend.settle(
        [
            Settlement(leases[late.id], Outcome.RELEASE, next_attempt_at=reset, while_paused=True),
            Settlement(leases[other.id], Outcome.RELEASE, next_attempt_at=reset, while_paused=True),
        ],
        T0 + 10,
    )

    due = await backend.lease_batch("w1", 10, 30, T0 + 10)
    assert [lease.id for lease in due] == [late.id]  # bank is still paused: it waits
    record = await backend.get(other.id)
    assert record is not None and record.next_attempt_at == reset


async def test_a_plain_release_keeps_its_time_without_a_pause(backend: Backend) -> None:
    message_id = await enqueue_one(backend)
    lease = await lease_only(backend, message_id, T0)
    await settle_one(backend, lease, Outcome.RELEASE, T0 + 1, next_attempt_at=T0 + 500)
    assert await backend.lease_batch("w1", 10, 30, T0 + 2) == []


async def test_pausing_again_replaces_the_pause(backend: Backend) -> None:
    await backend.pause_app(Pause("shop", PauseReason.QUOTA, since=T0, until=T0 + 100))
    await backend.pause_app(Pause("shop", PauseReason.CONFIG, since=T0 + 5))
    await backend.pause_app(Pause("bank", PauseReason.QUOTA, since=T0, until=T0 + 50))

    pauses = await backend.pauses(T0 + 200)
    assert pauses == {"shop": Pause("shop", PauseReason.CONFIG, since=T0 + 5)}


# -- send budget -----------------------------------------------------------------------


async def test_send_budget_starts_with_a_twentieth_of_a_second_of_rate(backend: Backend) -> None:
    assert await backend.take_send_budget("shop", 200, 50, T0) == 10
    assert await backend.take_send_budget("shop", 200, 50, T0) == 0
    assert await backend.take_send_budget("shop", 200, 50, T0 + 0.05) == 10


async def test_send_budget_never_grants_more_than_the_rate_over_any_window(
    backend: Backend,
) -> None:
    rate = 10.0
    times = [T0 + i * 0.05 for i in range(200)]
    grants = [await backend.take_send_budget("shop", rate, 3, t) for t in times]

    # Over any span: at most the burst it starts with plus the rate times the span.
    burst = send_burst(rate)
    for i, j in itertools.combinations(range(len(times)), 2):
        assert sum(grants[i : j + 1]) <= rate * (times[j] - times[i]) + burst + WHOLE_EPSILON
    assert sum(grants) >= rate * (times[-1] - times[0])  # and it does grant the rate


async def test_send_budget_is_per_app(backend: Backend) -> None:
    assert await backend.take_send_budget("shop", 100, 5, T0) == 5
    assert await backend.take_send_budget("bank", 100, 5, T0) == 5


# -- tokens, purge, liveness -----------------------------------------------------------


async def test_token_store_is_shared_by_handles_on_one_store(open_backend: OpenBackend) -> None:
    first, second = await open_backend(), await open_backend()
    token = CachedToken("ACCESS_TOKEN_VALUE", expires_at=T0 + 7200, fetched_at=T0, fence=1)
    assert await first.token_store().save("shop", token)

    loaded = await second.token_store().load("shop")
    assert loaded is not None
    assert (loaded.token, loaded.expires_at, loaded.fence) == (token.token, T0 + 7200, 1)


async def test_purge_deletes_settled_records_last_updated_before_the_horizon(
    backend: Backend,
) -> None:
    old = [
        await sent_message(backend, 1, T0),
        await to_status(backend, Outcome.FAILED, T0, errcode=40003),
        await to_status(backend, Outcome.DEAD, T0, errcode=-1),
        await sent_message(backend, 2, T0),
        await sent_message(backend, 3, T0),
    ]
    await backend.apply_report(Report("shop", 2, Status.DELIVERED, "success"), T0)
    await backend.apply_report(Report("shop", 3, Status.REJECTED, "failed:user block"), T0)

    assert await backend.purge(T0 + 100) == 5
    assert [await backend.get(i) for i in old] == [None] * 5


async def test_purge_keeps_unsettled_and_recently_updated_records(backend: Backend) -> None:
    recent = await to_status(backend, Outcome.DEAD, T0 + 200)
    queued = await enqueue_one(backend, T0)
    sending = await enqueue_one(backend, T0)
    await backend.lease_batch("worker-a", 1, 10**6, T0)

    assert await backend.purge(T0 + 100) == 0
    assert all([await backend.get(i) for i in (queued, sending, recent)])


async def test_ping_answers_when_the_store_is_reachable(backend: Backend) -> None:
    assert await backend.ping()
