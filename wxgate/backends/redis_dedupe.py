"""The dedupe window (dedupe.py) in Redis: one string per (app, digest) holding the
first message's id, expiring with the window; a claim is one Lua script."""

from __future__ import annotations

import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.base import StorageUnavailable
from wxgate.backends.redis_client import UNAVAILABLE
from wxgate.backends.redis_keys import RedisKeys


class RedisDedupeStore:
    """The DedupeStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._claim = client.register_script(lua.CLAIM_DEDUPE)
        self._forget = client.register_script(lua.FORGET_DEDUPE)

    async def claim(
        self, app: str, digest: str, message_id: str, window_s: float, now: float
    ) -> str | None:
        ttl_ms = max(1, int(window_s * 1000))
        try:
            args = [message_id, ttl_ms, repr(float(now)), repr(float(now + window_s))]
            first = await self._claim([self._keys.dedupe(app, digest)], args)
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"dedupe store unavailable: {type(exc).__name__}") from exc
        return None if first is None else str(first)

    async def forget(self, app: str, digest: str, message_id: str) -> None:
        try:
            await self._forget([self._keys.dedupe(app, digest)], [message_id])
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"dedupe store unavailable: {type(exc).__name__}") from exc
