"""The suppression list in Redis, in buckets: an app's entries are spread over
BUCKETS small hashes by a CRC of the openid.

Why buckets: one hash of a million fields is a real hash table (~100 bytes a field
with its dictEntry and two sds strings); small hashes stay listpacks, where a field
costs its bytes and a few of framing. 16,384 buckets keep a million entries at ~61
per hash, under the default `hash-max-listpack-entries` (128), so the bytes per entry
stay flat up to ~2M entries per app (measured: docs/templates.md). An add is a Lua
script (a permanent entry stays), an import of many is one MULTI of such scripts.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence

import redis.asyncio as aioredis

from wxgate.backends import redis_scripts as lua
from wxgate.backends.redis_client import preload
from wxgate.backends.redis_keys import RedisKeys
from wxgate.backends.redis_templates import unavailable_as_storage
from wxgate.backends.suppressions import Suppression, SuppressionPage, SuppressionReason

BUCKETS = 16_384
_ADD_CHUNK = 1_000  # entries per script call inside an import's one transaction
_SCAN_BUCKETS = 512  # buckets read per round trip while listing
_PERMANENT = ",".join(reason.value for reason in SuppressionReason if reason.permanent)


def bucket_of(openid: str) -> int:
    return zlib.crc32(openid.encode()) % BUCKETS


class RedisSuppressionStore:
    """The SuppressionStore protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._add = client.register_script(lua.ADD_SUPPRESSIONS)
        self._lift = client.register_script(lua.LIFT_SUPPRESSION)

    def _key(self, app: str, openid: str) -> str:
        return self._keys.suppressions(app, bucket_of(openid))

    async def add(self, app: str, entries: Sequence[Suppression]) -> int:
        latest = {entry.openid: entry for entry in entries}  # the last entry of an openid wins
        items = list(latest.values())
        if not items:
            return 0
        await unavailable_as_storage(preload(self._client, self._add))
        pipe = self._client.pipeline(transaction=True)
        for start in range(0, len(items), _ADD_CHUNK):
            chunk = items[start : start + _ADD_CHUNK]
            keys = [self._key(app, entry.openid) for entry in chunk]
            args: list[str] = [_PERMANENT]
            for entry in chunk:
                args += [entry.openid, entry.encode()]
            await self._add(keys, args, client=pipe)
        answers = await unavailable_as_storage(pipe.execute())
        return sum(int(answer) for answer in answers)

    async def lift(
        self, app: str, openid: str, reasons: Collection[SuppressionReason] | None = None
    ) -> bool:
        args = [openid, *(reason.value for reason in reasons or ())]
        if reasons is not None and not reasons:
            return False
        removed = await unavailable_as_storage(self._lift([self._key(app, openid)], args))
        return int(removed) == 1

    async def find(self, app: str, openids: Sequence[str]) -> dict[str, Suppression]:
        wanted = list(dict.fromkeys(openids))
        if not wanted:
            return {}
        if len(wanted) == 1:  # a single message: one command, without a pipeline's cost
            [openid] = wanted
            value = await unavailable_as_storage(self._client.hget(self._key(app, openid), openid))
            return {} if value is None else {openid: Suppression.decode(openid, value)}
        pipe = self._client.pipeline(transaction=False)
        for openid in wanted:
            pipe.hget(self._key(app, openid), openid)
        values: list[str | None] = await unavailable_as_storage(pipe.execute())
        return {
            openid: Suppression.decode(openid, value)
            for openid, value in zip(wanted, values, strict=True)
            if value is not None
        }

    async def page(self, app: str, limit: int, cursor: str | None = None) -> SuppressionPage:
        """Buckets in order, each bucket's entries by openid; the cursor is
        "<bucket>.<entries of it already listed>"."""
        bucket, skip = _cursor(cursor)
        items: list[Suppression] = []
        while bucket < BUCKETS:
            last = min(bucket + _SCAN_BUCKETS, BUCKETS)
            pipe = self._client.pipeline(transaction=False)
            for number in range(bucket, last):
                pipe.hgetall(self._keys.suppressions(app, number))
            answers: list[dict[str, str]] = await unavailable_as_storage(pipe.execute())
            for number, fields in zip(range(bucket, last), answers, strict=True):
                entries = sorted(fields.items())[skip:]
                skip = 0
                room = limit - len(items)
                if len(entries) > room:
                    listed = len(fields) - len(entries) + room
                    items += [Suppression.decode(o, v) for o, v in entries[:room]]
                    return SuppressionPage(items, f"{number}.{listed}")
                items += [Suppression.decode(o, v) for o, v in entries]
            bucket = last
            if len(items) == limit:
                break
        return SuppressionPage(items, f"{bucket}.0" if bucket < BUCKETS else None)


def _cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    bucket, _, skip = cursor.partition(".")
    try:
        return max(0, int(bucket)), max(0, int(skip or 0))
    except ValueError:
        raise ValueError(f"not a suppression cursor: {cursor!r}") from None
