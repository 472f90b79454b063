"""A `wxgate serve` whose port is taken exits 3 before it has done anything: no token
fetched, no message sent to WeChat, the queued message left as it was for the process
that can listen. Real processes, a real SQLite file, the sandbox's counters.

Found by a hostile test (issue 11): the process exited 3, but a queued message had
been sent to WeChat 10 ms before the exit (the workers started before the bind).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import APP, TEMPLATE, order_data
from tests.e2e.processes import start_serve, write_config
from wxgate.backends.base import NewMessage, Status
from wxgate.backends.sqlite import SqliteBackend
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer

LISTEN_ERROR = 3


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


async def queue_one(db_path: Path) -> str:
    backend = SqliteBackend(db_path)
    await backend.start()
    try:
        payload = {"touser": "oPortTaken", "template_id": TEMPLATE, "data": order_data()}
        [queued] = await backend.enqueue([NewMessage(APP, payload)], time.time())
        return queued.id
    finally:
        await backend.close()


async def status_of(db_path: Path, message_id: str) -> Status:
    backend = SqliteBackend(db_path)
    await backend.start()
    try:
        record = await backend.get(message_id)
        assert record is not None
        return record.status
    finally:
        await backend.close()


@pytest.mark.parametrize("role", ["all", "worker"])
async def test_a_taken_port_exits_3_without_fetching_a_token_or_sending(
    tmp_path: Path, taken_port: int, role: str
) -> None:
    db_path = tmp_path / "queued.db"
    message_id = await queue_one(db_path)
    async with (
        SandboxServer(port=0) as sandbox,
        SandboxControl(sandbox.base_url) as control,
    ):
        config = write_config(tmp_path / "wxgate.toml", db_path=db_path, api_base=sandbox.base_url)
        serve = await start_serve(config, role, tmp_path, taken_port)
        try:
            code = await asyncio.wait_for(serve.process.wait(), 30)
        finally:
            await serve.stop()
        await asyncio.sleep(0.2)  # anything still on its way to the sandbox arrives
        stats = await control.stats()

    assert code == LISTEN_ERROR, serve.log_tail()
    assert "address already in use" in serve.log_tail()
    assert (stats["sends_total"], stats["token_fetches_total"]) == (0, 0)
    assert await status_of(db_path, message_id) == Status.QUEUED
