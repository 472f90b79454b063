"""The grant ledger of subscribe messages in Redis (backends/grants.py), shared by every
process on every host: one hash per (app, touser), a field per template. A change that
reads before it decides is one Lua script (redis_scripts.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.base import StorageUnavailable
from wxgate.backends.grants import Grant, GrantUse
from wxgate.backends.redis_keys import RedisKeys

_T = TypeVar("_T")


def _grant(app: str, touser: str, template_id: str, raw: Any) -> Grant:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    one_time, long_term, updated_at = text.split(" ")
    return Grant(app, touser, template_id, int(one_time), long_term == "1", float(updated_at))


class RedisGrantStore:
    """The GrantStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: RedisKeys,
        unavailable: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._client = client
        self._keys = keys
        self._unavailable = unavailable  # errors that mean "storage is away for now"
        self._accept = client.register_script(lua.ACCEPT_GRANT)
        self._use = client.register_script(lua.USE_GRANT)

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except self._unavailable as exc:
            raise StorageUnavailable(f"grant ledger unavailable: {type(exc).__name__}") from exc

    async def accept(
        self, app: str, touser: str, template_id: str, *, long_term: bool, now: float
    ) -> Grant:
        key = self._keys.grants(app, touser)
        args = [template_id, int(long_term), repr(now)]
        raw = await self._guarded(self._accept(keys=[key], args=args))
        return _grant(app, touser, template_id, raw)

    async def clear(self, app: str, touser: str, template_id: str) -> bool:
        key = self._keys.grants(app, touser)
        return bool(await self._guarded(self._client.hdel(key, template_id)))

    async def use(self, app: str, touser: str, template_id: str, now: float) -> GrantUse:
        key = self._keys.grants(app, touser)
        answer = await self._guarded(self._use(keys=[key], args=[template_id, repr(now)]))
        return GrantUse(answer.decode() if isinstance(answer, bytes) else answer)

    async def get(self, app: str, touser: str, template_id: str) -> Grant | None:
        key = self._keys.grants(app, touser)
        raw = await self._guarded(self._client.hget(key, template_id))
        return None if raw is None else _grant(app, touser, template_id, raw)

    async def list(self, app: str, touser: str) -> list[Grant]:
        key = self._keys.grants(app, touser)
        fields: dict[Any, Any] = await self._guarded(self._client.hgetall(key))
        grants = [_grant(app, touser, str(tid), raw) for tid, raw in fields.items()]
        return sorted(grants, key=lambda grant: grant.template_id)
