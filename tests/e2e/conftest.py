"""The whole gateway over real HTTP: a sandbox WeChat and a `Gateway` on a real SQLite
file, both served on loopback in the test's event loop, and an aiohttp client that
speaks to the gateway's API as a business system would.

The sandbox posts its delivery reports to the gateway's callback URL, so a message
travels the full path: intake, queue, worker, sandbox, report, record. The sandbox
and the gateway share one `ShiftedClock`, so a test can move wall time (past 00:00
Beijing, say) for both at once without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import free_port
from wxgate.config import Settings, hash_api_key
from wxgate.gateway import Gateway
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_SECRET,
)
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.server import BackgroundServer, serve_in_background

API_KEY = "e2e-api-key-7d41c9b2e05f4a86"
APP = "shop"
TEMPLATE = "tpl_order_shipped"
TERMINAL = frozenset({"delivered", "rejected", "failed", "dead"})

# Quick retries and short leases keep every test in seconds.
QUICK_DELIVERY: dict[str, Any] = {
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.2,
    "max_attempts": 5,
    "lease_s": 10.0,
    "idle_poll_s": 0.02,
    "shutdown_grace_s": 1.0,
}


def order_data(n: int = 1) -> dict[str, dict[str, str]]:
    """Template data the sandbox's typed-value rules accept."""
    return {
        "character_string1": {"value": f"SO{n:010d}"},
        "thing2": {"value": "Left Hangzhou depot"},
        "time3": {"value": "2026-11-29 10:30"},
    }


class ShiftedClock:
    """The system clock plus an offset that only moves forward (`shift`)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def shift(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


def e2e_settings(
    *,
    port: int,
    db_path: Path,
    api_base: str,
    safe: bool,
    app: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None,
) -> Settings:
    """One app (`shop`) on the sandbox's default account; `app`, `delivery`, `server` and
    `storage` override single fields."""
    app_fields: dict[str, Any] = {
        "appid": DEFAULT_APPID,
        "secret": DEFAULT_SECRET,
        "api_base": api_base,
        "callback_token": DEFAULT_CALLBACK_TOKEN,
        "encoding_aes_key": DEFAULT_ENCODING_AES_KEY if safe else "",
        "rate_limit_per_s": 5000.0,
        **(app or {}),
    }
    server_fields: dict[str, Any] = {
        "port": port,
        "api_keys": [hash_api_key(API_KEY)],
        "rate_limit_per_key_per_s": 100_000.0,
        "rate_limit_burst": 100_000,
        **(server or {}),
    }
    return Settings(
        server=server_fields,
        storage={"sqlite_path": str(db_path), "sqlite_synchronous": "NORMAL", **(storage or {})},
        delivery={**QUICK_DELIVERY, **(delivery or {})},
        apps={APP: app_fields},
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `check` in real time until it holds (generous: it returns as soon as it does,
    and a machine busy with other work may take many times the usual)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.03)


@dataclass
class Stack:
    """A running sandbox + gateway, and what a test needs to drive and inspect them."""

    url: str
    port: int
    db_path: Path
    sandbox: SandboxServer
    control: SandboxControl
    clock: ShiftedClock
    session: aiohttp.ClientSession
    safe: bool
    overrides: dict[str, dict[str, Any]]
    settings: Settings | None = None
    gateway: Gateway | None = None
    server: BackgroundServer | None = None
    _running: list[tuple[Gateway, BackgroundServer]] = field(default_factory=list)

    # -- the gateway's life ---------------------------------------------------------------

    async def start_gateway(self, **overrides: dict[str, Any]) -> None:
        """A gateway on this stack's port and SQLite file (`app=`, `delivery=`, `server=`
        override fields of the stack's own settings)."""
        merged = {k: {**self.overrides.get(k, {}), **v} for k, v in overrides.items()}
        self.settings = e2e_settings(
            port=self.port,
            db_path=self.db_path,
            api_base=self.sandbox.base_url,
            safe=self.safe,
            **{**self.overrides, **merged},
        )
        self.gateway = Gateway(self.settings, clock=self.clock)
        await self.gateway.start()
        assert self.gateway.app is not None
        self.server = await serve_in_background(
            self.gateway.app, "127.0.0.1", self.port, settings=self.settings.server
        )
        self._running.append((self.gateway, self.server))

    async def stop_gateway(self) -> None:
        while self._running:
            gateway, server = self._running.pop()
            await server.stop()
            await gateway.stop()
        self.gateway = self.server = None

    # -- the API, as a client -------------------------------------------------------------

    async def call(
        self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any
    ) -> tuple[int, Any]:
        """HTTP status and the decoded body (JSON when it is JSON, else text)."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if "json" in kwargs:
            kwargs["data"] = orjson.dumps(kwargs.pop("json"))
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, orjson.loads(raw)
            return resp.status, raw.decode("utf-8", "replace")

    async def send(self, touser: str, template_id: str = TEMPLATE, **fields: Any) -> str:
        """POST /v1/messages; the new message's id (asserting 202)."""
        body = {"touser": touser, "template_id": template_id, "data": order_data(), **fields}
        status, answer = await self.call("POST", "/v1/messages", json=body)
        assert status == 202, answer
        return str(answer["data"]["id"])

    async def record(self, message_id: str) -> dict[str, Any]:
        status, answer = await self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, answer
        return dict(answer["data"])

    async def settled(
        self,
        ids: Iterable[str],
        statuses: Iterable[str] = TERMINAL,
        timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll until every message is in one of `statuses`; their records, in order."""
        wanted, ids = frozenset(statuses), list(ids)
        records: list[dict[str, Any]] = []

        async def reached() -> bool:
            records[:] = [await self.record(message_id) for message_id in ids]
            return all(rec["status"] in wanted for rec in records)

        try:
            await eventually(reached, timeout_s, f"statuses {sorted(wanted)}")
        except AssertionError as exc:
            seen = [(r["touser"], r["status"], r["attempts"]) for r in records]
            raise AssertionError(f"{exc}: {seen}") from None
        return records

    async def pause_of(self, app: str = APP) -> dict[str, Any] | None:
        """The app's pause as GET /v1/apps shows it (None: not paused)."""
        status, answer = await self.call("GET", "/v1/apps")
        assert status == 200, answer
        [item] = [item for item in answer["data"]["items"] if item["app"] == app]
        return item["pause"]

    async def inbox(self, **filters: Any) -> list[dict[str, Any]]:
        return await self.control.messages(**filters)

    async def stats(self) -> dict[str, Any]:
        return await self.control.stats()


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[MakeStack]:
    """make_stack(callback_mode="plain" | "safe" | None, app=, delivery=, server=) -> Stack.

    `callback_mode=None` gives the sandbox no callback URL: sent messages then wait
    for a report that only the test sends. Everything is stopped after the test."""
    async with AsyncExitStack() as stack:
        count = 0

        async def make(
            callback_mode: str | None = "plain",
            *,
            start: bool = True,
            **overrides: dict[str, Any],
        ) -> Stack:
            nonlocal count
            count += 1
            port = free_port()
            clock = ShiftedClock()
            callback_url = f"http://127.0.0.1:{port}/wechat/callback/{APP}"
            sandbox = SandboxServer(
                port=0,
                callback_url=callback_url if callback_mode else None,
                callback_mode=callback_mode or "plain",  # type: ignore[arg-type]
                clock=clock,
            )
            await sandbox.start()
            stack.push_async_callback(sandbox.stop)
            control = SandboxControl(sandbox.base_url)
            stack.push_async_callback(control.close)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            )
            e2e = Stack(
                url=f"http://127.0.0.1:{port}",
                port=port,
                db_path=tmp_path / f"e2e-{count}.db",
                sandbox=sandbox,
                control=control,
                clock=clock,
                session=session,
                safe=callback_mode == "safe",
                overrides=overrides,
            )
            stack.push_async_callback(e2e.stop_gateway)
            if start:
                await e2e.start_gateway()
            return e2e

        yield make
