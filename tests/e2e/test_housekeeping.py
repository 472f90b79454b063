"""A worker process purges settled records past their retention, on its own schedule."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from wxgate.backends.base import NewMessage, Outcome, Settlement
from wxgate.backends.sqlite import SqliteBackend
from wxgate.clock import FakeClock
from wxgate.config import AppSettings, Settings, StorageSettings
from wxgate.gateway import Gateway


async def test_a_worker_gateway_purges_records_past_retention(tmp_path: Path) -> None:
    clock = FakeClock()
    backend = SqliteBackend(tmp_path / "purge.db", clock=clock)
    settings = Settings(
        storage=StorageSettings(retention_s=3600, purge_interval_s=600),
        apps={"shop": AppSettings(appid="wx0000000000000001", secret="s3cret-value")},
    )
    gateway = Gateway(settings, role="worker", clock=clock, backend=backend)
    await gateway.start()
    try:
        await gateway.worker.stop(0)  # type: ignore[union-attr]  # only the purge matters here
        old = NewMessage("shop", {"touser": "o1", "template_id": "t", "data": {}})
        await backend.enqueue([old], clock.now())
        [lease] = await backend.lease_batch("w", 1, 30, clock.now())
        await backend.settle([Settlement(lease, Outcome.FAILED, errcode=40003)], clock.now())

        clock.advance(3000)  # older than retention, but the purge has not come round yet
        await asyncio.sleep(0.05)
        assert await backend.get(old.id) is not None
        clock.advance(601)
        deadline = time.monotonic() + 30.0  # the purge runs soon; a busy machine delays it
        while await backend.get(old.id) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await backend.get(old.id) is None
    finally:
        await gateway.stop()
