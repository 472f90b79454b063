"""The template registry in Redis: one hash per (app, kind) of template JSON, and one
hash per app of each kind's last sync. A replace is one MULTI/EXEC (delete the
kind's hash, write the new one, record the sync), so a reader never sees half a sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

from wxgate.backends.base import StorageUnavailable
from wxgate.backends.redis_client import UNAVAILABLE
from wxgate.backends.redis_keys import RedisKeys
from wxgate.backends.templates import RegisteredTemplate, TemplateSyncState
from wxgate.wechat.kinds import MessageKind

_T = TypeVar("_T")


async def unavailable_as_storage(call: Awaitable[_T]) -> _T:
    """Redis unreachable reads as the storage contract's StorageUnavailable."""
    try:
        return await call
    except UNAVAILABLE as exc:
        raise StorageUnavailable(f"redis unavailable: {type(exc).__name__}") from exc


class RedisTemplateStore:
    """The TemplateStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def replace(
        self, app: str, kind: MessageKind, templates: Sequence[RegisteredTemplate], now: float
    ) -> None:
        key = self._keys.templates(app, kind.value)
        mapping = {t.template_id: t.to_json() for t in templates}
        state = TemplateSyncState(kind, now, now, "", len(mapping))
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(key)
        if mapping:
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        pipe.hset(self._keys.template_syncs(app), kind.value, state.to_json())
        await unavailable_as_storage(pipe.execute())

    async def sync_failed(self, app: str, kind: MessageKind, error: str, now: float) -> None:
        key = self._keys.template_syncs(app)
        raw = await unavailable_as_storage(self._client.hget(key, kind.value))
        before = TemplateSyncState.from_json(raw) if raw else None
        state = TemplateSyncState(
            kind,
            now,
            before.ok_at if before is not None else None,
            error or "failed",
            before.count if before is not None else 0,
        )
        await unavailable_as_storage(self._client.hset(key, kind.value, state.to_json()))

    async def templates(self, app: str) -> list[RegisteredTemplate]:
        pipe = self._client.pipeline(transaction=False)
        for kind in MessageKind:
            pipe.hvals(self._keys.templates(app, kind.value))
        answers: list[list[str]] = await unavailable_as_storage(pipe.execute())
        found = [RegisteredTemplate.from_json(raw) for values in answers for raw in values]
        return sorted(found, key=lambda t: t.template_id)

    async def sync_states(self, app: str) -> dict[MessageKind, TemplateSyncState]:
        raw: dict[str, str] = await unavailable_as_storage(
            self._client.hgetall(self._keys.template_syncs(app))  # type: ignore[arg-type]
        )
        states = [TemplateSyncState.from_json(value) for value in raw.values()]
        return {state.kind: state for state in states}
