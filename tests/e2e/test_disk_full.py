"""A full disk on a small volume, with real `wxgate serve` processes on a real SQLite
file: while nothing can be written, intake answers 503 and `/readyz` says storage is
not writable (503); once space is freed, the same processes, never restarted, write
again, settle every message they had sent meanwhile, deliver the rest, and answer ready.

The volume is a tmpfs of its own (this needs root, or the test is skipped saying so),
filled with a file while the workers send.

Found by a hostile test (issue 11): after space was freed the WAL kept growing without
a checkpoint and filled the disk again, twelve sent messages were never settled,
nothing more was delivered until a restart, and `/readyz` answered ready throughout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, TEMPLATE, eventually, order_data
from tests.e2e.processes import ServeProcess, start_serve, write_config
from tests.small_volume import Filler
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MESSAGES = 300
BATCH = 100
SENT = {"sent", "delivered"}  # WeChat took the message, and the record says so
MAX_WHILE_FULL = 20_000  # far more than the volume can hold

pytestmark = pytest.mark.timeout(120)


async def readyz(session: aiohttp.ClientSession, gateway: ServeProcess) -> tuple[int, Any]:
    async with session.get(f"{gateway.url}/readyz") as resp:
        return resp.status, (await resp.json())["data"]


async def post(session: aiohttp.ClientSession, gateway: ServeProcess, n: int) -> tuple[int, Any]:
    body = {"touser": f"oDisk_{n:05d}", "template_id": TEMPLATE, "data": order_data(n)}
    async with session.post(f"{gateway.url}/v1/messages", json=body, headers=AUTH) as resp:
        return resp.status, (await resp.json())["data"]


async def post_until_refused(
    session: aiohttp.ClientSession, gateway: ServeProcess, first: int
) -> list[str]:
    """Batches of BATCH until one is refused with 503 (the disk is full); the ids of
    those accepted."""
    ids: list[str] = []
    for start in range(first, first + MAX_WHILE_FULL, BATCH):
        body = {
            "app": APP,
            "template_id": TEMPLATE,
            "data": order_data(start),
            "recipients": [f"oFull_{n:05d}" for n in range(start, start + BATCH)],
        }
        async with session.post(
            f"{gateway.url}/v1/messages/batch", json=body, headers=AUTH
        ) as resp:
            answer = await resp.json()
        if resp.status == 503:
            return ids
        assert resp.status == 202, answer
        ids.extend(answer["data"]["ids"])
    raise AssertionError(f"{len(ids)} messages accepted on a full volume, none refused")


async def statuses(
    session: aiohttp.ClientSession, gateway: ServeProcess, ids: list[str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{gateway.url}/v1/messages", params=params, headers=AUTH) as resp:
            page = (await resp.json())["data"]
        found.update((item["id"], item["status"]) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return {mid: found.get(mid, "missing") for mid in ids}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


async def test_a_full_disk_recovers_without_a_restart_and_loses_nothing(
    tmp_path: Path, volume: Path, session: aiohttp.ClientSession
) -> None:
    port = free_port()
    callback_url = f"http://127.0.0.1:{port}/wechat/callback/{APP}"
    async with (
        SandboxServer(port=0, callback_url=callback_url) as sandbox,
        SandboxControl(sandbox.base_url) as control,
    ):
        config = write_config(
            tmp_path / "wxgate.toml",
            db_path=volume / "wxgate.db",
            api_base=sandbox.base_url,
            delivery={"concurrency": 16},
        )
        filler = Filler(volume)
        gateway = await start_serve(config, "all", tmp_path, port)
        try:
            await gateway.ready(session)
            pid = gateway.process.pid
            await control.set_faults(latency_ms=200)  # sends in flight when the disk fills
            ids = []
            for n in range(MESSAGES):
                status, data = await post(session, gateway, n)
                assert status == 202, data
                ids.append(data["id"])
            await eventually(lambda: _inbox_at_least(control, 20), 20.0, "sends under way")
            filler.start()

            ids += await post_until_refused(session, gateway, MESSAGES)
            # 503 with {"storage_writable": false}
            await eventually(
                lambda: _not_writable(session, gateway), 20.0, "/readyz reporting the full disk"
            )

            filler.stop()
            await control.set_faults(latency_ms=0)

            async def all_settled() -> bool:
                return set((await statuses(session, gateway, ids)).values()) <= SENT

            await eventually(all_settled, 45.0, "every accepted message sent and settled")
            await control.wait_for_callbacks()
            ended = Counter((await statuses(session, gateway, ids)).values())
            stats = await control.stats()
            # Ready again once writes have gone through for a second (WRITABLE_AGAIN_S).
            await eventually(lambda: _ready(session, gateway), 20.0, "/readyz ready again")
            again, data = await post(session, gateway, MESSAGES + 1)
            assert again == 202, data
            inbox = await control.messages(limit=10_000)
            assert gateway.process.returncode is None and gateway.process.pid == pid
        finally:
            log = gateway.log_tail(40)
            await gateway.stop()
            filler.stop()
    sent = [item["client_msg_id"] for item in inbox if item["client_msg_id"] in set(ids)]
    assert sorted(sent) == sorted(ids), log  # each accepted message reached WeChat once
    # `sent` is final for a report WeChat gave up pushing while the disk was full.
    assert ended["sent"] <= stats["callbacks"]["failed"], (ended, stats["callbacks"])
    assert b"SQLite writes again" in gateway.log_path.read_bytes()


async def _inbox_at_least(control: SandboxControl, count: int) -> bool:
    return int((await control.inbox(limit=1))["total"]) >= count


async def _ready(session: aiohttp.ClientSession, gateway: ServeProcess) -> bool:
    status, data = await readyz(session, gateway)
    return status == 200 and data["checks"].get("storage_writable") is True


async def _not_writable(session: aiohttp.ClientSession, gateway: ServeProcess) -> bool:
    status, data = await readyz(session, gateway)
    return status == 503 and data["checks"].get("storage_writable") is False
