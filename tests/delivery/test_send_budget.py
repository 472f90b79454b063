"""SendBudget: waiting for send permits of a shared token bucket on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from wxgate.clock import FakeClock
from wxgate.delivery.ratelimit import RESERVE_S, SendBudget
from wxgate.tokenbucket import TokenBucket

from .conftest import on_fake_time


class CountingBucket:
    """A real TokenBucket behind the take(want, now) signature, counting the calls."""

    def __init__(self, rate: float) -> None:
        self.bucket = TokenBucket(rate, rate)
        self.calls = 0
        self.granted: list[tuple[float, int]] = []

    async def take(self, want: int, now: float) -> int:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip, as a shared backend's call has
        granted = self.bucket.take(want, now)
        if granted:
            self.granted.append((now, granted))
        return granted


async def test_permits_within_the_burst_are_granted_without_waiting() -> None:
    clock = FakeClock()
    shared = CountingBucket(5)
    budget = SendBudget(shared.take, 5, clock)
    for _ in range(5):
        await asyncio.wait_for(budget.acquire(), 1.0)
    assert clock.sleepers == 0


async def test_beyond_the_burst_a_waiter_sleeps_on_the_clock_until_a_permit_appears() -> None:
    clock = FakeClock()
    budget = SendBudget(CountingBucket(2).take, 2, clock)
    await budget.acquire()
    await budget.acquire()
    waiter = asyncio.ensure_future(budget.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert clock.next_wake() == pytest.approx(0.5)
    clock.advance(0.5)
    await asyncio.wait_for(waiter, 1.0)


async def test_many_waiters_keep_to_the_rate_and_share_the_burst_calls() -> None:
    clock = FakeClock()
    rate, waiters = 10, 50
    shared = CountingBucket(rate)
    budget = SendBudget(shared.take, rate, clock)
    started = clock.now()

    async def everyone() -> None:
        await asyncio.gather(*(budget.acquire() for _ in range(waiters)))

    await on_fake_time(clock, everyone())
    assert clock.now() - started >= (waiters - rate) / rate - 1e-3  # WHOLE_EPSILON slack
    assert sum(n for _, n in shared.granted) == waiters
    # The first waiter asks alone; the second asks for everyone queued behind it, so
    # the burst goes out in two budget calls, not ten.
    assert shared.granted[0][1] + shared.granted[1][1] == rate


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        SendBudget(CountingBucket(1).take, 0, FakeClock())


async def test_a_waiter_gives_up_when_no_permit_can_come_before_its_deadline() -> None:
    clock = FakeClock()
    budget = SendBudget(CountingBucket(1).take, 1, clock)
    assert await budget.acquire(until=clock.now() + 10.0)
    assert not await asyncio.wait_for(budget.acquire(until=clock.now() + 0.5), 1.0)
    assert clock.sleepers == 0  # it did not even start a wait it could not finish


async def test_sends_one_after_another_find_a_reserve_instead_of_a_call_each() -> None:
    rate = 1_000  # a reserve of RESERVE_S of it
    clock = FakeClock()
    shared = CountingBucket(rate)
    budget = SendBudget(shared.take, rate, clock)
    for _ in range(200):
        assert await asyncio.wait_for(budget.acquire(), 1.0)
    assert shared.calls <= 200 // int(rate * RESERVE_S) + 1
    # every permit used came from the shared bucket: none beyond what it granted
    assert sum(granted for _, granted in shared.granted) >= 200
