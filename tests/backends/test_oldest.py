"""`Backend.oldest`: the first-accepted message in a status, on every engine (the
console's "oldest queued" age)."""

from __future__ import annotations

from tests.backends.test_contract import T0, enqueue_one, lease_only, settle_one
from wxgate.backends.base import Backend, Outcome, Status


async def test_oldest_is_none_when_no_message_has_the_status(backend: Backend) -> None:
    assert await backend.oldest(Status.QUEUED) is None


async def test_oldest_is_the_first_accepted_message_still_in_the_status(backend: Backend) -> None:
    first = await enqueue_one(backend, T0, at=T0)
    second = await enqueue_one(backend, T0 + 1, at=T0 + 1)
    await enqueue_one(backend, T0 + 2, at=T0 + 2)

    record = await backend.oldest(Status.QUEUED)
    assert record is not None
    assert (record.id, record.created_at) == (first, T0)

    # Every one leased (a partitioned queue leases its partitions in turn, so one lease
    # need not be the oldest); the first sent, the others released to queued.
    leases = {lease.id: lease for lease in await backend.lease_batch("worker-a", 10, 30, T0 + 3)}
    assert await settle_one(backend, leases.pop(first), Outcome.SENT, T0 + 3, msgid=7, errcode=0)
    for lease in leases.values():
        assert await settle_one(backend, lease, Outcome.RELEASE, T0 + 3, next_attempt_at=T0 + 3)
    after = await backend.oldest(Status.QUEUED)
    assert after is not None and after.id == second
    sent = await backend.oldest(Status.SENT)
    assert sent is not None and sent.id == first


async def test_oldest_ignores_other_statuses(backend: Backend) -> None:
    message_id = await enqueue_one(backend, T0, at=T0)
    lease = await lease_only(backend, message_id, T0)
    assert await settle_one(backend, lease, Outcome.DEAD, T0, errcode=40001)

    assert await backend.oldest(Status.QUEUED) is None
    dead = await backend.oldest(Status.DEAD)
    assert dead is not None and dead.id == message_id
