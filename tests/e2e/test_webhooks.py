"""Status webhooks end to end, on both engines: a gateway delivering to the sandbox, and a
receiver on loopback that verifies every post with the `standardwebhooks` library, as a
business system would.

The receiver keeps each post's verified body; it can be down (nothing listens on its
port) and come back on the same port."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.backends.conftest import REDIS_URL, delete_prefix, require_redis
from tests.conftest import free_port
from tests.e2e.conftest import APP, MakeStack, Stack, e2e_settings, eventually, order_data
from wxgate.backends.base import Status
from wxgate.config import StorageSettings
from wxgate.delivery.webhook_signing import new_secret
from wxgate.gateway import Gateway
from wxgate.server import serve_in_background

SECRET = new_secret()
QUICK_WEBHOOKS = {"idle_poll_s": 0.02, "backoff_base_s": 0.05, "backoff_cap_s": 0.3}
ENGINES = ["sqlite", "redis"]


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A business system's webhook endpoint on a fixed loopback port."""

    port: int = field(default_factory=free_port)
    secret: str = SECRET
    answer: int = 204
    posts: list[Post] = field(default_factory=list)
    refused: int = 0  # posts whose signature did not verify (must stay 0)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _take(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:  # any failure to verify is a refusal, counted
            self.refused += 1
            return web.Response(status=400)
        self.posts.append(Post(request.path, dict(request.headers), body))
        return web.Response(status=self.answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def by_message(self) -> dict[str, list[Post]]:
        """Posts per message id, in arrival order, one per webhook-id (a repeat dropped)."""
        seen: set[str] = set()
        found: dict[str, list[Post]] = {}
        for post in self.posts:
            if post.headers["webhook-id"] in seen:
                continue
            seen.add(post.headers["webhook-id"])
            found.setdefault(post.body["data"]["id"], []).append(post)
        return found


StartGateway = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def start_gateway(make_stack: MakeStack, tmp_path: Any) -> AsyncIterator[StartGateway]:
    """start_gateway(engine, receiver, app=..., server=..., webhooks=...) -> Stack: the e2e
    stack's gateway on SQLite or on its own Redis prefix, posting to `receiver`."""
    async with AsyncExitStack() as cleanup:

        async def start(engine: str, receiver: Receiver, **overrides: dict[str, Any]) -> Stack:
            stack = await make_stack(start=False)
            app = {
                "webhook_url": receiver.url,
                "webhook_secret": SECRET,
                **overrides.get("app", {}),
            }
            server = {"webhook_allowed_hosts": ["127.0.0.1"], **overrides.get("server", {})}
            settings = e2e_settings(
                port=stack.port,
                db_path=stack.db_path,
                api_base=stack.sandbox.base_url,
                safe=stack.safe,
                app=app,
                server=server,
                delivery=overrides.get("delivery"),
            )
            webhooks = {**QUICK_WEBHOOKS, **overrides.get("webhooks", {})}
            update: dict[str, Any] = {"webhooks": settings.webhooks.model_copy(update=webhooks)}
            if engine == "redis":
                await require_redis()
                prefix = f"wxgate-test-hooks-{uuid.uuid4().hex[:12]}"
                cleanup.push_async_callback(delete_prefix, prefix)
                update["storage"] = StorageSettings(
                    backend="redis", redis_url=REDIS_URL, redis_prefix=prefix
                )
            stack.settings = settings.model_copy(update=update)
            stack.gateway = Gateway(stack.settings, clock=stack.clock)
            await stack.gateway.start()
            assert stack.gateway.app is not None
            stack.server = await serve_in_background(
                stack.gateway.app, "127.0.0.1", stack.port, settings=stack.settings.server
            )
            stack._running.append((stack.gateway, stack.server))
            cleanup.push_async_callback(stack.stop_gateway)  # before its keys are deleted
            return stack

        yield start


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    yield hook
    await hook.stop()


async def send(stack: Stack, touser: str, template_id: str, key: str, **extra: Any) -> str:
    body = {
        "touser": touser,
        "template_id": template_id,
        "data": order_data(),
        "idempotency_key": key,
        **extra,
    }
    status, answer = await stack.call("POST", "/v1/messages", json=body)
    assert status == 202, answer
    return str(answer["data"]["id"])


# The five sandbox paths and the settled statuses their records go through.
PATHS = {
    "ok": ("oAlice_hooks", "tpl_order_shipped", ["sent", "delivered"]),
    "invalid": ("invalid_grace", "tpl_order_shipped", ["failed"]),
    "blocked": ("blocked_erin", "tpl_order_shipped", ["sent", "rejected"]),
    "busy": ("busy_dave", "tpl_order_shipped", ["sent", "delivered"]),
    "bad template": ("oJudy_hooks", "bad_retired_template", ["failed"]),
}


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_receiver_gets_every_status_of_the_five_paths_as_the_records_say(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    await receiver.start()
    stack = await start_gateway(engine, receiver)
    ids: dict[str, str] = {}
    for name, (touser, template_id, _) in PATHS.items():
        ids[name] = await send(stack, touser, template_id, key=f"k-{name}")
    status, answer = await stack.call(
        "POST",
        "/v1/messages/batch",
        json={"template_id": "tpl_order_shipped", "data": order_data(), "recipients": ["oBob_b"]},
    )
    assert status == 202, answer
    [ids["batch"]] = answer["data"]["ids"]
    expected = {name: statuses for name, (_, _, statuses) in PATHS.items()}
    expected["batch"] = ["sent", "delivered"]
    finals = {"delivered", "rejected", "failed"}
    records = dict(zip(ids, await stack.settled(list(ids.values()), finals), strict=True))

    async def all_posted() -> bool:
        got = receiver.by_message()
        return all(len(got.get(ids[name], [])) == len(want) for name, want in expected.items())

    await eventually(all_posted, 15, "every status posted")
    assert receiver.refused == 0
    got = receiver.by_message()
    for name, record in records.items():
        posts = got[ids[name]]
        assert [post.body["data"]["status"] for post in posts] == expected[name], name
        last = posts[-1].body
        assert last["type"] == f"message.{record['status']}"
        assert last["data"] == {
            "id": record["id"],
            "app": APP,
            "touser": record["touser"],
            "status": record["status"],
            "errcode": record["last_errcode"],
            "errmsg": record["last_errmsg"],
            "msgid": record["msgid"],
            "idempotency_key": record["idempotency_key"],
            "batch_id": record["batch_id"],
        }, name
        assert {post.path for post in posts} == {"/hooks"}
    assert records["batch"]["batch_id"] is not None
    assert records["invalid"]["last_errcode"] == 40003
    assert records["bad template"]["last_errcode"] == 40037
    sent = got[ids["busy"]][0].body["data"]
    assert sent["msgid"] == records["busy"]["msgid"] and sent["msgid"] is not None
    all_ids = [post.headers["webhook-id"] for post in receiver.posts]
    assert len(set(all_ids)) == sum(len(want) for want in expected.values())


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_message_callback_url_takes_its_statuses_instead_of_the_apps_url(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    await receiver.start()
    stack = await start_gateway(engine, receiver)
    own = f"http://127.0.0.1:{receiver.port}/own/orders"
    message_id = await send(stack, "oCarol_own", "tpl_order_shipped", "k-own", callback_url=own)
    await stack.settled([message_id], {"delivered"})

    async def posted() -> bool:
        return len(receiver.by_message().get(message_id, [])) == 2

    await eventually(posted, 10, "both statuses posted")
    assert [post.path for post in receiver.by_message()[message_id]] == ["/own/orders"] * 2


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_receiver_down_for_a_while_gets_everything_in_order_once_back(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    count, rate = 200, 200.0
    stack = await start_gateway(engine, receiver, app={"rate_limit_per_s": rate})
    started = time.monotonic()
    body = {
        "template_id": "tpl_order_shipped",
        "data": order_data(),
        "recipients": [f"oDown_{n:04d}" for n in range(count)],
    }
    status, answer = await stack.call("POST", "/v1/messages/batch", json=body)
    assert status == 202, answer
    assert len(answer["data"]["ids"]) == count
    assert stack.gateway is not None
    backend = stack.gateway.backend
    assert backend is not None

    async def all_delivered() -> bool:
        return (await backend.counts())[Status.DELIVERED] == count

    await eventually(all_delivered, 30, "every message delivered")
    elapsed = time.monotonic() - started

    # Delivery went on at the app's rate although every webhook post was refused.
    attempts = stack.gateway.metrics.webhook_attempts
    assert attempts.labels(APP, "unreachable")._value.get() > 0
    assert receiver.posts == []
    assert elapsed < count / rate * 3 + 2, elapsed

    await receiver.start()

    async def caught_up() -> bool:
        got = receiver.by_message()
        return len(got) == count and all(len(posts) == 2 for posts in got.values())

    await eventually(caught_up, 60, "every event posted once the receiver is back")
    for posts in receiver.by_message().values():
        assert [post.body["data"]["status"] for post in posts] == ["sent", "delivered"]
    assert receiver.refused == 0

    async def drained() -> bool:
        _, answer = await stack.call("GET", "/v1/webhooks")
        [item] = answer["data"]["items"]
        return bool(item["pending"] == 0 and item["dead"] == 0)

    await eventually(drained, 10, "the backlog drained")


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_event_past_its_retry_window_is_dead_then_replayed_with_its_id(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    receiver.answer = 500
    await receiver.start()
    stack = await start_gateway(engine, receiver, webhooks={"retry_for_s": 0.5})
    message_id = await send(stack, "invalid_grace", "tpl_order_shipped", "k-dead")
    await stack.settled([message_id], {"failed"})

    async def dead() -> bool:
        status, answer = await stack.call("GET", "/v1/webhooks/events", params={"app": APP})
        return status == 200 and len(answer["data"]["items"]) == 1

    await eventually(dead, 10, "the event dead")
    status, answer = await stack.call("GET", "/v1/webhooks/events", params={"app": APP})
    [item] = answer["data"]["items"]
    assert (item["message_id"], item["status"], item["last_error"]) == (
        message_id,
        "failed",
        "HTTP 500",
    )
    tried = len(receiver.posts)
    assert tried >= 2 and {post.headers["webhook-id"] for post in receiver.posts} == {
        item["webhook_id"]
    }

    receiver.answer = 200
    status, answer = await stack.call("POST", "/v1/webhooks/replay", json={"app": APP})
    assert (status, answer["data"]) == (200, {"replayed": 1})

    async def redelivered() -> bool:
        return len(receiver.posts) > tried

    await eventually(redelivered, 10, "the replayed event posted")
    await asyncio.sleep(0.2)
    assert receiver.posts[-1].headers["webhook-id"] == item["webhook_id"]
    status, answer = await stack.call("GET", "/v1/webhooks")
    assert answer["data"]["items"][0]["dead"] == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_metrics_show_the_backlog_its_age_and_the_oldest_queued_message(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    stack = await start_gateway(engine, receiver)
    message_id = await send(stack, "oDana_metrics", "tpl_order_shipped", "k-metrics")
    await stack.settled([message_id], {"delivered"})

    unreachable = f'wxgate_webhook_attempts_total{{app="{APP}",outcome="unreachable"}}'

    def tried(text: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(unreachable)]
        return float(lines[0].split()[-1]) if lines else 0.0

    async def backlog_seen_and_tried() -> bool:
        # Two events wait, and the dispatcher has tried the receiver (which never
        # started) at least once: on a busy machine its first try may come after the
        # gauge is set, so the test waits for both.
        _, text = await stack.call("GET", "/metrics")
        return f'wxgate_webhook_backlog{{app="{APP}"}} 2.0' in text and tried(text) >= 1

    await eventually(backlog_seen_and_tried, 10, "the backlog gauge and a failed try")
    _, text = await stack.call("GET", "/metrics")
    assert f'wxgate_queue_oldest_age_seconds{{app="{APP}"}} 0.0' in text
    age = next(
        line for line in text.splitlines() if line.startswith("wxgate_webhook_oldest_age_seconds")
    )
    assert float(age.split()[-1]) >= 0
    assert f'wxgate_webhook_backlog{{app="{APP}"}} 2.0' in text
    assert tried(text) >= 1  # the receiver never started


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_receiver_that_never_answers_holds_no_delivery_back(
    start_gateway: StartGateway, receiver: Receiver, engine: str
) -> None:
    """Every dispatcher slot stuck on a post that gets no answer; WeChat delivery goes on."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", receiver.port)
    count, rate = 200, 200.0
    try:
        stack = await start_gateway(
            engine,
            receiver,
            app={"rate_limit_per_s": rate},
            webhooks={"concurrency": 4, "timeout_s": 30.0},
        )
        assert stack.gateway is not None and stack.gateway.backend is not None
        backend = stack.gateway.backend
        started = time.monotonic()
        body = {
            "template_id": "tpl_order_shipped",
            "data": order_data(),
            "recipients": [f"oSilent_{n:04d}" for n in range(count)],
        }
        status, answer = await stack.call("POST", "/v1/messages/batch", json=body)
        assert status == 202, answer

        async def all_delivered() -> bool:
            return (await backend.counts())[Status.DELIVERED] == count

        await eventually(all_delivered, 30, "every message delivered")
        elapsed = time.monotonic() - started
        assert len(held) == 4  # the dispatcher's every slot waits on the silent receiver
        assert elapsed < count / rate * 3 + 2, elapsed
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
