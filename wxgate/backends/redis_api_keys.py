"""API keys (api_keys.py) in Redis: a hash per key, a digest -> id hash of the live ones,
and the ids by creation time; every change that touches two of them is one MULTI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis

from wxgate.backends.api_keys import StoredKey
from wxgate.backends.base import StorageUnavailable
from wxgate.backends.redis_client import UNAVAILABLE
from wxgate.backends.redis_keys import RedisKeys

_T = TypeVar("_T")


def _optional(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _key(fields: dict[str, Any]) -> StoredKey:
    return StoredKey(
        fields["id"],
        fields["name"],
        fields["digest"],
        tuple(orjson.loads(fields["apps"])),
        tuple(orjson.loads(fields["scopes"])),
        float(fields["created_at"]),
        _optional(fields.get("last_used_at")),
        _optional(fields.get("revoked_at")),
    )


class RedisApiKeyStore:
    """The ApiKeyStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await call()
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"key store unavailable: {type(exc).__name__}") from exc

    async def add(self, key: StoredKey) -> None:
        fields = {
            "id": key.id,
            "name": key.name,
            "digest": key.digest,
            "apps": orjson.dumps(list(key.apps)).decode(),
            "scopes": orjson.dumps(list(key.scopes)).decode(),
            "created_at": repr(key.created_at),
        }

        async def add() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.api_key(key.id), mapping=fields)
                pipe.hset(self._keys.api_key_digests, key.digest, key.id)
                pipe.zadd(self._keys.api_key_ids, {key.id: key.created_at})
                await pipe.execute()

        await self._call(add)

    async def find(self, digest: str) -> StoredKey | None:
        async def find() -> StoredKey | None:
            key_id = await self._client.hget(self._keys.api_key_digests, digest)
            if key_id is None:
                return None
            fields = await self._client.hgetall(self._keys.api_key(key_id))
            if not fields or fields.get("revoked_at"):
                return None
            return _key(fields)

        return await self._call(find)

    async def touch(self, key_id: str, now: float) -> None:
        name = self._keys.api_key(key_id)
        await self._call(lambda: self._client.hset(name, "last_used_at", repr(now)))

    async def keys(self) -> list[StoredKey]:
        async def every() -> list[StoredKey]:
            ids = await self._client.zrange(self._keys.api_key_ids, 0, -1)
            async with self._client.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(self._keys.api_key(key_id))
                rows = await pipe.execute()
            return [_key(fields) for fields in rows if fields]

        return await self._call(every)

    async def revoke(self, key_id: str, now: float) -> StoredKey | None:
        async def revoke() -> StoredKey | None:
            name = self._keys.api_key(key_id)
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name)
                        fields = await pipe.hgetall(name)
                        if not fields or fields.get("revoked_at"):
                            await pipe.reset()
                            return None
                        pipe.multi()
                        pipe.hset(name, "revoked_at", repr(now))
                        pipe.hdel(self._keys.api_key_digests, fields["digest"])
                        await pipe.execute()
                        return _key({**fields, "revoked_at": repr(now)})
                    except aioredis.WatchError:
                        continue

        return await self._call(revoke)
