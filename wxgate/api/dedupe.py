"""The dedupe window: the same message again inside an app's `dedupe_window_s` is not
stored or sent a second time; it is answered with the first message's id.

"The same" is the same app, recipient, template and data (url and miniprogram apart).
The first of each is claimed in the engine's dedupe store (backends/dedupe.py) before
it is stored; a claim whose message was never stored (its request failed after the
claim) is dropped and claimed anew, so a failed request never hides the next one. A
single message answered this way reads `"status": "deduplicated"` (200); in a batch,
the repeated recipient's id is the first message's. Counted in
`wxgate_messages_total{outcome="deduplicated"}`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from wxgate.backends.base import Backend, Enqueued, NewMessage
from wxgate.backends.dedupe import DedupeStore
from wxgate.clock import Clock
from wxgate.config import Settings
from wxgate.observability import Metrics

DEDUPLICATED = "deduplicated"  # the status a repeated single message is answered with

Enqueue = Callable[[Sequence[NewMessage]], Awaitable[list[Enqueued]]]


def dedupe_digest(message: NewMessage) -> str:
    """What makes two messages of one app the same: recipient, template and data."""
    data = message.payload.get("data", {})
    body = orjson.dumps([message.touser, message.template_id, data], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


@dataclass
class Deduplicated:
    """What `Dedupe.enqueue` answered: one Enqueued per message, in order, and the
    positions answered with an earlier message's id."""

    results: list[Enqueued]
    repeated: set[int] = field(default_factory=set)

    def mark(self, answer: dict[str, Any]) -> dict[str, Any]:
        """A single message's answer says it was deduplicated."""
        if self.repeated and "status" in answer:
            answer["status"] = DEDUPLICATED
        return answer


class Dedupe:
    """The dedupe windows of the apps that have one (the others pass straight through)."""

    def __init__(
        self,
        windows: Mapping[str, float],
        backend: Backend,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._windows = dict(windows)
        self._backend = backend
        self._clock = clock
        self._metrics = metrics

    @property
    def _store(self) -> DedupeStore:
        return self._backend.dedupe_store()

    @classmethod
    def for_apps(
        cls, settings: Settings, backend: Backend, clock: Clock, metrics: Metrics
    ) -> Dedupe:
        windows = {
            name: app.dedupe_window_s for name, app in settings.apps.items() if app.dedupe_window_s
        }
        return cls(windows, backend, clock, metrics)

    async def enqueue(
        self, app: str, messages: Sequence[NewMessage], enqueue: Enqueue
    ) -> Deduplicated:
        """`enqueue` the messages that are not repeats; the repeats answered with the
        first id (and its status as stored)."""
        window = self._windows.get(app)
        if window is None:
            return Deduplicated(await enqueue(messages))
        now = self._clock.now()
        ours = {message.id for message in messages}
        firsts: dict[int, str] = {}
        claimed: list[tuple[str, str]] = []
        for index, message in enumerate(messages):
            if message.verdict is not None:
                continue  # settled unsent at intake: nothing to send twice
            digest = dedupe_digest(message)
            first = await self._claim(app, digest, message.id, window, now, ours)
            if first is None:
                claimed.append((digest, message.id))
            else:
                firsts[index] = first
        fresh = [m for index, m in enumerate(messages) if index not in firsts]
        try:
            stored = await enqueue(fresh) if fresh else []
        except BaseException:
            for digest, message_id in claimed:
                await self._store.forget(app, digest, message_id)
            raise
        return await self._answer(app, messages, firsts, stored)

    async def _claim(
        self, app: str, digest: str, message_id: str, window: float, now: float, ours: set[str]
    ) -> str | None:
        first = await self._store.claim(app, digest, message_id, window, now)
        if first is None or first in ours or await self._backend.get(first) is not None:
            return first
        await self._store.forget(app, digest, first)  # its request failed after the claim
        return await self._store.claim(app, digest, message_id, window, now)

    async def _answer(
        self,
        app: str,
        messages: Sequence[NewMessage],
        firsts: dict[int, str],
        stored: list[Enqueued],
    ) -> Deduplicated:
        by_id = {result.id: result for result in stored}
        fresh = iter(stored)
        results: list[Enqueued] = []
        for index in range(len(messages)):
            first = firsts.get(index)
            if first is None:
                results.append(next(fresh))
                continue
            earlier = by_id.get(first)
            if earlier is None:
                record = await self._backend.get(first)
                status = record.status if record is not None else messages[index].status
                earlier = Enqueued(first, status, False)
            results.append(Enqueued(first, earlier.status, False))
        if firsts:
            self._metrics.messages.labels(app=app, outcome=DEDUPLICATED).inc(len(firsts))
        return Deduplicated(results, set(firsts))
