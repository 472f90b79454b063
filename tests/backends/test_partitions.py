"""A partitioned queue on a real three-primary Redis Cluster (`storage.redis_partitions`):
one app's messages spread over the primaries, and what a single queue promised still
holds across partitions. The contract suite runs on the cluster partitioned as well
(conftest.CLUSTER_PARTITIONS); these tests check what only partitions can break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from tests.backends.conftest import CLUSTER_PARTITIONS, _redis_cluster, redis_cluster_url
from tests.backends.test_contract import BIG_MSGID, T0, message
from wxgate.backends.base import (
    IdempotencyConflict,
    ListFilter,
    NewBatch,
    NewMessage,
    Outcome,
    Report,
    Settlement,
    Status,
)
from wxgate.backends.redis import RedisBackend
from wxgate.backends.redis_keys import RedisKeys
from wxgate.backends.webhook_outbox import HookOutcome, HookResult, HookState
from wxgate.clock import SystemClock
from wxgate.config import StorageSettings, load_settings
from wxgate.gateway import make_backend

PARTITIONS = CLUSTER_PARTITIONS


@pytest.fixture
async def handles(tmp_path: Path) -> AsyncIterator[list[RedisBackend]]:
    """Three handles (as three processes) on one partitioned store of the test's own."""
    url = redis_cluster_url()
    async with AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(_redis_cluster(url, tmp_path)) for _ in range(3)]
        yield [handle for handle in opened if isinstance(handle, RedisBackend)]


@pytest.fixture
def engine(handles: list[RedisBackend]) -> RedisBackend:
    return handles[0]


def partitions_of(engine: RedisBackend, ids: list[str]) -> set[int]:
    return {engine.keys.partition_of(message_id) for message_id in ids}


def in_every_partition(engine: RedisBackend, each: int) -> list[NewMessage]:
    """`each` new messages per partition, in the order they were made: random ids alone
    leave a partition empty too often for a test (16 ids miss one of 4 about 4% of the
    time)."""
    made: list[NewMessage] = []
    counts = [0] * PARTITIONS
    while min(counts) < each:
        candidate = message()
        home = engine.keys.partition_of(candidate.id)
        if counts[home] < each:
            counts[home] += 1
            made.append(candidate)
    return made


# -- key names ------------------------------------------------------------------------


def test_each_partition_has_a_tag_of_its_own_in_its_share_of_the_slots() -> None:
    keys = RedisKeys("p", tagged=True, partitions=4)
    tags = [keys.queue_tag(p) for p in range(4)]
    assert [keys.at(p).ready("shop") for p in range(4)] == [
        f"p:{{{tag}}}:ready:shop" for tag in tags
    ]
    # Partition p's slot is in the p-th quarter of the slots: one per primary of four,
    # and on three primaries with equal ranges none is left without a partition.
    assert [key_slot(tag.encode()) * 4 // 16384 for tag in tags] == [0, 1, 2, 3]
    assert {key_slot(tag.encode()) * 3 // 16384 for tag in tags} == {0, 1, 2}
    # A record is in its id's partition, whichever partition's keys name it.
    message_id = "01HF7YAWFN2XRQQ4KNYEAXTYB8"
    home = keys.partition_of(message_id)
    assert {keys.at(p).message(message_id) for p in range(4)} == {keys.at(home).message(message_id)}
    # Dedupe keys are claimed before the partition is known: slots of their own.
    assert keys.at(2).idempotency("shop", "k1") == "p:idem:shop:k1"
    assert keys.batch_position("b1", 3) == "p:bpos:b1:3"
    # One partition: the names of before.
    one = RedisKeys("p", tagged=True)
    assert (one.idempotency("shop", "k1"), one.ready("shop")) == (
        "p:{q}:idem:shop:k1",
        "p:{q}:ready:shop",
    )


def test_partitions_are_for_a_cluster_only() -> None:
    with pytest.raises(ValueError, match="Redis Cluster"):
        RedisKeys("p", partitions=2)
    with pytest.raises(ValueError):
        RedisKeys("p", tagged=True, partitions=0)
    with pytest.raises(ValidationError, match="redis_cluster"):
        StorageSettings(backend="redis", redis_partitions=4)
    assert StorageSettings(backend="redis", redis_cluster=True, redis_partitions=4)


async def test_the_gateway_builds_its_engine_with_the_configured_partitions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wxgate.toml"
    path.write_text(
        '[storage]\nbackend = "redis"\nredis_cluster = true\nredis_partitions = 6\n'
        'redis_url = "redis://127.0.0.1:1/0"\n'
    )
    backend = make_backend(load_settings(path), SystemClock())  # connects on first use
    assert isinstance(backend, RedisBackend)
    assert (backend.keys.tagged, backend.keys.partitions) == (True, 6)
    await backend.close()


def test_message_ids_spread_evenly_over_the_partitions() -> None:
    keys = RedisKeys("p", tagged=True, partitions=PARTITIONS)
    ids = [message().id for _ in range(4000)]
    per = [sum(keys.partition_of(i) == p for i in ids) for p in range(PARTITIONS)]
    assert min(per) > 4000 / PARTITIONS * 0.8, per


# -- spreading and leasing ----------------------------------------------------------------


async def test_one_apps_messages_land_on_several_primaries(engine: RedisBackend) -> None:
    answers = await engine.enqueue([message(app="shop") for _ in range(40)], T0)
    ids = [answer.id for answer in answers]
    assert partitions_of(engine, ids) == set(range(PARTITIONS))
    client = engine._client
    nodes = {client.get_node_from_key(engine.keys.message(i)).name for i in ids}
    streams = {client.get_node_from_key(engine.keys.at(p).ready("shop")).name for p in range(4)}
    assert len(nodes) == len(streams) == 3, (nodes, streams)  # every primary has a share
    for message_id in ids:  # each record is where its partition's stream is
        home = engine.keys.at(engine.keys.partition_of(message_id))
        assert client.keyslot(home.message(message_id)) == client.keyslot(home.ready("shop"))
    assert (await engine.counts("shop"))[Status.QUEUED] == 40


async def test_one_worker_drains_every_partition(engine: RedisBackend) -> None:
    messages = in_every_partition(engine, 8)  # 32
    ids = {answer.id for answer in await engine.enqueue(messages, T0)}
    leased: list[str] = []
    for _ in range(2 * PARTITIONS + len(ids)):
        leases = await engine.lease_batch("only-worker", 4, 30, T0 + 1)
        if not leases and len(leased) == len(ids):
            break
        leased += [lease.id for lease in leases]
        await engine.settle([Settlement(lease, Outcome.SENT) for lease in leases], T0 + 1)
    assert sorted(leased) == sorted(ids)
    assert partitions_of(engine, leased) == set(range(PARTITIONS))
    counts = await engine.counts()
    assert (counts[Status.QUEUED], counts[Status.SENT]) == (0, len(ids))


async def test_workers_share_the_partitions_and_no_message_is_leased_twice(
    handles: list[RedisBackend],
) -> None:
    await handles[0].enqueue([message() for _ in range(60)], T0)
    rounds = await asyncio.gather(
        *(handle.lease_batch(f"w{n}", 25, 30, T0 + 1) for n, handle in enumerate(handles))
    )
    leased = [lease.id for leases in rounds for lease in leases]
    assert len(leased) == len(set(leased)) == 60


# -- reads merged across partitions ------------------------------------------------------


async def test_listing_pages_newest_first_through_every_partition(engine: RedisBackend) -> None:
    ids = [a.id for a in await engine.enqueue([message(app="shop") for _ in range(23)], T0)]
    ids += [a.id for a in await engine.enqueue([message(app="mall") for _ in range(11)], T0)]
    assert len(partitions_of(engine, ids)) == PARTITIONS

    for flt, wanted in [
        (ListFilter(), ids),
        (ListFilter(app="shop"), ids[:23]),
        (ListFilter(status=Status.QUEUED), ids),
    ]:
        seen: list[str] = []
        cursor = None
        while True:
            page = await engine.list(flt, 5, cursor)
            seen += [record.id for record in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == sorted(wanted, reverse=True), flt


async def test_a_batch_spread_over_partitions_counts_and_lists_as_one(
    engine: RedisBackend,
) -> None:
    members = [message(batch="b-1") for _ in range(12)]
    batch = NewBatch("b-1", "shop", "batch-key", digest="d-batch")
    members = [replace(m, batch_position=n, digest=f"d{n}") for n, m in enumerate(members)]
    await engine.enqueue(members, T0, batch)
    assert len(partitions_of(engine, [m.id for m in members])) > 1
    counts = await engine.batch_counts("b-1")
    assert counts is not None and counts[Status.QUEUED] == 12
    page = await engine.list(ListFilter(batch_id="b-1"), 50)
    assert [r.id for r in page.items] == sorted((m.id for m in members), reverse=True)

    again = [replace(m, id=message().id) for m in members]  # the request repeated
    answers = await engine.enqueue(again, T0 + 1, batch)
    assert [(a.id, a.created) for a in answers] == [(m.id, False) for m in members]
    other = NewBatch("b-1", "shop", "batch-key", digest="d-other")
    with pytest.raises(IdempotencyConflict):
        await engine.enqueue([replace(again[0], id=message().id)], T0 + 2, other)


# -- idempotency across partitions ------------------------------------------------------------


async def test_concurrent_duplicates_store_one_message(handles: list[RedisBackend]) -> None:
    for key in ("k-1", "k-2", "k-3"):
        requests = [replace(message(key=key), digest=f"digest-{key}") for _ in range(9)]
        assert len(partitions_of(handles[0], [m.id for m in requests])) > 1
        answers = await asyncio.gather(
            *(
                handles[n % len(handles)].enqueue([request], T0)
                for n, request in enumerate(requests)
            )
        )
        flat = [answer for [answer] in answers]
        assert len({answer.id for answer in flat}) == 1
        assert sum(answer.created for answer in flat) == 1
    counts = await handles[0].counts("shop")
    assert counts[Status.QUEUED] == 3
    page = await handles[0].list(ListFilter(app="shop"), 10)
    assert len(page.items) == 3


async def test_concurrent_repeats_of_a_keyed_batch_store_each_member_once(
    handles: list[RedisBackend],
) -> None:
    batch = NewBatch("b-2", "shop", "batch-key-2", digest="d-batch-2")

    def request() -> list[NewMessage]:
        members = [message(batch="b-2") for _ in range(12)]
        return [replace(m, batch_position=n, digest=f"d{n}") for n, m in enumerate(members)]

    answers = await asyncio.gather(
        *(handles[n % len(handles)].enqueue(request(), T0, batch) for n in range(6))
    )
    ids = [answer.id for answer in answers[0]]
    assert len(set(ids)) == 12 and len(partitions_of(handles[0], ids)) > 1
    assert all([answer.id for answer in other] == ids for other in answers)
    for position in range(12):  # each member stored by exactly one of the requests
        assert sum(other[position].created for other in answers) == 1
    counts = await handles[0].batch_counts("b-2")
    assert counts is not None and counts[Status.QUEUED] == 12
    assert (await handles[0].counts())[Status.QUEUED] == 12


async def test_a_claim_left_by_a_crash_is_stored_by_the_retry(engine: RedisBackend) -> None:
    first = replace(message(key="k-crash"), digest="d")
    # The process claimed the key and died before it stored the message.
    await engine._claim_dedupe([first], None)
    assert await engine.get(first.id) is None

    retry = replace(message(key="k-crash"), digest="d")
    [answer] = await engine.enqueue([retry], T0 + 1)
    assert (answer.id, answer.created) == (first.id, True)
    record = await engine.get(first.id)
    assert record is not None and record.status is Status.QUEUED
    [again] = await engine.enqueue([replace(retry, id=message().id)], T0 + 2)
    assert (again.id, again.created) == (first.id, False)


async def test_a_refused_call_lets_go_of_the_keys_it_claimed(engine: RedisBackend) -> None:
    held = replace(message(key="k-held"), digest="d-held")
    await engine.enqueue([held], T0)
    fresh = replace(message(key="k-fresh"), digest="d-fresh")
    clash = replace(message(key="k-held"), digest="d-other")
    with pytest.raises(IdempotencyConflict):
        await engine.enqueue([fresh, clash], T0 + 1)
    assert await engine.get(fresh.id) is None
    # The refused call's claim of k-fresh is gone: another request may take the key.
    other = replace(message(key="k-fresh"), digest="d-something-else")
    [answer] = await engine.enqueue([other], T0 + 2)
    assert (answer.id, answer.created) == (other.id, True)


async def test_a_purged_message_frees_its_claimed_key(engine: RedisBackend) -> None:
    m = replace(message(key="k-purge"), digest="d")
    await engine.enqueue([m], T0)
    [lease] = [lease for lease in await engine.lease_batch("w", 10, 30, T0) if lease.id == m.id]
    assert await engine.settle([Settlement(lease, Outcome.SENT, msgid=5)], T0 + 1) == [True]
    assert await engine._client.ttl(engine.keys.idempotency("shop", "k-purge")) > 0
    assert await engine.purge(T0 + 2) == 1
    assert await engine._client.exists(engine.keys.idempotency("shop", "k-purge")) == 0


# -- delivery reports -------------------------------------------------------------------------


async def test_a_report_finds_its_message_in_any_partition(engine: RedisBackend) -> None:
    messages = in_every_partition(engine, 16 // PARTITIONS)
    await engine.enqueue(messages, T0)
    assert len(partitions_of(engine, [m.id for m in messages])) == PARTITIONS
    leases = await engine.lease_batch("w", 16, 30, T0)
    msgids = {lease.id: BIG_MSGID + n for n, lease in enumerate(leases)}
    early = leases[:4]  # their reports come before their settle
    for lease in early:
        report = Report("shop", msgids[lease.id], Status.DELIVERED, "success")
        assert (await engine.apply_report(report, T0 + 1)).message_id is None
    await engine.settle(
        [Settlement(lease, Outcome.SENT, msgid=msgids[lease.id]) for lease in leases], T0 + 2
    )
    for lease in leases[4:]:
        report = Report("shop", msgids[lease.id], Status.DELIVERED, "success")
        applied = await engine.apply_report(report, T0 + 3)
        assert (applied.message_id, applied.status) == (lease.id, Status.DELIVERED)
    for lease in leases:
        record = await engine.get(lease.id)
        assert record is not None and record.status is Status.DELIVERED, lease.id
    assert (await engine.counts())[Status.DELIVERED] == 16


# -- the webhook outbox -------------------------------------------------------------------


async def test_the_webhook_outbox_of_every_partition_is_claimed_and_replayed(
    engine: RedisBackend,
) -> None:
    watched = [replace(message(), notify=True, callback_url="https://x.example/h")]
    watched += [replace(message(), notify=True) for _ in range(11)]
    await engine.enqueue(watched, T0)
    homes = partitions_of(engine, [m.id for m in watched])
    assert len(homes) > 1
    leases = await engine.lease_batch("w", 20, 30, T0)
    await engine.settle([Settlement(lease, Outcome.DEAD, errcode=40003) for lease in leases], T0)

    outbox = engine.webhook_outbox()
    [backlog] = await outbox.backlog(["shop"])
    assert backlog.pending == 12
    claims = await outbox.claim(["shop"], 50, 30, T0 + 1)
    assert sorted(c.event.message_id for c in claims) == sorted(m.id for m in watched)
    # A seq names its partition, and is the message's.
    assert {int(c.event.seq.split("-")[0]) for c in claims} == homes
    for claim in claims:
        assert engine.keys.partition_of(claim.event.message_id) == int(
            claim.event.seq.split("-")[0]
        )
    results = [HookResult(c, HookOutcome.DEAD, error="410") for c in claims]
    assert await outbox.finish(results, T0 + 2) == [True] * 12
    dead = await outbox.entries("shop", HookState.DEAD, 50)
    assert sorted(e.event.seq for e in dead) == sorted(c.event.seq for c in claims)
    chosen = [claims[0].event.seq, claims[-1].event.seq, "9-1-0", "x-1-0"]
    assert await outbox.replay("shop", chosen, T0 + 3) == 2
    assert await outbox.replay("shop", None, T0 + 3) == 10
    [backlog] = await outbox.backlog(["shop"])
    assert (backlog.pending, backlog.dead) == (12, 0)
