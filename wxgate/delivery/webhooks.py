"""The webhook dispatcher: posts outbox events to the callers' receivers, signed.

Each worker process runs one, beside (not inside) the delivery worker: its own
aiohttp session, its own `[webhooks] concurrency` of posts in flight, its own
loop. A slow or unreachable receiver holds only the dispatcher's slots, never a
WeChat send. Events come from storage's outbox (backends/webhook_outbox.py) in
order per message; each is POSTed to the message's `callback_url`, else its app's
`webhook_url`, as JSON signed per Standard Webhooks (webhook_signing.py), and
finished as delivered, retried later, or dead (webhook_policy.py decides).
At-least-once: a process that dies mid-post leaves a lease that runs out, and
another dispatcher posts the event again with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from wxgate.backends.base import StorageUnavailable
from wxgate.backends.webhook_outbox import HookClaim, HookOutcome, HookResult, WebhookOutbox
from wxgate.clock import Clock, SystemClock, rfc3339
from wxgate.config import Settings, WebhookSettings
from wxgate.delivery.webhook_policy import after_failure, answer_label, delivered
from wxgate.delivery.webhook_signing import WebhookSigner
from wxgate.observability import Metrics, get_logger

log = get_logger(__name__)

USER_AGENT = "wxgate-webhooks/1"
_ANSWER_READ_LIMIT = 64 * 1024  # what of a receiver's answer is read (and dropped)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where an app's events go unless the message named its own callback_url."""

    url: str | None
    signer: WebhookSigner | None


def webhook_targets(settings: Settings) -> dict[str, WebhookTarget]:
    """Every configured app's target (a message may name a callback_url in any app that
    has a webhook_secret)."""
    return {
        name: WebhookTarget(
            app.webhook_url,
            WebhookSigner(app.webhook_secret) if app.webhook_secret.get_secret_value() else None,
        )
        for name, app in settings.apps.items()
    }


def webhook_body(claim: HookClaim) -> bytes:
    """The JSON a receiver gets: Standard Webhooks' type/timestamp/data envelope. The msgid
    is a string (an int64 past what JSON numbers keep exactly in most languages)."""
    event = claim.event
    return orjson.dumps(
        {
            "type": f"message.{event.status}",
            "timestamp": rfc3339(event.at),
            "data": {
                "id": event.message_id,
                "app": event.app,
                "touser": claim.touser,
                "status": event.status.value,
                "errcode": event.errcode,
                "errmsg": event.errmsg,
                "msgid": None if event.msgid is None else str(event.msgid),
                "idempotency_key": claim.idempotency_key,
                "batch_id": claim.batch_id,
            },
        }
    )


class WebhookDispatcher:
    """Claims outbox events and posts them, `settings.concurrency` at a time."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        targets: Mapping[str, WebhookTarget],
        settings: WebhookSettings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._outbox = outbox
        self._targets = dict(targets)
        self._apps = sorted(targets)
        self._settings = settings
        self._clock = clock if clock is not None else SystemClock()
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # Results wait here for the one flush in progress (a group write, measured: one
        # storage call per post cost a third of the dispatcher's CPU on SQLite).
        self._results: list[HookResult] = []
        self._flushing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.posted = 0  # attempts made by this dispatcher (bench, tests)

    async def run(self) -> None:
        """Claim and post until stop()."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            connector=aiohttp.TCPConnector(limit=self._settings.concurrency),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )
        try:
            while not self._stopping.is_set():
                claimed = await self._claim_some()
                if not claimed:
                    await self._idle()
        finally:
            await self._session.close()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; posts in flight get `grace_s` to finish (the rest are cancelled,
        and their leases run out: another dispatcher posts them again)."""
        self._stopping.set()
        self._slot_freed.set()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)

    async def _claim_some(self) -> int:
        room = self._settings.concurrency - len(self._in_flight)
        if room <= 0:
            return 0
        try:
            claims = await self._outbox.claim(
                self._apps, room, self._settings.lease_s, self._clock.now()
            )
        except StorageUnavailable as exc:
            log.warning("webhook claim skipped: storage unavailable", error=str(exc))
            return 0
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claims)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_freed.set()

    async def _idle(self) -> None:
        """Wait for the poll interval, or less when a slot frees up after being full."""
        self._slot_freed.clear()
        if len(self._in_flight) >= self._settings.concurrency:
            await self._slot_freed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._settings.idle_poll_s)

    async def _deliver(self, claim: HookClaim) -> None:
        result = await self._attempt(claim)
        self._results.append(result)  # after the await: the flush swaps the list meanwhile
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Store every result waiting, a group per call, until none is left."""
        try:
            while self._results:
                group, self._results = self._results, []
                try:
                    await self._outbox.finish(group, self._clock.now())
                except StorageUnavailable as exc:
                    # Their leases run out and the events are posted again: at-least-once.
                    log.warning("webhook results not stored", error=str(exc), count=len(group))
        finally:
            self._flushing = None

    async def _attempt(self, claim: HookClaim) -> HookResult:
        event = claim.event
        target = self._targets.get(event.app)
        url = claim.callback_url or (target.url if target is not None else None)
        signer = target.signer if target is not None else None
        if url is None or signer is None:
            self._count(event.app, "no_endpoint")
            return HookResult(claim, HookOutcome.DEAD, error="no webhook_url or webhook_secret")
        label, error = await self._post(url, claim, signer)
        self._count(event.app, label)
        if error is None:
            return HookResult(claim, HookOutcome.DELIVERED)
        now = self._clock.now()
        decision = after_failure(claim.attempts + 1, event.at, now, self._settings)
        if decision.outcome is HookOutcome.DEAD:
            log.warning("webhook event dead", app=event.app, message_id=event.message_id)
        return HookResult(claim, decision.outcome, decision.next_attempt_at, error)

    async def _post(
        self, url: str, claim: HookClaim, signer: WebhookSigner
    ) -> tuple[str, str | None]:
        """The attempt's metric label, and its error (None: delivered)."""
        assert self._session is not None
        body = webhook_body(claim)
        headers: dict[str, Any] = signer.headers(claim.webhook_id, self._clock.now(), body)
        self.posted += 1
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                await answer.content.read(_ANSWER_READ_LIMIT)
                status = answer.status
        except TimeoutError:
            return "timeout", f"no answer within {self._settings.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return "unreachable", f"unreachable: {type(exc).__name__}"
        if delivered(status):
            return "delivered", None
        return answer_label(status), f"HTTP {status}"

    def _count(self, app: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_attempts.labels(app, outcome).inc()
