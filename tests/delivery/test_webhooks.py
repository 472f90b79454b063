"""The webhook dispatcher against a real receiver on loopback and both engines, and its
pure policy (backoff, the retry window, answer labels)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.backends.conftest import OpenBackend, open_backend  # noqa: F401 -- the fixture
from tests.backends.test_contract import message
from wxgate.backends.base import Backend, Status, Verdict
from wxgate.backends.webhook_outbox import HookOutcome, HookResult, WebhookOutbox
from wxgate.config import Settings, WebhookSettings
from wxgate.delivery.webhook_policy import after_failure, answer_label, retry_delay
from wxgate.delivery.webhook_signing import new_secret
from wxgate.delivery.webhooks import WebhookDispatcher, webhook_targets

SECRET = new_secret()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver that verifies each post and keeps its webhook-id."""
    seen: list[str] = []
    verifier = Webhook(SECRET)

    async def take(request: web.Request) -> web.Response:
        raw = await request.read()
        verifier.verify(raw, dict(request.headers))
        await asyncio.sleep(random.uniform(0, 0.03))  # posts end at any moment of a write
        seen.append(request.headers["webhook-id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hooks", seen
    await runner.cleanup()


class SlowWrites:
    """An outbox whose writes of results take a while (a busy storage): posts that end
    meanwhile must wait for the next group, not be lost."""

    def __init__(self, outbox: WebhookOutbox) -> None:
        self._outbox = outbox

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)

    async def finish(self, results: Sequence[HookResult], now: float) -> list[bool]:
        stored = await self._outbox.finish(list(results), now)
        await asyncio.sleep(0.05)  # the commit's wait
        return stored


async def test_every_claimed_event_is_posted_and_finished_under_full_concurrency(
    open_backend: OpenBackend,  # noqa: F811 -- the fixture imported above
    receiver: tuple[str, list[str]],
) -> None:
    backend: Backend = await open_backend()
    url, seen = receiver
    count = 500
    decided = Verdict(Status.SUPPRESSED, "test")
    messages = [
        replace(message(touser=f"o-{n}"), notify=True, verdict=decided) for n in range(count)
    ]
    await backend.enqueue(messages, time.time())
    settings = Settings(
        apps={"shop": {"appid": "wx1", "secret": "s", "webhook_url": url, "webhook_secret": SECRET}}
    )
    tuned = WebhookSettings(concurrency=64, idle_poll_s=0.01)
    outbox = SlowWrites(backend.webhook_outbox())
    dispatcher = WebhookDispatcher(outbox, webhook_targets(settings), tuned)  # type: ignore[arg-type]
    task = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(500):
            [backlog] = await backend.webhook_outbox().backlog(["shop"])
            if backlog.pending == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        await dispatcher.stop(1.0)
        await task
    assert backlog.pending == 0 and backlog.dead == 0
    assert len(set(seen)) == count and len(seen) == count  # each once: none lost, none twice


def test_retry_delay_doubles_from_the_base_up_to_the_cap() -> None:
    settings = WebhookSettings(backoff_base_s=5, backoff_cap_s=60)
    assert [retry_delay(n, settings) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert retry_delay(10_000, settings) == 60


def test_a_failure_is_retried_inside_the_window_and_dead_past_it() -> None:
    settings = WebhookSettings(backoff_base_s=10, backoff_cap_s=10, retry_for_s=100)
    inside = after_failure(1, written_at=0.0, now=50.0, settings=settings)
    assert (inside.outcome, inside.next_attempt_at) == (HookOutcome.RETRY, 60.0)
    past = after_failure(9, written_at=0.0, now=95.0, settings=settings)
    assert (past.outcome, past.next_attempt_at) == (HookOutcome.DEAD, None)


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (301, "redirect"),
        (410, "http_4xx"),
        (503, "http_5xx"),
    ],
)
def test_answers_have_bounded_labels(status: int, label: str) -> None:
    assert answer_label(status) == label
