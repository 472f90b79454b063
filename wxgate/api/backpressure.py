"""Backpressure: intake is refused (503) while more than `server.max_queued` messages wait.

Counting messages costs a query, so the count is cached for about a second and
refreshed by one request at a time; the limit is a guard rail, not an exact gate.
"""

from __future__ import annotations

import asyncio

from wxgate.api.errors import NotReady
from wxgate.backends.base import Backend, Status
from wxgate.clock import Clock

COUNT_TTL_S = 1.0


class Backpressure:
    def __init__(self, backend: Backend, max_queued: int, clock: Clock) -> None:
        self._backend = backend
        self._limit = max_queued
        self._clock = clock
        self._queued = 0
        self._counted_at: float | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> None:
        """Raise NotReady when the queue is deeper than the limit (0: no limit)."""
        if self._limit <= 0:
            return
        queued = await self._queued_now()
        if queued > self._limit:
            raise NotReady(
                "too many messages waiting; retry later",
                data={"queued": queued, "max_queued": self._limit},
            )

    def _fresh(self) -> bool:
        at = self._counted_at
        return at is not None and self._clock.monotonic() - at < COUNT_TTL_S

    async def _queued_now(self) -> int:
        if self._fresh():
            return self._queued
        async with self._lock:
            if not self._fresh():  # another request may have counted while we waited
                counts = await self._backend.counts()
                self._queued = counts.get(Status.QUEUED, 0)
                self._counted_at = self._clock.monotonic()
        return self._queued
