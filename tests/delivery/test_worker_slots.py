"""The worker's send slots: given back once a send concluded, refilled from leases kept
ready, and bounded by the settlements still to be written; nothing is lost at a stop.

Real SQLite, the real sandbox over HTTP; no assertion on how fast anything happens,
only on what may and may not have happened."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from wxgate.backends.base import Settlement, Status
from wxgate.delivery.settlements import FLUSH_GROUP
from wxgate.delivery.worker import SETTLING_PER_SLOT

from .conftest import MakeRig, eventually


async def test_slots_are_given_back_before_the_settlements_are_written(
    make_rig: MakeRig,
) -> None:
    slots, count = 4, 40
    rig = await make_rig(delivery={"concurrency": slots})
    ids = await rig.enqueue(*(f"o_slot_{n}" for n in range(count)))
    writes_allowed = asyncio.Event()
    settle = rig.backend.settle

    async def held_settle(settlements: Sequence[Settlement], now: float) -> list[bool]:
        await writes_allowed.wait()
        return await settle(settlements, now)

    rig.backend.settle = held_settle  # type: ignore[method-assign]
    running = asyncio.create_task(rig.worker.run())

    async def more_sent_than_slots() -> bool:
        return await rig.sends() > slots

    # No settlement is written, yet more sends than slots went out...
    await eventually(more_sent_than_slots)
    await asyncio.sleep(0.3)
    # ...but no more than the slots and the settlements allowed to wait.
    assert await rig.sends() <= slots + SETTLING_PER_SLOT * slots
    assert (await rig.backend.counts())[Status.SENT] == 0
    writes_allowed.set()

    async def all_sent() -> bool:
        return (await rig.backend.counts())[Status.SENT] == count

    await eventually(all_sent)
    await rig.worker.stop()
    await asyncio.wait_for(running, 10.0)
    inbox = await rig.inbox()
    assert sorted(item["client_msg_id"] for item in inbox) == sorted(ids)  # each once


async def test_a_stop_releases_the_leases_kept_ready_and_loses_nothing(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(delivery={"concurrency": 2})
    await rig.control.set_faults(latency_ms=300)
    ids = await rig.enqueue(*(f"o_ready_{n}" for n in range(10)))
    running = asyncio.create_task(rig.worker.run())

    async def leased_beyond_the_slots() -> bool:
        return (await rig.backend.counts())[Status.SENDING] > 2

    await eventually(leased_beyond_the_slots)
    await rig.worker.stop(grace_s=5.0)
    await asyncio.wait_for(running, 10.0)
    records = [await rig.record(message_id) for message_id in ids]
    sent = {r.id for r in records if r.status is Status.SENT}
    queued = [r for r in records if r.status is Status.QUEUED]
    assert len(sent) + len(queued) == len(ids)  # sent, or back in the queue
    assert sent and queued
    assert all(r.attempts == 0 for r in queued)  # a release counts no attempt
    assert any(r.events[-1].kind == "released" for r in queued)  # the ready ones went back
    assert {item["client_msg_id"] for item in await rig.inbox()} == sent


async def test_settlement_groups_are_written_side_by_side(make_rig: MakeRig) -> None:
    # A write still under way does not hold back the next group: the first settle call
    # waits until a second one has started.
    count = 3 * FLUSH_GROUP
    rig = await make_rig(delivery={"concurrency": count})
    await rig.enqueue(*(f"o_group_{n}" for n in range(count)))
    settle = rig.backend.settle
    second_started = asyncio.Event()
    calls = 0

    async def overlapping_settle(settlements: Sequence[Settlement], now: float) -> list[bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.wait_for(second_started.wait(), 10.0)
        else:
            second_started.set()
        return await settle(settlements, now)

    rig.backend.settle = overlapping_settle  # type: ignore[method-assign]
    running = asyncio.create_task(rig.worker.run())

    async def all_sent() -> bool:
        return (await rig.backend.counts())[Status.SENT] == count

    await eventually(all_sent, timeout_s=20.0)
    await rig.worker.stop()
    await asyncio.wait_for(running, 10.0)
    assert second_started.is_set() and calls >= 2
