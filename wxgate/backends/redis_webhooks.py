"""The webhook outbox in Redis: each app's `hooks` stream, adopted into per-app keys.

The status-move scripts append an entry to the app's `hooks` stream (redis_scripts
`notify`). A claim first adopts every new entry, in the same script: the entry
leaves the stream and becomes an event in `hook_events`, joins its message's chain
in `hook_chains` (only a chain's head is ever in `hook_due`, which is what keeps a
message's events in order) and `hook_pending` (for the backlog and its age). Each
claim, finish and replay is one script over the app's six keys (redis_scripts);
key shapes are redis_keys'. The rules are webhook_outbox.py's.
"""

from __future__ import annotations

import functools
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

_P = ParamSpec("_P")
_T = TypeVar("_T")


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

    def _app_keys(self, app: str) -> list[str]:
        k = self._keys
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
        for app in apps:
            room = limit - len(claimed)
            if room <= 0:
                break
            args = [repr(float(now)), repr(float(deadline)), room, ADOPT_MAX, token]
            for seq, text in await self._claim(self._app_keys(app), args):
                fields = orjson.loads(text)
                claimed.append((_event(app, seq, fields), fields))
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for event, _ in claimed:
            pipe.hmget(
                self._keys.message(event.message_id),
                "touser",
                "idempotency_key",
                "batch_id",
                "callback_url",
            )
        found = await pipe.execute()
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
        for result in results:
            event = result.claim.event
            retry_at = now if result.next_attempt_at is None else result.next_attempt_at
            args = [
                event.seq,
                result.claim.token,
                result.outcome.value,
                repr(float(now)),
                repr(float(retry_at)),
                result.error or "",
            ]
            await self._finish(self._app_keys(event.app), args, client=pipe)
        return [answer == 1 for answer in await pipe.execute()]

    @_guarded
    async def entries(self, app: str, state: HookState, limit: int) -> list[HookEntry]:
        if limit <= 0:
            return []
        keys = self._app_keys(app)
        if state is HookState.DEAD:
            index = keys[5]
        else:
            await self._claim(keys, ["0", "0", 0, ADOPT_MAX, ""])  # adopt only, claim none
            index = keys[4]
        seqs = await self._client.zrange(index, 0, limit - 1)
        if not seqs:
            return []
        texts = await self._client.hmget(keys[1], seqs)
        entries = []
        for seq, text in zip(seqs, texts, strict=True):
            if text is None:
                continue
            fields = orjson.loads(text)
            entries.append(
                HookEntry(
                    _event(app, seq, fields),
                    HookState(fields["state"]),
                    int(fields["attempts"]),
                    float(fields["next"]),
                    fields["error"] or None,
                )
            )
        return entries

    @_guarded
    async def replay(self, app: str, seqs: Sequence[str] | None, now: float) -> int:
        keys = self._app_keys(app)
        if seqs is not None:
            return int(await self._replay(keys, [repr(float(now)), *seqs])) if seqs else 0
        moved = 0
        while chunk := await self._client.zrange(keys[5], 0, PURGE_CHUNK - 1):
            moved += int(await self._replay(keys, [repr(float(now)), *chunk]))
        return moved

    @_guarded
    async def backlog(self, apps: Sequence[str]) -> list[HookBacklog]:
        pipe = self._client.pipeline(transaction=False)
        for app in apps:
            keys = self._app_keys(app)
            pipe.zcard(keys[4])
            pipe.zrange(keys[4], 0, 0, withscores=True)
            pipe.zcard(keys[5])
            pipe.xlen(keys[0])
            pipe.xrange(keys[0], count=1)
        answers = iter(await pipe.execute())
        backlogs = []
        for app in apps:
            adopted, first, dead, fresh, first_fresh = (next(answers) for _ in range(5))
            oldest = [score for _, score in first]
            oldest += [float(fields["at"]) for _, fields in first_fresh]
            backlogs.append(HookBacklog(app, adopted + fresh, dead, min(oldest, default=None)))
        return backlogs

    @_guarded
    async def purge(self, apps: Sequence[str], older_than: float) -> int:
        total = 0
        for app in apps:
            while True:
                args = [repr(float(older_than)), PURGE_CHUNK]
                purged = int(await self._purge(self._app_keys(app), args))
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
