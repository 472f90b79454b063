"""Access tokens and their fetch lock in Redis, shared by every process on every host.

The token of an app is a hash; the fetch lock is `SET owner NX PX ttl` with a
fencing counter (`INCR`) handed to the holder. `save` keeps a token only if its
fence is not lower than the stored one, so a holder that stalled past its lease
cannot overwrite the token of a later holder. Each check-then-write is one Lua
script. The lock's lease runs on Redis's clock, the same for every host.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.redis_keys import RedisKeys
from wxgate.wechat.tokenstore import CachedToken


class RedisTokenStore:
    """The TokenStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._save = client.register_script(lua.SAVE_TOKEN)
        self._invalidate = client.register_script(lua.INVALIDATE_TOKEN)
        self._try_lock = client.register_script(lua.TRY_LOCK)
        self._unlock = client.register_script(lua.UNLOCK)
        self._client = client

    async def load(self, app: str) -> CachedToken | None:
        fields: dict[Any, Any] = await self._client.hgetall(self._keys.token(app))
        if not fields:
            return None
        return CachedToken(
            token=_text(fields["token"]),
            expires_at=float(fields["expires_at"]),
            fetched_at=float(fields["fetched_at"]),
            fence=int(fields["fence"]),
            forced_at=float(fields["forced_at"]),
            # Hashes saved before the daily force budget lack these: none counted yet.
            forced_count=int(fields.get("forced_count", 0)),
            forced_day=int(fields.get("forced_day", 0)),
        )

    async def save(self, app: str, token: CachedToken) -> bool:
        args = [
            token.token,
            repr(float(token.expires_at)),
            repr(float(token.fetched_at)),
            token.fence,
            repr(float(token.forced_at)),
            token.forced_count,
            token.forced_day,
        ]
        return await self._save([self._keys.token(app)], args) == 1

    async def invalidate(self, app: str, token: str) -> bool:
        return await self._invalidate([self._keys.token(app)], [token]) == 1

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        keys = [self._keys.token_lock(app), self._keys.token_fence(app)]
        fence = await self._try_lock(keys, [owner, max(1, round(ttl_s * 1000))])
        return None if fence is None else int(fence)

    async def unlock(self, app: str, owner: str) -> None:
        await self._unlock([self._keys.token_lock(app)], [owner])

    async def close(self) -> None:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
