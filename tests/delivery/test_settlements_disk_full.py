"""A worker's settlements on a full disk: a real SQLite file on a small volume of the
test's own (an 8 MB tmpfs, kept full by another writer; skipped, saying why, where it
cannot be mounted). A settlement the disk refuses is kept and retried, and written
once space is back: nothing WeChat took is left unsettled, and no restart is needed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.small_volume import Filler
from wxgate.backends.base import NewMessage, Outcome, Settlement, Status, StorageUnavailable
from wxgate.backends.sqlite import SqliteBackend
from wxgate.clock import SystemClock
from wxgate.delivery.events import WorkerEvent
from wxgate.delivery.messagelog import MessageLog
from wxgate.delivery.settlements import Concluded, SettlementWriter

SENT = 8


def message(tag: str) -> NewMessage:
    payload = {"touser": f"o{tag}", "template_id": "tpl", "data": {"thing1": {"value": "x" * 200}}}
    return NewMessage("shop", payload)


async def test_settlements_refused_by_a_full_disk_are_written_once_space_is_back(
    volume: Path,
) -> None:
    backend = SqliteBackend(volume / "settle.db", busy_timeout_s=1.0)
    await backend.start()
    filler = Filler(volume)
    events: list[WorkerEvent] = []
    writer = SettlementWriter(backend, SystemClock(), events.append)
    try:
        await backend.enqueue([message(f"sent{n}") for n in range(SENT)], time.time())
        leases = await backend.lease_batch("worker-1", SENT, 60.0, time.time())
        filler.start()
        with pytest.raises(StorageUnavailable):  # the disk is full: nothing more fits
            for n in range(1000):
                await backend.enqueue([message(f"full{n}-{i}") for i in range(100)], time.time())
        writer.start()
        written = [
            writer.submit(
                Concluded(Settlement(lease, Outcome.SENT, msgid=1000 + n)),
                MessageLog(lease.record),
            )
            for n, lease in enumerate(leases)
        ]
        await asyncio.sleep(1.0)
        waiting = [not future.done() for future in written]

        filler.stop()
        results = await asyncio.wait_for(asyncio.gather(*written), 15.0)
        records = [await backend.get(lease.record.id) for lease in leases]
    finally:
        filler.stop()
        await writer.close()
        await backend.close()
    assert len(leases) == SENT and all(waiting)  # kept while the disk was full
    assert results == [True] * SENT
    assert [r.status if r else None for r in records] == [Status.SENT] * SENT
    assert len(events) == SENT  # one settled event each, once written
