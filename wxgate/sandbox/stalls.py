"""How late the sandbox's own event loop ran: the receiver's side of a rate measurement.

The sandbox stamps a send when its event loop reads the request (`rate.py`). A loop
that stops for 200 ms (another process on its core, its own garbage collection) reads
the sends of those 200 ms together, and a busiest-window measurement then counts them
as if they had arrived at once: WeChat's clock does not stop like that. `LoopStalls`
samples the loop every SAMPLE_EVERY_S and keeps each stall of at least STALL_S (when it
ended, on the sandbox's clock, and how long it was), so `GET /sandbox/send-rate` says
by how much the receiver itself may have bunched the arrivals it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from wxgate.sandbox.clock import OffsetClock

SAMPLE_EVERY_S = 0.005
STALL_S = 0.02
KEPT = 200  # the longest stalls kept for the answer


class LoopStalls:
    """Stalls of the running loop of at least STALL_S, since the start or `clear`."""

    def __init__(self, clock: OffsetClock) -> None:
        self._clock = clock
        self._stalls: deque[tuple[float, float]] = deque()  # (ended_at, seconds)
        self.count = 0
        self.longest_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample(), name="sandbox-loop-stalls")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def clear(self) -> None:
        self._stalls.clear()
        self.count = 0
        self.longest_s = 0.0

    def observe(self, late_s: float) -> None:
        """One sample: the loop ran `late_s` behind its timer."""
        if late_s < STALL_S:
            return
        self.count += 1
        self.longest_s = max(self.longest_s, late_s)
        self._stalls.append((self._clock.now(), late_s))
        if len(self._stalls) > 2 * KEPT:  # keep the longest KEPT, in time order
            longest = sorted(self._stalls, key=lambda stall: stall[1])[-KEPT:]
            self._stalls = deque(sorted(longest))

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(SAMPLE_EVERY_S)
            self.observe(loop.time() - asked - SAMPLE_EVERY_S)

    def to_json(self) -> dict[str, Any]:
        longest = sorted(self._stalls, key=lambda stall: stall[1])[-KEPT:]
        return {
            "threshold_ms": STALL_S * 1000,
            "count": self.count,
            "longest_ms": round(self.longest_s * 1000, 1),
            "stalls": [
                {"ended_at": ended_at, "ms": round(seconds * 1000, 1)}
                for ended_at, seconds in sorted(longest)
            ],
        }
