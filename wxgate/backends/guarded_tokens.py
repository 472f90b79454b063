"""A token store whose storage failures read as the storage contract's StorageUnavailable.

The token stores speak their engine's own errors (sqlite3's, redis-py's), and the
token manager passes them on to whoever wanted a token: a send in the worker, which
knows only the storage contract. Each engine wraps its store in this, naming the
errors that mean "storage is away for now", so the worker can wait for storage to
come back (and release the message) instead of stopping.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from wxgate.backends.base import StorageUnavailable
from wxgate.wechat.tokenstore import CachedToken, TokenStore

_T = TypeVar("_T")


class GuardedTokenStore:
    """`store`, with `unavailable` errors raised as StorageUnavailable."""

    def __init__(self, store: TokenStore, unavailable: tuple[type[BaseException], ...]) -> None:
        self.store = store
        self._unavailable = unavailable

    async def _guarded(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except self._unavailable as exc:
            raise StorageUnavailable(f"token store unavailable: {type(exc).__name__}") from exc

    async def load(self, app: str) -> CachedToken | None:
        return await self._guarded(self.store.load(app))

    async def save(self, app: str, token: CachedToken) -> bool:
        return await self._guarded(self.store.save(app, token))

    async def invalidate(self, app: str, token: str) -> bool:
        return await self._guarded(self.store.invalidate(app, token))

    async def try_lock(self, app: str, owner: str, ttl_s: float) -> int | None:
        return await self._guarded(self.store.try_lock(app, owner, ttl_s))

    async def unlock(self, app: str, owner: str) -> None:
        await self._guarded(self.store.unlock(app, owner))

    async def close(self) -> None:
        await self.store.close()
