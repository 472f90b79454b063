"""The webhook outbox contract (backends/webhook_outbox.py), run against every engine.

Events are made the way the gateway makes them: notify messages settled by a worker
and reported on by WeChat. Time is a fake timeline passed as `now`.
"""

from __future__ import annotations

from dataclasses import replace

from tests.backends.test_contract import BIG_MSGID, T0, message
from wxgate.backends.base import (
    Backend,
    Outcome,
    Report,
    Settlement,
    Status,
    Verdict,
)
from wxgate.backends.webhook_outbox import (
    HookClaim,
    HookOutcome,
    HookResult,
    HookState,
    webhook_id,
)

LEASE_S = 30.0


async def sent_then_reported(
    backend: Backend, touser: str, msgid: int, report: Status = Status.DELIVERED, **fields: str
) -> str:
    """A notify message settled sent then reported on: two outbox events."""
    watched = replace(message(touser=touser, **fields), notify=True)
    await backend.enqueue([watched], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    await backend.settle([Settlement(lease, Outcome.SENT, msgid=msgid)], T0 + 1)
    text = "success" if report is Status.DELIVERED else "failed:user block"
    await backend.apply_report(Report("shop", msgid, report, text), T0 + 2)
    return watched.id


async def claim(backend: Backend, now: float, limit: int = 10) -> list[HookClaim]:
    return await backend.webhook_outbox().claim(["shop"], limit, LEASE_S, now)


async def finish(
    backend: Backend, claims: list[HookClaim], outcome: HookOutcome, now: float, **kw: object
) -> list[bool]:
    results = [HookResult(c, outcome, **kw) for c in claims]  # type: ignore[arg-type]
    return await backend.webhook_outbox().finish(results, now)


async def test_a_claim_hands_out_only_the_oldest_undelivered_event_of_a_message(
    backend: Backend,
) -> None:
    first = await sent_then_reported(backend, "o-a", BIG_MSGID)
    second = await sent_then_reported(backend, "o-b", BIG_MSGID + 1, Status.REJECTED)

    claims = await claim(backend, T0 + 3)
    assert [(c.event.message_id, c.event.status) for c in claims] == [
        (first, Status.SENT),
        (second, Status.SENT),
    ]
    assert await finish(backend, claims, HookOutcome.DELIVERED, T0 + 4) == [True, True]

    later = await claim(backend, T0 + 4)
    assert [(c.event.message_id, c.event.status) for c in later] == [
        (first, Status.DELIVERED),
        (second, Status.REJECTED),
    ]
    assert await finish(backend, later, HookOutcome.DELIVERED, T0 + 5) == [True, True]
    assert await claim(backend, T0 + 6) == []


async def test_a_claim_carries_the_event_and_the_message_fields(backend: Backend) -> None:
    watched = replace(
        message(touser="o-c", key="order-7", batch="b-1"),
        notify=True,
        callback_url="https://hooks.example.com/in",
    )
    await backend.enqueue([watched], T0)
    [lease] = await backend.lease_batch("w", 10, 30, T0)
    failure = Settlement(lease, Outcome.FAILED, errcode=40003, errmsg="invalid openid")
    await backend.settle([failure], T0 + 1)

    [held] = await claim(backend, T0 + 2)
    assert (held.event.message_id, held.event.app, held.event.status) == (
        watched.id,
        "shop",
        Status.FAILED,
    )
    assert (held.event.errcode, held.event.errmsg, held.event.msgid) == (
        40003,
        "invalid openid",
        None,
    )
    assert held.event.at == T0 + 1
    assert (held.touser, held.idempotency_key, held.batch_id, held.callback_url) == (
        "o-c",
        "order-7",
        "b-1",
        "https://hooks.example.com/in",
    )
    assert held.attempts == 0 and held.deadline == T0 + 2 + LEASE_S


async def test_a_sent_event_keeps_the_int64_msgid(backend: Backend) -> None:
    await sent_then_reported(backend, "o-m", BIG_MSGID)
    [held] = await claim(backend, T0 + 3)
    assert held.event.msgid == BIG_MSGID


async def test_a_claimed_event_is_taken_again_only_after_its_lease_ran_out(
    backend: Backend,
) -> None:
    await sent_then_reported(backend, "o-l", BIG_MSGID)
    [held] = await claim(backend, T0 + 3)
    assert await claim(backend, T0 + 3 + LEASE_S - 1) == []

    [again] = await claim(backend, T0 + 3 + LEASE_S + 1)
    assert again.event == held.event and again.webhook_id == held.webhook_id
    # The first holder lost its lease: what it reports now is not written.
    assert await finish(backend, [held], HookOutcome.DELIVERED, T0 + 40) == [False]
    assert await finish(backend, [again], HookOutcome.DELIVERED, T0 + 40) == [True]


async def test_a_retried_event_waits_for_its_time_and_holds_back_the_next(
    backend: Backend,
) -> None:
    first = await sent_then_reported(backend, "o-r", BIG_MSGID)
    [held] = await claim(backend, T0 + 3)
    retry_at = T0 + 100
    done = await finish(
        backend, [held], HookOutcome.RETRY, T0 + 4, next_attempt_at=retry_at, error="HTTP 503"
    )
    assert done == [True]

    assert await claim(backend, T0 + 50) == []  # neither it nor its message's next event
    pending, waiting = await backend.webhook_outbox().entries("shop", HookState.PENDING, 10)
    assert (pending.event.message_id, pending.attempts, pending.event.status) == (
        first,
        1,
        Status.SENT,
    )
    assert (waiting.event.status, waiting.attempts) == (Status.DELIVERED, 0)
    assert (pending.next_attempt_at, pending.last_error) == (retry_at, "HTTP 503")

    [retried] = await claim(backend, retry_at)
    assert retried.event.status == Status.SENT and retried.attempts == 1
    assert retried.webhook_id == held.webhook_id


async def test_a_dead_event_lets_the_next_go_and_is_replayable(backend: Backend) -> None:
    first = await sent_then_reported(backend, "o-d", BIG_MSGID)
    outbox = backend.webhook_outbox()
    [held] = await claim(backend, T0 + 3)
    await finish(backend, [held], HookOutcome.DEAD, T0 + 4, error="HTTP 410")

    [dead] = await outbox.entries("shop", HookState.DEAD, 10)
    assert (dead.event, dead.state, dead.attempts, dead.last_error) == (
        held.event,
        HookState.DEAD,
        1,
        "HTTP 410",
    )
    [following] = await claim(backend, T0 + 5)
    assert (following.event.message_id, following.event.status) == (first, Status.DELIVERED)
    await finish(backend, [following], HookOutcome.DELIVERED, T0 + 6)

    assert await outbox.replay("shop", None, T0 + 7) == 1
    assert await outbox.entries("shop", HookState.DEAD, 10) == []
    [replayed] = await claim(backend, T0 + 7)
    assert replayed.webhook_id == held.webhook_id and replayed.attempts == 0


async def test_replay_moves_only_the_dead_events_named(backend: Backend) -> None:
    await sent_then_reported(backend, "o-x", BIG_MSGID)
    await sent_then_reported(backend, "o-y", BIG_MSGID + 1)
    outbox = backend.webhook_outbox()
    claims = await claim(backend, T0 + 3)
    await finish(backend, claims, HookOutcome.DEAD, T0 + 4, error="gone")
    chosen = claims[1].event.seq

    assert await outbox.replay("shop", [chosen, "no-such-seq", "²", "9" * 40], T0 + 5) == 1
    assert [e.event.seq for e in await outbox.entries("shop", HookState.DEAD, 10)] == [
        claims[0].event.seq
    ]
    assert await outbox.replay("other-app", None, T0 + 5) == 0


async def test_backlog_counts_pending_and_dead_and_the_oldest_pending(backend: Backend) -> None:
    outbox = backend.webhook_outbox()
    [empty] = await outbox.backlog(["shop"])
    assert (empty.pending, empty.dead, empty.oldest_at) == (0, 0, None)

    await sent_then_reported(backend, "o-1", BIG_MSGID)
    await sent_then_reported(backend, "o-2", BIG_MSGID + 1)
    [fresh] = await outbox.backlog(["shop"])
    assert (fresh.pending, fresh.dead, fresh.oldest_at) == (4, 0, T0 + 1)
    assert fresh.oldest_age(T0 + 11) == 10.0

    claims = await claim(backend, T0 + 3)
    await finish(backend, claims[:1], HookOutcome.DELIVERED, T0 + 4)
    await finish(backend, claims[1:], HookOutcome.DEAD, T0 + 4, error="HTTP 400")
    shop, other = await outbox.backlog(["shop", "other"])
    assert (shop.pending, shop.dead, shop.oldest_at) == (2, 1, T0 + 2)
    assert (other.app, other.pending, other.dead) == ("other", 0, 0)


async def test_a_claim_takes_only_the_apps_named(backend: Backend) -> None:
    decided = replace(
        message(app="desk", touser="o-z"),
        notify=True,
        verdict=Verdict(Status.SUPPRESSED, "unfollowed"),
    )
    await backend.enqueue([decided], T0)
    assert await claim(backend, T0 + 1) == []
    [held] = await backend.webhook_outbox().claim(["shop", "desk"], 10, LEASE_S, T0 + 1)
    assert (held.event.app, held.event.status) == ("desk", Status.SUPPRESSED)


async def test_a_claim_takes_no_more_than_its_limit(backend: Backend) -> None:
    for n in range(3):
        await sent_then_reported(backend, f"o-{n}", BIG_MSGID + n)
    first = await claim(backend, T0 + 3, limit=2)
    rest = await claim(backend, T0 + 3, limit=2)
    assert len(first) == 2 and len(rest) == 1
    assert {c.event.message_id for c in first}.isdisjoint({c.event.message_id for c in rest})


async def test_purge_forgets_dead_events_that_died_before_the_cut(backend: Backend) -> None:
    await sent_then_reported(backend, "o-p", BIG_MSGID)
    outbox = backend.webhook_outbox()
    [held] = await claim(backend, T0 + 3)
    await finish(backend, [held], HookOutcome.DEAD, T0 + 4, error="gone")

    assert await outbox.purge(["shop"], T0 + 4) == 0
    assert await outbox.purge(["shop"], T0 + 5) >= 1
    assert await outbox.entries("shop", HookState.DEAD, 10) == []
    [pending] = await outbox.entries("shop", HookState.PENDING, 10)
    assert pending.event.status == Status.DELIVERED


async def test_webhook_ids_are_stable_and_distinct(backend: Backend) -> None:
    await sent_then_reported(backend, "o-i", BIG_MSGID)
    pending = await backend.webhook_outbox().entries("shop", HookState.PENDING, 10)
    ids = [webhook_id(entry.event) for entry in pending]
    assert len(set(ids)) == 2
    assert ids == [
        webhook_id(e.event)
        for e in await backend.webhook_outbox().entries("shop", HookState.PENDING, 10)
    ]


# -- the oldest message waiting to be sent -------------------------------------------


async def test_oldest_queued_is_the_creation_time_of_each_apps_oldest_waiting_message(
    backend: Backend,
) -> None:
    assert await backend.oldest_queued(["shop"]) == {}
    old = message(touser="o-old", at=T0 - 50)
    young = message(touser="o-young", at=T0 - 10)
    desk = message(app="desk", touser="o-desk", at=T0 - 5)
    await backend.enqueue([old], T0 - 50)
    await backend.enqueue([young], T0 - 10)
    await backend.enqueue([desk], T0 - 5)
    assert await backend.oldest_queued(["shop", "desk", "none"]) == {
        "shop": T0 - 50,
        "desk": T0 - 5,
    }

    # Both of shop's now sending (a partitioned queue leases its partitions in turn, so
    # a lease of one need not take the oldest); sending still counts as waiting.
    leases = await backend.lease_batch("w", 10, 30, T0, frozenset({"desk"}))
    by_id = {lease.id: lease for lease in leases}
    assert set(by_id) == {old.id, young.id}
    assert (await backend.oldest_queued(["shop"]))["shop"] == T0 - 50
    await backend.settle([Settlement(by_id[old.id], Outcome.SENT, msgid=BIG_MSGID)], T0 + 1)
    assert (await backend.oldest_queued(["shop"]))["shop"] == T0 - 10
