"""`wxgate serve` as separate processes sharing one SQLite file: a worker killed with
SIGKILL mid-batch loses nothing and sends nothing twice, SIGTERM hands back every
lease, and each role serves what it should."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, APP, TEMPLATE, eventually, order_data
from tests.e2e.processes import ServeProcess, start_serve, write_config
from wxgate.backends.base import ListFilter, Status
from wxgate.backends.sqlite import SqliteBackend
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HANG_S = 60.0  # a send held this long by the sandbox: far beyond any grace or process exit
Start = Callable[..., Awaitable[ServeProcess]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """start(config, role, port=None) -> a running `wxgate serve`; all killed afterwards,
    and every log line checked for secrets."""
    started: list[ServeProcess] = []

    async def run(config: Path, role: str, port: int | None = None) -> ServeProcess:
        process = await start_serve(config, role, tmp_path, port)
        started.append(process)
        return process

    yield run
    for process in started:
        await process.stop()
    for process in started:
        assert process.secret_leaks() == [], process.role


async def batch(
    session: aiohttp.ClientSession, api: ServeProcess, count: int
) -> tuple[str, list[str]]:
    body = {
        "app": APP,
        "template_id": TEMPLATE,
        "data": order_data(),
        "recipients": [f"oProc_{n:04d}" for n in range(count)],
    }
    async with session.post(f"{api.url}/v1/messages/batch", json=body, headers=AUTH) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
    return answer["data"]["batch_id"], answer["data"]["ids"]


async def batch_counts(
    session: aiohttp.ClientSession, api: ServeProcess, batch_id: str
) -> dict[str, int]:
    async with session.get(f"{api.url}/v1/batches/{batch_id}", headers=AUTH) as resp:
        return dict((await resp.json())["data"]["counts"])


async def stored(db_path: Path) -> list[Any]:
    """Every record in the SQLite file with its events, read by a fresh backend (as
    after a restart)."""
    backend = SqliteBackend(db_path)
    await backend.start()
    try:
        page = await backend.list(ListFilter(), 1000)
        return [await backend.get(record.id) for record in page.items]
    finally:
        await backend.close()


async def sigkill_once_inbox_holds(
    worker: ServeProcess, control: SandboxControl, count: int
) -> int:
    """SIGKILL `worker` once the sandbox has accepted `count` sends; the inbox size then."""

    async def reached() -> bool:
        return int((await control.inbox(limit=1))["total"]) >= count

    await eventually(reached, 60.0, f"{count} messages in the sandbox inbox")
    worker.signal(signal.SIGKILL)
    assert await worker.wait() == -signal.SIGKILL
    return int((await control.inbox(limit=1))["total"])


async def test_killed_worker_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, start: Start, session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    api_port = free_port()
    callback_url = f"http://127.0.0.1:{api_port}/wechat/callback/{APP}"
    async with (
        SandboxServer(port=0, callback_url=callback_url) as sandbox,
        SandboxControl(sandbox.base_url) as control,
    ):
        db_path = tmp_path / "shared.db"
        config = write_config(
            tmp_path / "wxgate.toml",
            db_path=db_path,
            api_base=sandbox.base_url,
            delivery={"lease_s": 2.0, "concurrency": 32},
        )
        api, worker = await asyncio.gather(start(config, "api", api_port), start(config, "worker"))
        await asyncio.gather(api.ready(session), worker.ready(session))
        await control.set_faults(latency_ms=150)
        batch_id, ids = await batch(session, api, 500)

        at_kill = await sigkill_once_inbox_holds(worker, control, 100)
        assert at_kill < 500, "the worker finished before it was killed"

        await control.set_faults(latency_ms=0)
        second = await start(config, "worker")
        await second.ready(session)

        async def all_delivered() -> bool:
            counts = await batch_counts(session, api, batch_id)
            return counts.get("delivered", 0) == 500

        await eventually(all_delivered, 120.0, "500 delivered")
        inbox = await control.messages(limit=1000)
        stats = await control.stats()

    client_msg_ids = [item["client_msg_id"] for item in inbox]
    assert sorted(client_msg_ids) == sorted(ids)  # each one exactly once
    with capsys.disabled():  # shown in the test output, not only on failure
        print(
            f"\n[e2e] worker SIGKILLed at {at_kill}/500 in the sandbox inbox; "
            f"duplicates_absorbed={stats['duplicates_absorbed']}, sends {stats['sends']}"
        )
    records = await stored(db_path)
    assert {record.status for record in records} == {Status.DELIVERED}
    assert any(event.kind == "lease_expired" for record in records for event in record.events), (
        "no lease of the killed worker expired"
    )


async def test_sigterm_hands_back_every_lease(
    tmp_path: Path, start: Start, session: aiohttp.ClientSession
) -> None:
    async with (
        SandboxServer(port=0) as sandbox,
        SandboxControl(sandbox.base_url) as control,
    ):
        db_path = tmp_path / "graceful.db"
        config = write_config(
            tmp_path / "wxgate.toml",
            db_path=db_path,
            api_base=sandbox.base_url,
            delivery={"shutdown_grace_s": 0.5, "lease_s": 60.0, "read_timeout_s": 60.0},
        )
        gateway = await start(config, "all")
        await gateway.ready(session)
        await control.set_faults(latency_ms=HANG_S * 1000)  # every send hangs past the grace
        _, ids = await batch(session, gateway, 20)

        async def sending() -> bool:
            url = f"{gateway.url}/v1/messages?status=sending"
            async with session.get(url, headers=AUTH) as resp:
                return len((await resp.json())["data"]["items"]) > 0

        await eventually(sending, 30.0, "messages in sending")
        started = time.monotonic()
        gateway.signal(signal.SIGTERM)
        returncode = await gateway.wait()
        took = time.monotonic() - started

    assert returncode == 0, gateway.log_tail()
    # The grace (0.5 s) and a process exit on a busy machine, not the 60 s hang nor lease.
    assert took < HANG_S / 3
    records = await stored(db_path)
    assert len(records) == len(ids)
    assert Status.SENDING not in {record.status for record in records}
    released = [r for r in records if any(e.kind == "released" for e in r.events)]
    assert released, "no lease was handed back"
    assert all(record.attempts == 0 for record in released)
    assert "released leased messages at shutdown" in gateway.log_tail(50)


async def test_each_role_serves_its_endpoints(
    tmp_path: Path, start: Start, session: aiohttp.ClientSession
) -> None:
    config = write_config(
        tmp_path / "wxgate.toml", db_path=tmp_path / "roles.db", api_base="http://127.0.0.1:9"
    )
    processes = await asyncio.gather(*(start(config, role) for role in ("all", "api", "worker")))
    await asyncio.gather(*(process.ready(session) for process in processes))
    answers: dict[str, dict[str, Any]] = {}
    for process in processes:
        seen: dict[str, Any] = {}
        for path in ("/healthz", "/readyz", "/v1/messages", f"/wechat/callback/{APP}"):
            async with session.get(process.url + path, headers=AUTH) as resp:
                seen[path] = resp.status
        async with session.get(process.url + "/readyz") as resp:
            seen["checks"] = (await resp.json())["data"]["checks"]
        answers[process.role] = seen

    storage = {"backend": True, "storage_writable": True}
    assert answers["all"]["checks"] == {**storage, "workers": True}
    assert answers["api"]["checks"] == storage
    assert answers["worker"]["checks"] == {**storage, "workers": True}
    for role in ("all", "api", "worker"):
        assert answers[role]["/healthz"] == answers[role]["/readyz"] == 200
    assert answers["all"]["/v1/messages"] == answers["api"]["/v1/messages"] == 200
    assert answers["worker"]["/v1/messages"] == 404
    assert answers["worker"][f"/wechat/callback/{APP}"] == 404
