"""The webhook outbox in Redis: each app's `hooks` stream, adopted into per-app keys.

The status-move scripts append an entry to the app's `hooks` stream (redis_scripts
`notify`). A claim first adopts every new entry, in the same script: the entry
leaves the stream and becomes an event in `hook_events`, joins its message's chain
in `hook_chains` (only a chain's head is ever in `hook_due`, which is what keeps a
message's events in order) and `hook_pending` (for the backlog and its age). Each
claim, finish and replay is one script over the app's six keys (redis_scripts);
key shapes are redis_keys'. The rules are webhook_outbox.py's.

A partitioned queue (redis_keys) has an outbox in each partition, written by the
scripts of the messages there (a message's events all in its own, so its chain keeps
them in order); an event's seq is then its partition and stream id, "<p>-<stream id>"
(no `/`: the seq is part of the webhook-id receivers see).
"""

from __future__ import annotations

import functools
import heapq
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.base import Status, StorageUnavailable, WebhookEvent
from wxgate.backends.redis_client import preload
from wxgate.backends.redis_keys import RedisKeys
from wxgate.backends.webhook_outbox import (
    HookBacklog,
    HookClaim,
    HookEntry,
    HookResult,
    HookState,
)

ADOPT_MAX: Final = 1000  # stream entries a claim adopts at most
PURGE_CHUNK: Final = 500
# What a claim reads of each event's message record (the HookClaim's last fields).
_MESSAGE_FIELDS: Final = ("touser", "idempotency_key", "batch_id", "callback_url")  # touser first

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _message_fields(fields: dict[str, str]) -> list[str | None]:
    """_MESSAGE_FIELDS of a record (HGETALL; all None when it is gone): a record of this
    version keeps its recipient only in its payload, and has short field names."""
    names = lua.LONG_NAMES if "status" in fields else lua.SHORT_NAMES
    values = [fields.get(names[name]) for name in _MESSAGE_FIELDS]
    if values[0] is None and fields:
        payload = lua.long_value(fields, lua.PAYLOAD_CHUNKS, "payload")
        values[0] = str(orjson.loads(payload or "{}").get("touser", "")) or None
    return values


def _guarded(
    method: Callable[Concatenate[RedisWebhookOutbox, _P], Awaitable[_T]],
) -> Callable[Concatenate[RedisWebhookOutbox, _P], Awaitable[_T]]:
    """Redis being away reads as the storage contract's StorageUnavailable."""

    @functools.wraps(method)
    async def call(self: RedisWebhookOutbox, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except self.unavailable as exc:
            raise StorageUnavailable(f"webhook outbox unavailable: {type(exc).__name__}") from exc

    return call


class RedisWebhookOutbox:
    """The WebhookOutbox protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        unavailable: tuple[type[BaseException], ...],
    ) -> None:
        self._client = client
        self._keys = keys
        self.unavailable = unavailable
        self._claim = client.register_script(lua.CLAIM_HOOKS)
        self._finish = client.register_script(lua.FINISH_HOOK)
        self._replay = client.register_script(lua.REPLAY_HOOKS)
        self._purge = client.register_script(lua.PURGE_HOOKS)
        self._parts = [keys.at(p) for p in range(keys.partitions)]
        self._next_part = 0  # which partition a claim tries first: each in turn

    def _seq(self, partition: int, entry: str) -> str:
        """An event's seq: its stream id, qualified with its partition when there are many."""
        return f"{partition}-{entry}" if self._keys.partitioned else entry

    def _entry(self, seq: str) -> tuple[int, str] | None:
        """The partition and stream id a seq names, or None for one that names none."""
        if not self._keys.partitioned:
            return 0, seq
        partition, dash, entry = seq.partition("-")
        if not (dash and partition.isascii() and partition.isdigit()):
            return None
        if int(partition) >= self._keys.partitions:
            return None
        return int(partition), entry

    def _app_keys(self, app: str, partition: int = 0) -> list[str]:
        k = self._parts[partition]
        return [
            k.hooks(app),
            k.hook_events(app),
            k.hook_chains(app),
            k.hook_due(app),
            k.hook_pending(app),
            k.hook_dead(app),
        ]

    @_guarded
    async def claim(
        self, apps: Sequence[str], limit: int, lease_s: float, now: float
    ) -> list[HookClaim]:
        deadline = now + lease_s
        token = secrets.token_hex(8)
        claimed: list[tuple[WebhookEvent, dict[str, Any]]] = []
        count = len(self._parts)
        first = self._next_part
        self._next_part = (first + 1) % count
        for app in apps:
            # Each partition's claims come oldest due first; an app's, merged by due time
            # (then stream id: events due together go in the order they were written).
            mine: list[tuple[tuple[float, int, int], WebhookEvent, dict[str, Any]]] = []
            for step in range(count):
                room = limit - len(claimed) - len(mine)
                if room <= 0:
                    break
                p = (first + step) % count
                args = [repr(float(now)), repr(float(deadline)), room, ADOPT_MAX, token]
                for entry, text, due in await self._claim(self._app_keys(app, p), args):
                    fields = orjson.loads(text)
                    ms, _, n = entry.partition("-")
                    event = _event(app, self._seq(p, entry), fields)
                    mine.append(((float(due), int(ms), int(n)), event, fields))
            mine.sort(key=lambda item: item[0])
            claimed += [(event, fields) for _, event, fields in mine]
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for event, _ in claimed:
            pipe.hgetall(self._keys.message(event.message_id))
        found = [_message_fields(fields) for fields in await pipe.execute()]
        return [
            HookClaim(
                event,
                int(fields["attempts"]),
                token,
                deadline,
                *(value or None for value in message),
            )
            for (event, fields), message in zip(claimed, found, strict=True)
        ]

    @_guarded
    async def finish(self, results: Sequence[HookResult], now: float) -> list[bool]:
        if not results:
            return []
        await preload(self._client, self._finish)
        pipe = self._client.pipeline(transaction=False)
        answered = []
        for result in results:
            event = result.claim.event
            found = self._entry(event.seq)
            answered.append(found is not None)
            if found is None:
                continue
            partition, entry = found
            retry_at = now if result.next_attempt_at is None else result.next_attempt_at
            args = [
                entry,
                result.claim.token,
                result.outcome.value,
                repr(float(now)),
                repr(float(retry_at)),
                result.error or "",
            ]
            await self._finish(self._app_keys(event.app, partition), args, client=pipe)
        answers = iter(await pipe.execute())
        return [ok and next(answers) == 1 for ok in answered]

    @_guarded
    async def entries(self, app: str, state: HookState, limit: int) -> list[HookEntry]:
        if limit <= 0:
            return []
        # The first `limit` of each partition's index, merged by score.
        scored: list[list[tuple[float, int, str]]] = []
        for p in range(len(self._parts)):
            keys = self._app_keys(app, p)
            if state is HookState.DEAD:
                index = keys[5]
            else:
                await self._claim(keys, ["0", "0", 0, ADOPT_MAX, ""])  # adopt only, claim none
                index = keys[4]
            found = await self._client.zrange(index, 0, limit - 1, withscores=True)
            scored.append([(score, p, entry) for entry, score in found])
        chosen = list(heapq.merge(*scored))[:limit]
        if not chosen:
            return []
        pipe = self._client.pipeline(transaction=False)
        for _, p, entry in chosen:
            pipe.hget(self._app_keys(app, p)[1], entry)
        texts = await pipe.execute()
        entries = []
        for (_, p, entry), text in zip(chosen, texts, strict=True):
            if text is None:
                continue
            fields = orjson.loads(text)
            entries.append(
                HookEntry(
                    _event(app, self._seq(p, entry), fields),
                    HookState(fields["state"]),
                    int(fields["attempts"]),
                    float(fields["next"]),
                    fields["error"] or None,
                )
            )
        return entries

    @_guarded
    async def replay(self, app: str, seqs: Sequence[str] | None, now: float) -> int:
        moved = 0
        if seqs is not None:
            chosen: dict[int, list[str]] = {}
            for seq in seqs:
                if (found := self._entry(seq)) is not None:
                    chosen.setdefault(found[0], []).append(found[1])
            for p, entries in chosen.items():
                keys = self._app_keys(app, p)
                moved += int(await self._replay(keys, [repr(float(now)), *entries]))
            return moved
        for p in range(len(self._parts)):
            keys = self._app_keys(app, p)
            while chunk := await self._client.zrange(keys[5], 0, PURGE_CHUNK - 1):
                moved += int(await self._replay(keys, [repr(float(now)), *chunk]))
        return moved

    @_guarded
    async def backlog(self, apps: Sequence[str]) -> list[HookBacklog]:
        pipe = self._client.pipeline(transaction=False)
        for app in apps:
            for p in range(len(self._parts)):
                keys = self._app_keys(app, p)
                pipe.zcard(keys[4])
                pipe.zrange(keys[4], 0, 0, withscores=True)
                pipe.zcard(keys[5])
                pipe.xlen(keys[0])
                pipe.xrange(keys[0], count=1)
        answers = iter(await pipe.execute())
        backlogs = []
        for app in apps:
            pending = dead = 0
            oldest: list[float] = []
            for _ in self._parts:
                adopted, first, died, fresh, first_fresh = (next(answers) for _ in range(5))
                pending += adopted + fresh
                dead += died
                oldest += [score for _, score in first]
                oldest += [float(fields["at"]) for _, fields in first_fresh]
            backlogs.append(HookBacklog(app, pending, dead, min(oldest, default=None)))
        return backlogs

    @_guarded
    async def purge(self, apps: Sequence[str], older_than: float) -> int:
        total = 0
        for app in apps:
            for p in range(len(self._parts)):
                while True:
                    args = [repr(float(older_than)), PURGE_CHUNK]
                    purged = int(await self._purge(self._app_keys(app, p), args))
                    total += purged
                    if purged < PURGE_CHUNK:
                        break
        return total


def _event(app: str, seq: str, fields: dict[str, Any]) -> WebhookEvent:
    return WebhookEvent(
        seq=seq,
        message_id=fields["message_id"],
        app=app,
        status=Status(fields["status"]),
        at=float(fields["at"]),
        errcode=int(fields["errcode"]) if fields.get("errcode") else None,
        errmsg=fields.get("errmsg") or None,
        msgid=int(fields["msgid"]) if fields.get("msgid") else None,
    )
