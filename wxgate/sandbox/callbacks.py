"""Delivery of WeChat's pushes to each account's callback URL, the way WeChat does it
(docs/wechat-protocol.md §5.2-§5.5): TEMPLATESENDJOBFINISH reports and subscribe events.

Accepted sends and played popups enqueue a push (never waiting); a bounded pool of
tasks sharing one aiohttp session POSTs each, signed and in plaintext or safe mode,
with a 5 s timeout and up to 3 retries unless the answer is HTTP 200 with a body
of `success` or nothing. Each attempt is sealed afresh (new timestamp and nonce).
A mini program that chose JSON gets JSON, sealed as `{"ToUserName", "Encrypt"}`
in safe mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import aiohttp

from wxgate.observability import get_logger
from wxgate.sandbox.clock import OffsetClock
from wxgate.sandbox.config import SandboxAccount
from wxgate.sandbox.stats import (
    CALLBACK_ACKNOWLEDGED,
    CALLBACK_FAILED,
    CALLBACK_RETRIES,
    CALLBACK_SENT,
    SandboxStats,
)
from wxgate.sandbox.wechat import Push, Report
from wxgate.wechat.callback import CallbackCodec, event_json, event_xml, template_finish_xml

CALLBACK_TIMEOUT_S = 5.0
CALLBACK_RETRIES_MAX = 3
DELIVERY_TASKS = 16
_ACKNOWLEDGEMENTS = (b"", b"success")
_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

log = get_logger(__name__)


class CallbackDispatcher:
    """A queue of pushes and the tasks that deliver them."""

    def __init__(
        self,
        stats: SandboxStats,
        clock: OffsetClock,
        *,
        delay_s: float = 0.0,
        tasks: int = DELIVERY_TASKS,
        timeout_s: float = CALLBACK_TIMEOUT_S,
        retries: int = CALLBACK_RETRIES_MAX,
    ) -> None:
        self._stats = stats
        self._clock = clock
        self._delay_s = delay_s
        self._task_count = tasks
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._queue: asyncio.Queue[tuple[float, Push]] = asyncio.Queue()
        self._codecs: dict[str, CallbackCodec] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0

    @property
    def pending(self) -> int:
        """Pushes queued or being delivered."""
        return self._queue.qsize() + self._in_flight

    def submit(self, push: Push) -> None:
        """Queue a push for delivery (after the configured delay); never blocks."""
        self._queue.put_nowait((time.monotonic() + self._delay_s, push))

    def clear(self) -> None:
        """Drop every push not yet being delivered."""
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._deliver_forever()) for _ in range(self._task_count)
        ]

    async def stop(self) -> None:
        """Cancel delivery (queued pushes are dropped) and close the session."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver_forever(self) -> None:
        while True:
            due, push = await self._queue.get()
            self._in_flight += 1
            try:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._deliver(push)
            except Exception as exc:
                # One bad push must not stop the pusher: WeChat's outlives any receiver's
                # failure. An exception here used to end this task silently, and every
                # later report with it: the warning below once passed `event=`, which
                # structlog takes as the message, so the first report given up raised
                # TypeError (a chaos run's API kill then left 908 messages `sent`).
                self._stats.callbacks[CALLBACK_FAILED] += 1
                log.warning("sandbox callback failed", error=type(exc).__name__, detail=str(exc))
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    async def _deliver(self, push: Push) -> None:
        account = push.account
        json = False
        if isinstance(push, Report):
            openid = push.touser
            document = template_finish_xml(
                account.original_id, openid, push.create_time, push.msgid, push.status
            )
        else:
            openid = push.event.from_user
            json = account.callback_format == "json"
            # The documented JSON examples write CreateTime as text.
            document = (
                event_json(push.event, create_time_as_text=True) if json else event_xml(push.event)
            )
        stats = self._stats.callbacks
        stats[CALLBACK_SENT] += 1
        for attempt in range(self._retries + 1):
            if attempt:
                stats[CALLBACK_RETRIES] += 1
            if await self._post(account, document, openid, json):
                stats[CALLBACK_ACKNOWLEDGED] += 1
                return
        stats[CALLBACK_FAILED] += 1
        log.warning(
            "sandbox callback not acknowledged",
            appid=account.appid,
            push=type(push).__name__,
            attempts=self._retries + 1,
        )

    async def _post(self, account: SandboxAccount, document: str, openid: str, json: bool) -> bool:
        assert self._session is not None and account.callback_url is not None
        # The receiver checks freshness against its own clock, which the sandbox's offset
        # (moved by tests to pass token and de-dupe windows) must not make stale.
        timestamp = str(int(self._clock.base_now()))
        nonce = str(secrets.randbelow(10**10))
        params, body = self._codec(account).seal(
            document, timestamp, nonce, openid=openid, encrypt=account.callback_mode == "safe"
        )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with self._session.post(
                account.callback_url,
                params=params,
                data=body,
                headers=_JSON_HEADERS if json else _XML_HEADERS,
                timeout=self._timeout,
            ) as response:
                answer = await response.read()
                return response.status == 200 and answer.strip() in _ACKNOWLEDGEMENTS
        return False

    def _codec(self, account: SandboxAccount) -> CallbackCodec:
        codec = self._codecs.get(account.appid)
        if codec is None:
            codec = CallbackCodec(account.callback_token, account.appid, account.encoding_aes_key)
            self._codecs[account.appid] = codec
        return codec
