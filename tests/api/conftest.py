"""A real gateway API for each test: a SQLite file, the app served by uvicorn on a
free loopback port in the test's event loop, and an aiohttp client speaking to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from tests.backends.conftest import REDIS_URL, delete_prefix, redis_prefix, require_redis
from tests.conftest import free_port
from wxgate.api.app import create_app
from wxgate.api.state import Readiness
from wxgate.backends.base import Backend, Outcome, Settlement
from wxgate.backends.redis import RedisBackend
from wxgate.backends.sqlite import SqliteBackend
from wxgate.clock import Clock, SystemClock
from wxgate.config import Settings, hash_api_key
from wxgate.observability import Metrics
from wxgate.server import PromptServer

API_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "test-key-fedcba9876543210"
CALLBACK_TOKEN = "callback-token-for-tests"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx00000000000000a1"
SAFE_APPID = "wx00000000000000b2"


def app_config(appid: str = APPID, **extra: Any) -> dict[str, Any]:
    return {"appid": appid, "secret": "app-secret-for-tests", **extra}


def make_settings(
    apps: dict[str, dict[str, Any]] | None = None,
    keys: tuple[str, ...] = (API_KEY,),
    **server: Any,
) -> Settings:
    if apps is None:
        apps = {"default": app_config(callback_token=CALLBACK_TOKEN)}
    server = {"api_keys": [hash_api_key(key) for key in keys], **server}
    return Settings(server=server, apps=apps)


def message_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "touser": "oUSER_0000000000000000001",
        "template_id": "TPL_order_shipped",
        "url": "https://shop.example.com/orders/1",
        "data": {
            "thing1": {"value": "蓝色保温杯"},
            "character_string2": {"value": "SO-2024-000123"},
            "time3": {"value": "2024-06-01 15:01"},
        },
    }
    body.update(overrides)
    return body


@dataclass(frozen=True)
class Reply:
    """What a test may look at besides status and decoded body."""

    headers: Mapping[str, str]
    raw: bytes
    content_type: str


@dataclass
class Gateway:
    """One running API and what a test needs to look behind it."""

    url: str
    app: FastAPI
    backend: Backend
    metrics: Metrics
    clock: Clock
    settings: Settings
    http: aiohttp.ClientSession

    def auth(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def request(
        self, method: str, path: str, *, key: str | None = API_KEY, **kwargs: Any
    ) -> tuple[int, Any, Reply]:
        """Status, decoded body (JSON when it is JSON) and the rest of the reply."""
        headers = {**(self.auth(key) if key else {}), **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            body: Any = raw.decode("utf-8", "replace")
            if resp.content_type == "application/json":
                body = orjson.loads(raw)
            return resp.status, body, Reply(resp.headers, raw, resp.content_type)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any, Reply]:
        return await self.request("POST", path, json=json, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, Reply]:
        return await self.request("GET", path, **kwargs)

    async def settle(self, message_id: str, outcome: Outcome, **fields: Any) -> None:
        """Settle one queued message as a worker would; others leased with it go back."""
        now = self.clock.now()
        leases = await self.backend.lease_batch("test-worker", 1000, 60.0, now)
        [target] = [lease for lease in leases if lease.id == message_id]
        others = [
            Settlement(lease, Outcome.RELEASE, next_attempt_at=now)
            for lease in leases
            if lease is not target
        ]
        stored = await self.backend.settle([Settlement(target, outcome, **fields), *others], now)
        assert all(stored)


GatewayFactory = Callable[..., Awaitable[Gateway]]


class _TestServer(PromptServer):
    """The background server's, without the 0.1 s uvicorn's shutdown gives open
    connections (~460 tests pay it): a test has closed its client before it stops."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for server in self.servers:
            await server.wait_closed()


async def _serve(app: FastAPI, stack: AsyncExitStack) -> str:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = _TestServer(config)
    task = asyncio.create_task(server.serve())

    async def stop() -> None:
        server.stop()
        await task

    stack.push_async_callback(stop)
    deadline = time.monotonic() + 30.0  # seconds at most, even on a busy machine
    while time.monotonic() < deadline:
        if server.started:
            return f"http://127.0.0.1:{port}"
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    raise RuntimeError("uvicorn did not start")


@pytest.fixture
async def gateway_factory(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways with the settings, clock and readiness a test asks for."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(
            settings: Settings | None = None,
            clock: Clock | None = None,
            readiness: Readiness | None = None,
            engine: str = "sqlite",
        ) -> Gateway:
            nonlocal count
            count += 1
            settings = settings if settings is not None else make_settings()
            clock = clock if clock is not None else SystemClock()
            backend: Backend
            if engine == "redis":
                await require_redis()
                prefix = f"{redis_prefix(tmp_path)}-{count}"
                stack.push_async_callback(delete_prefix, prefix)
                backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
            else:
                backend = SqliteBackend(tmp_path / f"gateway-{count}.db", clock=clock)
            await backend.start()
            stack.push_async_callback(backend.close)
            metrics = Metrics()
            app = create_app(settings, backend, metrics=metrics, clock=clock, readiness=readiness)
            url = await _serve(app, stack)
            http = await stack.enter_async_context(aiohttp.ClientSession())
            return Gateway(url, app, backend, metrics, clock, settings, http)

        yield start


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    """The default gateway: one app (`default`) and one API key."""
    return await gateway_factory()
