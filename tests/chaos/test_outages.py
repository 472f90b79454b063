"""Storage that is away for a moment (SQLite locked by another process past the busy
timeout; Redis restarting) is a 503 with Retry-After that a client or WeChat retries,
never a 500; nothing of the refused call is stored, and the retry works. A worker
rides it out: it stops leasing, keeps what it must write, and delivers once storage
is back, instead of stopping for good.

Found by the chaos campaign: the API answered 500 "internal error", a worker
(re)started while Redis was down stopped delivering until its process was restarted,
and a delivery report whose claim Redis stored just before it died was lost.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.api.conftest import API_KEY, APPID, CALLBACK_TOKEN, make_settings, message_body
from tests.chaos.processes import Service, redis_answers
from tests.conftest import free_port
from wxgate.api.app import create_app
from wxgate.api.routes.callback import push_key
from wxgate.backends.base import NewMessage, Outcome, Settlement, StorageUnavailable
from wxgate.backends.sqlite import SqliteBackend
from wxgate.config import AppSettings, DeliverySettings
from wxgate.delivery.worker import AppRuntime, Worker
from wxgate.observability import Metrics
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_SECRET
from wxgate.server import BackgroundServer, serve_in_background
from wxgate.wechat.callback import CallbackCodec, template_finish_xml
from wxgate.wechat.client import AccountClient, TokenFetcher, WeChatHttp
from wxgate.wechat.token import TokenManager

BUSY_TIMEOUT_S = 0.2
MSGID = 3487542469355618313


@dataclass
class Api:
    url: str
    backend: SqliteBackend
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as reply:
            raw = await reply.read()
            body = orjson.loads(raw) if reply.content_type == "application/json" else raw
            return reply.status, body, reply.headers


@pytest.fixture
async def api(sqlite_path: Path) -> AsyncIterator[Api]:
    backend = SqliteBackend(sqlite_path, busy_timeout_s=BUSY_TIMEOUT_S)
    await backend.start()
    server: BackgroundServer = await serve_in_background(
        create_app(make_settings(), backend, metrics=Metrics())
    )
    async with aiohttp.ClientSession() as http:
        yield Api(f"http://127.0.0.1:{server.port}", backend, http)
    await server.stop()
    await backend.close()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's write transaction holding the file's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def stored(api: Api) -> int:
    return sum((await api.backend.counts()).values())


async def test_intake_while_storage_is_locked_is_503_with_retry_after(
    api: Api, sqlite_path: Path
) -> None:
    with locked(sqlite_path):
        status, body, headers = await api.call("POST", "/v1/messages", json=message_body())
    assert (status, body["code"]) == (503, 50300)
    assert headers["Retry-After"] == "1"
    assert await stored(api) == 0


async def test_intake_retried_with_its_key_after_the_outage_stores_one_message(
    api: Api, sqlite_path: Path
) -> None:
    key = {"Idempotency-Key": "order-1-shipped"}
    with locked(sqlite_path):
        refused, _, _ = await api.call("POST", "/v1/messages", json=message_body(), headers=key)
    accepted, body, _ = await api.call("POST", "/v1/messages", json=message_body(), headers=key)
    again, repeat, _ = await api.call("POST", "/v1/messages", json=message_body(), headers=key)
    assert (refused, accepted, again) == (503, 202, 200)
    assert repeat["data"]["id"] == body["data"]["id"]
    assert await stored(api) == 1


async def sent_with_report(api: Api, nonce: str) -> tuple[str, dict[str, str], bytes]:
    """A message the gateway has sent, and WeChat's signed report for it."""
    _, body, _ = await api.call("POST", "/v1/messages", json=message_body(touser="oA"))
    [lease] = await api.backend.lease_batch("test", 1, 60.0, time.time())
    await api.backend.settle([Settlement(lease, Outcome.SENT, msgid=MSGID)], time.time())
    xml = template_finish_xml("gh_0123456789ab", "oA", int(time.time()), MSGID, "success")
    query, report = CallbackCodec(CALLBACK_TOKEN, APPID).seal(xml, str(int(time.time())), nonce)
    return body["data"]["id"], query, report


async def test_a_callback_during_a_short_outage_waits_for_storage_and_is_applied(
    api: Api, sqlite_path: Path
) -> None:
    message_id, query, report = await sent_with_report(api, "76")
    other = sqlite3.connect(sqlite_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    asyncio.get_running_loop().call_later(0.5, other.execute, "ROLLBACK")
    try:
        status, answer, _ = await api.call(
            "POST", "/wechat/callback/default", params=query, data=report
        )
    finally:
        other.close()
    assert (status, answer) == (200, b"success")
    record = await api.backend.get(message_id)
    assert record is not None and record.status == "delivered"


async def test_a_callback_refused_during_a_long_outage_is_applied_on_wechats_retry(
    api: Api, sqlite_path: Path
) -> None:
    message_id, query, report = await sent_with_report(api, "77")
    path = "/wechat/callback/default"
    with locked(sqlite_path):
        refused, _, _ = await api.call("POST", path, params=query, data=report)
    # WeChat repeats an unacknowledged push as it was, nonce included.
    retried, answer, _ = await api.call("POST", path, params=query, data=report)
    assert (refused, retried, answer) == (503, 200, b"success")
    record = await api.backend.get(message_id)
    assert record is not None and record.status == "delivered"


async def test_a_push_claimed_before_storage_failed_is_applied_when_it_comes_again(
    api: Api,
) -> None:
    # Redis killed after it stored the claims but before it answered: the gateway's
    # retry (or WeChat's) finds them taken. Found by the chaos campaign: the report was
    # then taken for a duplicate, answered `success`, and lost.
    message_id, query, report = await sent_with_report(api, "78")
    now = time.time()
    assert await api.backend.remember_nonce("default", push_key("78", report), 600, now)
    assert await api.backend.remember_nonce("default", "78", 600, now)
    status, answer, _ = await api.call(
        "POST", "/wechat/callback/default", params=query, data=report
    )
    assert (status, answer) == (200, b"success")
    record = await api.backend.get(message_id)
    assert record is not None and record.status == "delivered"


class LosesOneAnswer(SqliteBackend):
    """A real SQLite engine whose answer to one claim is lost after the claim was
    written, as when Redis is killed between running a command and answering it."""

    def __init__(self, *args: Any, lose: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lose = lose  # "push" or "nonce": which of the two claims of a push
        self.lost = False

    async def remember_nonce(self, app: str, nonce: str, ttl_s: float, now: float) -> bool:
        fresh = await super().remember_nonce(app, nonce, ttl_s, now)
        claim = "push" if ":" in nonce else "nonce"
        if claim == self._lose and not self.lost:
            self.lost = True
            raise StorageUnavailable("the answer was lost with the connection")
        return fresh


@pytest.mark.parametrize("lose", ["push", "nonce"])
async def test_a_claim_whose_answer_storage_lost_does_not_lose_the_report(
    sqlite_path: Path, lose: str
) -> None:
    # Found by the chaos campaign: retrying the lost nonce claim alone read our own
    # claim as a used nonce, so the push was taken for a forgery and the report lost.
    backend = LosesOneAnswer(sqlite_path, busy_timeout_s=BUSY_TIMEOUT_S, lose=lose)
    await backend.start()
    server = await serve_in_background(create_app(make_settings(), backend, metrics=Metrics()))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(f"http://127.0.0.1:{server.port}", backend, http)
            message_id, query, report = await sent_with_report(api, "79")
            status, answer, _ = await api.call(
                "POST", "/wechat/callback/default", params=query, data=report
            )
    finally:
        await server.stop()
    record = await backend.get(message_id)
    await backend.close()
    assert backend.lost
    assert (status, answer) == (200, b"success")
    assert record is not None and record.status == "delivered"


async def test_metrics_are_served_while_storage_cannot_be_read(api: Api) -> None:
    await api.call("GET", "/metrics")  # the queue depth as last seen
    await api.backend.close()
    status, text, _ = await api.call("GET", "/metrics")
    assert status == 200
    assert b'wxgate_queue_depth{status="queued"}' in text


# -- a worker while Redis restarts -------------------------------------------------------


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[tuple[Service, int]]:
    """A redis-server of this test's own (AOF on, so a restart keeps the data)."""
    if shutil.which("redis-server") is None or find_spec("wxgate.backends.redis") is None:
        pytest.skip("needs redis-server and the Redis engine")
    port = free_port()
    argv = (
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
    )  # fmt: skip
    server = Service("redis", argv, tmp_path / "redis.log")
    await server.start()
    await server.until(lambda: redis_answers(port), 20, "PING answer")
    yield server, port
    await server.stop()


async def test_a_worker_started_while_redis_is_down_delivers_once_it_is_back(
    redis_server: tuple[Service, int], sandbox: Any
) -> None:
    from wxgate.backends.redis import RedisBackend

    server, port = redis_server
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", prefix="outage")
    await backend.start()
    payload = {"touser": "oOUTAGE", "template_id": "tpl", "data": {"thing1": {"value": "x"}}}
    [queued] = await backend.enqueue([NewMessage("shop", payload)], time.time())
    await server.kill()  # down before the worker has leased or fetched a token
    app = AppSettings(appid=DEFAULT_APPID, secret=DEFAULT_SECRET, api_base=sandbox.base_url)
    async with WeChatHttp() as http:
        fetcher = TokenFetcher(http, app.api_base)
        tokens = TokenManager("shop", app.appid, app.secret, backend.token_store(), fetcher)
        runtime = AppRuntime("shop", app, AccountClient(http, tokens, app.api_base))
        worker = Worker(backend, {"shop": runtime}, DeliverySettings(idle_poll_s=0.02))
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)
        assert worker.running and not running.done()  # waiting, not stopped
        await server.start()
        await server.until(lambda: redis_answers(port), 20, "PING answer")
        deadline = time.monotonic() + 30.0  # reconnect, lease, fetch, send: slower when busy
        while time.monotonic() < deadline:
            record = await backend.get(queued.id)
            if record is not None and record.status == "sent":
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await running
    await backend.close()
    assert record is not None and record.status == "sent"
