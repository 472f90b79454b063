"""Per-recipient send caps (caps.py) in Redis, shared by every process on every host.

Each (app, recipient, scope) is a sorted set of the message ids holding a slot, scored
by when the slot frees, expiring with its last slot. A take is one Lua script over
the sets of every limit, so it takes a slot of each or none.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.base import StorageUnavailable
from wxgate.backends.caps import CapLimit
from wxgate.backends.redis_client import UNAVAILABLE
from wxgate.backends.redis_keys import RedisKeys


class RedisCapStore:
    """The CapStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._take = client.register_script(lua.TAKE_CAP)

    async def take(
        self,
        app: str,
        touser: str,
        message_id: str,
        limits: Sequence[CapLimit],
        now: float,
    ) -> float | None:
        if not limits:
            return None
        keys = [self._keys.cap(app, touser, limit.scope) for limit in limits]
        args: list[str | int] = [message_id, repr(float(now))]
        for limit in limits:
            args += [limit.count, repr(float(limit.period_s))]
        try:
            answer = await self._take(keys, args)
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"cap store unavailable: {type(exc).__name__}") from exc
        return None if answer is None else float(answer)
