"""Where access tokens are kept, and the lock that makes one fetch per lifetime.

`TokenStore` is the small protocol the token manager needs; it is implemented
here in memory (one process), and by the storage engines: backends/sqlite_tokens.py
(processes sharing one file) and backends/redis_tokens.py (processes on many
hosts). The lock is a lease with an owner and a fencing number, so a holder that
stalls past its lease cannot overwrite a newer token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Protocol

from wxgate.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class CachedToken:
    token: str
    expires_at: float  # epoch seconds
    fetched_at: float  # epoch seconds
    fence: int = 0  # the lock's fencing number when it was saved; higher is newer
    forced_at: float = 0.0  # last force_refresh=true (at most one every 30 s)
    # stable_token force refreshes on Beijing day `forced_day` (WeChat allows 20 a day)
    forced_count: int = 0
    forced_day: int = 0  # token.beijing_day() of the last one; 0 for none

    def __repr__(self) -> str:  # the token itself never reaches a repr or a log line
        return (
            f"CachedToken(token='{mask(self.token)}', expires_at={self.expires_at:.0f}, "
            f"fetched_at={self.fetched_at:.0f}, fence={self.fence})"
        )

    def remaining(self, now: float) -> float:
        return self.expires_at - now


def mask(token: str) -> str:
    """A token as it may be shown to an operator: its first 4 characters only."""
    return f"{token[:4]}…({len(token)} chars)" if token else "(none)"


class TokenStore(Protocol):
    async def load(self, app: str) -> CachedToken | None: ...

    async def save(self, app: str, token: CachedToken) -> bool:
        """Store `token` unless the stored one has a higher fence; True if stored."""
        ...

    async def invalidate(self, app: str, token: str) -> bool:
        """Compare-and-invalidate: if the stored token is still `token`, mark it expired
        (expires_at = 0, fence kept, so an older fetch still cannot overwrite it)."""
        ...

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        """Take the fetch lock for `ttl_s` seconds; its fencing number, or None if held."""
        ...

    async def unlock(self, app: str, owner: str) -> None:
        """Release the lock if `owner` still holds it."""
        ...

    async def close(self) -> None: ...


class MemoryTokenStore:
    """Tokens of one process; the lock only serialises this process's managers."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._tokens: dict[str, CachedToken] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._fences: dict[str, int] = {}
        self._mutex = asyncio.Lock()

    async def load(self, app: str) -> CachedToken | None:
        return self._tokens.get(app)

    async def save(self, app: str, token: CachedToken) -> bool:
        current = self._tokens.get(app)
        if current is not None and current.fence > token.fence:
            return False
        self._tokens[app] = token
        return True

    async def invalidate(self, app: str, token: str) -> bool:
        current = self._tokens.get(app)
        if current is None or current.token != token or current.expires_at == 0:
            return False
        self._tokens[app] = replace(current, expires_at=0.0)
        return True

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        async with self._mutex:
            now = self._clock.monotonic()
            held = self._locks.get(app)
            if held is not None and held[1] > now and held[0] != owner:
                return None
            self._locks[app] = (owner, now + ttl_s)
            self._fences[app] = self._fences.get(app, 0) + 1
            return self._fences[app]

    async def unlock(self, app: str, owner: str) -> None:
        held = self._locks.get(app)
        if held is not None and held[0] == owner:
            del self._locks[app]

    async def close(self) -> None:
        return None
