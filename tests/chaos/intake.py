"""The business system of a chaos run: posts every message over HTTP with an idempotency
key, through both the single and the batch endpoint, and retries with the same key
on anything that is not an answer (connection errors, timeouts, 429, 5xx).

Only ids the API answered 202 or 200 count as accepted: a request whose answer was
lost and whose retries all failed may have stored a message nobody was told about,
which the checks report apart ("stored, never answered") rather than as a loss.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import orjson

from tests.chaos.stack import API_KEY, APP

TEMPLATE_ID = "TPL_chaos_order_shipped"
REQUEST_TIMEOUT_S = 30.0
RETRY_PAUSE_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class Kind(StrEnum):
    """What the sandbox will do with a recipient (docs/design.md, "Sandbox": its test openids)."""

    ORDINARY = "ordinary"  # delivered
    INVALID = "invalid"  # 40003: failed
    BLOCKED = "blocked"  # accepted, then reported "failed:user block": rejected


_PREFIX = {Kind.ORDINARY: "oCHAOS", Kind.INVALID: "invalid_chaos", Kind.BLOCKED: "blocked_chaos"}


@dataclass(frozen=True, slots=True)
class Recipient:
    number: int
    kind: Kind

    @property
    def touser(self) -> str:
        return f"{_PREFIX[self.kind]}{self.number:07d}"


@dataclass(frozen=True, slots=True)
class Unit:
    """One request: a single message, or a batch of recipients."""

    key: str
    recipients: tuple[Recipient, ...]
    batch: bool

    def body(self) -> dict[str, Any]:
        data = {
            "thing1": {"value": "蓝色保温杯"},
            "character_string2": {"value": f"SO-{self.recipients[0].number:07d}"},
            "time3": {"value": "2026-11-29 10:30"},
        }
        shared: dict[str, Any] = {"app": APP, "template_id": TEMPLATE_ID, "data": data}
        if self.batch:
            recipients = [r.touser for r in self.recipients]
            return {**shared, "recipients": recipients, "idempotency_key": self.key}
        return {**shared, "touser": self.recipients[0].touser}


@dataclass
class IntakeResult:
    accepted: dict[str, Kind] = field(default_factory=dict)  # message id -> recipient kind
    requests: int = 0
    retries: int = 0
    answers: Counter[int] = field(default_factory=Counter)  # HTTP status -> count
    refused: list[str] = field(default_factory=list)  # 4xx other than 429, with the answer
    unanswered: list[str] = field(default_factory=list)  # keys given up on
    elapsed_s: float = 0.0


def plan_units(
    messages: int, batch_share: float, batch_size: int, odd_share: float, rng: random.Random
) -> list[Unit]:
    """The requests for `messages` recipients, batches and singles shuffled together."""
    recipients = [Recipient(n, _kind(rng, odd_share)) for n in range(messages)]
    in_batches = int(messages * batch_share)
    units = [
        Unit(f"chaos-batch-{start}", tuple(recipients[start : start + batch_size]), True)
        for start in range(0, in_batches, batch_size)
    ]
    units += [Unit(f"chaos-msg-{r.number}", (r,), False) for r in recipients[in_batches:]]
    rng.shuffle(units)
    return units


def _kind(rng: random.Random, odd_share: float) -> Kind:
    draw = rng.random()
    if draw < odd_share / 2:
        return Kind.INVALID
    if draw < odd_share:
        return Kind.BLOCKED
    return Kind.ORDINARY


class IntakeClient:
    """Posts units to the API `concurrency` at a time, until each is answered or
    `deadline_s` (per unit) passes."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_url: str,
        scan: Callable[[str, bytes], None],
        *,
        concurrency: int = 16,
        deadline_s: float = 120.0,
    ) -> None:
        self._http = http
        self._url = api_url
        self._scan = scan
        self._slots = asyncio.Semaphore(concurrency)
        self._deadline_s = deadline_s
        self.result = IntakeResult()

    async def post_all(self, units: list[Unit]) -> IntakeResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.TaskGroup() as group:
            for unit in units:
                group.create_task(self._post_unit(unit))
        self.result.elapsed_s = loop.time() - started
        return self.result

    async def _post_unit(self, unit: Unit) -> None:
        async with self._slots:
            ids = await self._answered(unit)
        if ids is None:
            return
        if len(ids) != len(unit.recipients):
            self.result.refused.append(f"{unit.key}: {len(ids)} ids for {len(unit.recipients)}")
            return
        for message_id, recipient in zip(ids, unit.recipients, strict=True):
            self.result.accepted[message_id] = recipient.kind

    async def _answered(self, unit: Unit) -> list[str] | None:
        """The ids the API answered for `unit`, or None (refused, or given up on)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline_s
        for attempt in range(1_000_000):
            if attempt:
                self.result.retries += 1
                await asyncio.sleep(RETRY_PAUSE_S[min(attempt - 1, len(RETRY_PAUSE_S) - 1)])
            if loop.time() > give_up_at:
                break
            answer = await self._post(unit)
            if answer is None:
                continue
            status, body = answer
            if status in (200, 202):
                data = body["data"]
                return data["ids"] if unit.batch else [data["id"]]
            if status != 429 and status < 500:
                self.result.refused.append(f"{unit.key}: HTTP {status} {body}")
                return None
        self.result.unanswered.append(unit.key)
        return None

    async def _post(self, unit: Unit) -> tuple[int, Any] | None:
        """(status, decoded envelope) of one attempt, None when no answer came."""
        path = "/v1/messages/batch" if unit.batch else "/v1/messages"
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        if not unit.batch:
            headers["Idempotency-Key"] = unit.key
        self.result.requests += 1
        try:
            async with self._http.post(
                self._url + path,
                data=orjson.dumps(unit.body()),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            return None
        self.result.answers[status] += 1
        self._scan(f"answer {path}", raw)
        try:
            return status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return status, raw.decode("utf-8", "replace")
