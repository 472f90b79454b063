"""Intake first: in a process that answers the API and delivers (`--role all`), the
worker keeps fewer sends in flight while the event loop runs late.

Every send in flight is callbacks on the same event loop as the intake requests. On a
busy core, a wide window runs hundreds of send callbacks between two requests: with
512 sends in flight and 2,000 requests/s offered, intake p50 was 3.2 s and p99 7 s,
with 8 in flight 29 ms and 101 ms on the same (loaded) machine. A request must be
answered at once; a message already stored can wait a little for its send.

`LoopLag` measures how late a timer fires, every SAMPLE_EVERY_S: what any callback
that became ready waits for the loop. `LagLimit` turns those samples into a cap on the
window, additive increase and multiplicative decrease as TCP does with a congestion
window: while the loop is later than `target_s` the cap shrinks by a quarter (at most
once per SHRINK_EVERY_S, so a cut shows its effect before the next), while it is on
time (under half the target) it grows by one a sample, up to the window itself. The
cap never falls below FLOOR: delivery always progresses, and intake, when it alone
fills the core, meets the queue's backpressure (`server.max_queued`) instead.
It yields only while there is intake to yield to: a request accepted within
INTAKE_RECENT_S (`IntakeActivity`, marked by the API). A late loop with no intake
(another process on the core, a long batch being validated) leaves the window whole,
and the cap is lifted as soon as intake stops. A worker-only process has no intake and
keeps its whole window.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

SAMPLE_EVERY_S = 0.01
INTAKE_RECENT_S = 0.2
SHRINK_EVERY_S = 0.05
SHRINK = 0.75
FLOOR = 8


class IntakeActivity:
    """When the API last accepted a request (on the event loop's clock): marked by
    intake, read by the worker's LagLimit."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._last = -math.inf

    def mark(self) -> None:
        self._last = self._monotonic()

    def recent(self) -> bool:
        return self._monotonic() - self._last <= INTAKE_RECENT_S


class LagLimit:
    """The most sends in flight the event loop's lateness allows (see the module
    docstring); `observe` each lag sample."""

    def __init__(
        self,
        target_s: float,
        most: int,
        intake: IntakeActivity,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target_s = target_s
        self._most = most
        self._intake = intake
        self._monotonic = monotonic
        self._last_shrink = -math.inf
        self.cap = most
        self.lag_s = 0.0  # the last sample

    def observe(self, lag_s: float) -> None:
        self.lag_s = lag_s
        if not self._intake.recent():
            self.cap = self._most  # nothing to yield to
        elif lag_s > self.target_s:
            now = self._monotonic()
            if now - self._last_shrink >= SHRINK_EVERY_S:
                self._last_shrink = now
                self.cap = max(FLOOR, int(self.cap * SHRINK))
        elif lag_s < self.target_s / 2 and self.cap < self._most:
            self.cap += 1

    def limit(self, size: int) -> int:
        """`size` (the window's) under the cap, never below FLOOR nor above `size`."""
        return min(size, max(FLOOR, self.cap))


class LoopLag:
    """Samples how late the running event loop fires a timer, for `on_sample`."""

    def __init__(self, on_sample: Callable[[float], None]) -> None:
        self._on_sample = on_sample

    async def run(self) -> None:
        """Until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_EVERY_S
            await asyncio.sleep(SAMPLE_EVERY_S)
            self._on_sample(max(0.0, loop.time() - due))
