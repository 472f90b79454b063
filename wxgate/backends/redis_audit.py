"""The audit log (audit.py) in Redis: one stream, newest read first, capped at
MAX_ENTRIES (approximately, as XADD's MAXLEN ~ trims)."""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis

from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import StorageUnavailable
from wxgate.backends.redis_client import UNAVAILABLE
from wxgate.backends.redis_keys import RedisKeys

MAX_ENTRIES: Final = 1_000_000
_PAGE: Final = 1000  # entries read per round while filtering by action


class RedisAuditLog:
    """The AuditLog protocol on a Redis client it borrows (its owner closes it)."""

    def __init__(self, client: aioredis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    async def record(self, entry: AuditEntry) -> None:
        fields = {
            "at": repr(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "detail": entry.detail,
        }
        try:
            await self._client.xadd(self._keys.audit, fields, maxlen=MAX_ENTRIES, approximate=True)
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"audit log unavailable: {type(exc).__name__}") from exc

    async def entries(self, limit: int, action: str | None = None) -> list[AuditEntry]:
        found: list[AuditEntry] = []
        upper = "+"
        try:
            while len(found) < limit:
                page = await self._client.xrevrange(self._keys.audit, upper, "-", count=_PAGE)
                for entry_id, fields in page:
                    if upper != "+" and entry_id == upper:
                        continue  # the bound of this page was the last of the previous one
                    if action is None or fields["action"] == action:
                        found.append(_entry(fields))
                if len(page) < _PAGE:
                    break
                upper = page[-1][0]
        except UNAVAILABLE as exc:
            raise StorageUnavailable(f"audit log unavailable: {type(exc).__name__}") from exc
        return found[:limit]


def _entry(fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        float(fields["at"]), fields["actor"], fields["action"], fields["target"], fields["detail"]
    )
