"""A delivery rig: a real SQLite file, the real sandbox over HTTP, the real token manager
and client, and a Worker on a FakeClock that tests drive with `drain()` and `advance()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from wxgate.backends.base import MessageRecord, NewMessage
from wxgate.backends.sqlite import SqliteBackend
from wxgate.clock import FakeClock
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery.events import WorkerEvent
from wxgate.delivery.worker import AppRuntime, Worker
from wxgate.gateway import token_manager
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_SECRET
from wxgate.wechat.client import AccountClient, WeChatHttp

APP = "shop"
TEMPLATE = "tpl_order_shipped"
T = TypeVar("T")


@dataclass
class Recorder:
    """A worker listener that keeps every event."""

    events: list[WorkerEvent] = field(default_factory=list)

    def on_event(self, event: WorkerEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[T]) -> list[T]:
        return [event for event in self.events if isinstance(event, kind)]


@dataclass
class Rig:
    backend: SqliteBackend
    clock: FakeClock
    control: Any  # SandboxControl
    worker: Worker
    recorder: Recorder
    delivery: DeliverySettings
    app: AppSettings
    runtime: AppRuntime

    async def enqueue(self, *tousers: str, template_id: str = TEMPLATE) -> list[str]:
        messages = [
            NewMessage(APP, _payload(touser, template_id), trace_id=f"trace-{n}")
            for n, touser in enumerate(tousers)
        ]
        answers = await self.backend.enqueue(messages, self.clock.now())
        return [answer.id for answer in answers]

    async def record(self, message_id: str) -> MessageRecord:
        record = await self.backend.get(message_id)
        assert record is not None
        return record

    async def inbox(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.control.messages(**filters)

    async def sends(self) -> int:
        return int((await self.control.stats())["sends_total"])

    def new_worker(self, **kwargs: Any) -> Worker:
        return Worker(self.backend, {APP: self.runtime}, self.delivery, clock=self.clock, **kwargs)


def _payload(touser: str, template_id: str) -> dict[str, Any]:
    return {
        "touser": touser,
        "template_id": template_id,
        "data": {"thing1": {"value": "parcel 42"}, "time2": {"value": "2024-03-01 15:01"}},
    }


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(sandbox: Any, sandbox_control: Any, tmp_path: Path) -> AsyncIterator[MakeRig]:
    """make_rig(delivery={...}, app={...}) -> Rig; everything is closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            delivery: dict[str, Any] | None = None, app: dict[str, Any] | None = None
        ) -> Rig:
            clock = FakeClock()
            backend = SqliteBackend(tmp_path / "delivery.db", clock=clock)
            await backend.start()
            stack.push_async_callback(backend.close)
            http = WeChatHttp(pool_size=64, connect_timeout_s=2.0, read_timeout_s=5.0)
            stack.push_async_callback(http.close)
            app_settings = AppSettings(
                **{
                    "appid": DEFAULT_APPID,
                    "secret": DEFAULT_SECRET,
                    "api_base": sandbox.base_url,
                    # A worker's pace slack (PACE_S, 10 ms of rate) above any test's
                    # count, so drain() or run() on a fake clock never waits for budget
                    # unless a test says so.
                    "rate_limit_per_s": 100_000.0,
                    **(app or {}),
                }
            )
            tokens = token_manager(APP, app_settings, backend.token_store(), http, clock=clock)
            stack.push_async_callback(tokens.close)
            runtime = AppRuntime(APP, app_settings, AccountClient(http, tokens, sandbox.base_url))
            settings = DeliverySettings(**{"backoff_cap_s": 8.0, **(delivery or {})})
            recorder = Recorder()
            worker = Worker(
                backend,
                {APP: runtime},
                settings,
                clock=clock,
                listeners=[recorder],
                worker_id="worker-under-test",
            )
            return Rig(
                backend, clock, sandbox_control, worker, recorder, settings, app_settings, runtime
            )

        yield make


async def on_fake_time(clock: FakeClock, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, moving the fake clock to the next sleeper's wake-up whenever someone
    sleeps on it, so waits for send budget pass at once in real time."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.sleep(0.002)
        wake = clock.next_wake()
        if wake is not None:
            clock.advance(max(wake, 0.0))
    return task.result()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll `check` in real time until it holds (generous: it returns as soon as it does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
