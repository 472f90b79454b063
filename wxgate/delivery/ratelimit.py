"""The worker's waiting side of the send rate limit.

`SendBudget` asks a shared budget (`Backend.take_send_budget`, a token bucket per
app: `wxgate.tokenbucket` in process, a Lua script on Redis) for permits and sleeps
on the injected clock while none are left; it then hands its permits out no faster
than the rate (PACE_S), so what the shared bucket grants in one go (its burst, a
reserve) does not leave as one burst (docs/design.md §Send budget).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wxgate.clock import Clock
from wxgate.tokenbucket import TokenBucket

# take(want, now) -> granted: a shared budget such as Backend.take_send_budget bound to one app.
TakeBudget = Callable[[int, float], Awaitable[int]]
# Each call for permits also asks for what the app's rate grants in this long (at most
# RESERVE_MAX), kept for the sends that come next: measured with 30 ms answers on
# Redis, a budget call per wave of sends (~300 calls of ~13 ms for 6,000 sends at
# 64 slots, each in front of its sends) held every slot that long beyond its round
# trip. Permits are still granted by the shared bucket before any request uses them,
# but a worker may spend its reserve a moment after taking it, so every worker's
# reserve adds to the bucket's burst in a one-second window: 50 ms of rate let three
# workers sharing 600/s put 668 sends into one second (the scale-out test's 10%
# bound). 10 ms keeps three workers within it and still saves most budget calls.
RESERVE_S = 0.01
RESERVE_MAX = 16
# Permits leave a worker no faster than the rate, with this much of it as slack: a
# local bucket of PACE_S of rate (at least one permit), checked right before each
# request. The shared bucket keeps its burst (send_burst: 50 ms of rate, so a slow
# budget call loses no rate), but a worker no longer spends it, or its reserve, or what
# accrued while its event loop stalled, at once: a full bucket at the start of a
# release put 160 sends into its first 100 ms at 1,000/s, 1,068 into its first second.
# One worker keeps any window of W seconds within rate x (W + PACE_S) + 1 sends.
PACE_S = 0.01


class SendBudget:
    """Waits for send permits of one app, asking the shared budget once for every waiter.

    Waiters queue in arrival order; one hand-out task asks the shared budget for as many
    permits as there are waiters and a reserve (see RESERVE_S), so N concurrent senders
    cost one budget call per grant, not N, and most sends find a permit without a call.
    Each time it runs it hands every permit the pace allows to as many waiters at once.
    A lock passed from waiter to waiter (what this was) handed out one permit per turn
    of the event loop: a loaded Redis worker at 1,000/s turned its loop more slowly than
    that, the pace bucket filled up and lost permits, and it reached ~0.86 of the rate.
    """

    def __init__(self, take: TakeBudget, rate_per_s: float, clock: Clock) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self._take = take
        # When the budget is empty, one more permit appears after 1/rate seconds.
        self._retry_s = 1.0 / rate_per_s
        self._reserve = min(RESERVE_MAX, int(rate_per_s * RESERVE_S))
        self._pace = TokenBucket(rate_per_s, max(1.0, rate_per_s * PACE_S))
        self._clock = clock
        self._queue: deque[_Waiter] = deque()
        self._handing_out: asyncio.Task[None] | None = None
        self._spare = 0
        self.empty_waits = 0  # how many times a waiter slept for the bucket to refill

    async def acquire(self, until: float = math.inf) -> bool:
        """Take one send permit; False when none can be had by `until` (clock time)."""
        waiter = _Waiter(asyncio.get_running_loop().create_future(), until)
        self._queue.append(waiter)
        if self._handing_out is None:
            self._handing_out = asyncio.create_task(self._hand_out(), name="wxgate-send-budget")
        try:
            return await waiter.granted
        except asyncio.CancelledError:
            # Nobody left to hand out to: the hand-out task ends too (permits it was
            # taking from the shared bucket go unused: fewer sends, never more).
            if self._handing_out is not None and not self._live():
                self._handing_out.cancel()
                self._handing_out = None
            raise

    def _live(self) -> bool:
        """Whether anyone still waits (the waiters that stopped waiting are dropped)."""
        queue = self._queue
        while queue and queue[0].granted.done():
            queue.popleft()
        return bool(queue)

    async def _hand_out(self) -> None:
        queue = self._queue
        try:
            while self._live():
                if self._spare == 0:
                    now = self._clock.now()
                    try:
                        self._spare = await self._take(len(queue) + self._reserve, now)
                    except Exception as exc:  # storage: the head waiter's call, its failure
                        if self._live():
                            queue.popleft().granted.set_exception(exc)
                        continue
                    if self._spare == 0 and self._live():
                        if now + self._retry_s > queue[0].until:
                            queue.popleft().granted.set_result(False)
                            continue
                        self.empty_waits += 1
                        await self._clock.sleep(self._retry_s)
                    continue
                # The permits are the shared bucket's; when they leave is this worker's pace.
                now = self._clock.now()
                count = self._pace.take(min(self._spare, len(queue)), now)
                if count == 0:
                    wait_s = self._pace.wait_time(now)
                    if now + wait_s > queue[0].until:
                        queue.popleft().granted.set_result(False)  # the permit stays spare
                        continue
                    await self._clock.sleep(wait_s)
                    continue
                self._spare -= count
                while count and self._live():
                    queue.popleft().granted.set_result(True)
                    count -= 1
                # Waiters that stopped waiting meanwhile leave their permits for the next.
                self._spare += count
                self._pace.tokens += count
        finally:
            if self._handing_out is asyncio.current_task():
                self._handing_out = None


@dataclass(frozen=True, slots=True)
class _Waiter:
    granted: asyncio.Future[bool]
    until: float
