"""SendBudget: waiting for send permits of a shared token bucket on an injected clock,
and handing them out no faster than the rate (docs/design.md §Send budget)."""

from __future__ import annotations

import asyncio

import pytest

from wxgate.backends.base import StorageUnavailable, send_burst
from wxgate.clock import FakeClock
from wxgate.delivery.ratelimit import PACE_S, RESERVE_S, SendBudget
from wxgate.tokenbucket import TokenBucket

from .conftest import on_fake_time


class CountingBucket:
    """A real TokenBucket behind the take(want, now) signature, counting the calls."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.bucket = TokenBucket(rate, rate if capacity is None else capacity)
        self.calls = 0
        self.granted: list[tuple[float, int]] = []

    async def take(self, want: int, now: float) -> int:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip, as a shared backend's call has
        granted = self.bucket.take(want, now)
        if granted:
            self.granted.append((now, granted))
        return granted


def busiest(times: list[float], window_s: float) -> int:
    """The most of `times` within any half-open window of `window_s` (as the sandbox's
    send-rate endpoint counts)."""
    times, best, first = sorted(times), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_s - 1e-9:
            first += 1
        best = max(best, last - first + 1)
    return best


def pace_bound(rate: float, window_s: float) -> int:
    """What one worker may send in any window of `window_s`: the rate, PACE_S of slack."""
    return int(rate * (window_s + PACE_S) + 1e-6) + 1


async def test_permits_within_the_pace_slack_are_granted_without_waiting() -> None:
    clock = FakeClock()
    rate = 1_000
    budget = SendBudget(CountingBucket(rate).take, rate, clock)
    for _ in range(int(rate * PACE_S)):
        await asyncio.wait_for(budget.acquire(), 1.0)
    assert clock.sleepers == 0


async def test_a_full_shared_bucket_is_spent_at_the_rate_not_at_once() -> None:
    """Issue 14's release: 512 sends waiting when the app's bucket is full (its burst of
    send_burst) and a reserve on top; no window of the permits' times, from 10 ms to a
    second, holds more than the rate with PACE_S of slack, and the rate is still met."""
    clock = FakeClock()
    rate, waiters, rounds = 1_000, 512, 4
    shared = CountingBucket(rate, send_burst(rate))
    budget = SendBudget(shared.take, rate, clock)
    started, times = clock.now(), []

    async def send() -> None:
        assert await budget.acquire()
        times.append(clock.now())

    async def everyone() -> None:
        await asyncio.gather(*(send() for _ in range(waiters * rounds)))

    await on_fake_time(clock, everyone())
    for window_s in (0.01, 0.1, 1.0):
        assert busiest(times, window_s) <= pace_bound(rate, window_s), window_s
    # the shared bucket's burst is not lost, only spread: 2,048 permits in ~2 s
    assert clock.now() - started <= (waiters * rounds) / rate + PACE_S


async def test_after_a_stall_a_worker_sends_no_burst() -> None:
    """A busy machine: the worker's event loop stalls 250 ms (the clock moves, nobody
    asks), so the shared bucket is full and 25 reserve-sized grants of time are owed;
    the sends after the stall still leave at the rate, with PACE_S of slack."""
    clock = FakeClock()
    rate = 1_000
    budget = SendBudget(CountingBucket(rate, send_burst(rate)).take, rate, clock)
    times: list[float] = []

    async def sends(count: int) -> None:
        for _ in range(count):
            assert await budget.acquire()
            times.append(clock.now())

    await on_fake_time(clock, sends(300))
    clock.advance(0.25)
    stalled_at = clock.now()
    await on_fake_time(clock, sends(300))
    after = [at for at in times if at >= stalled_at]
    assert busiest(after, 0.05) <= pace_bound(rate, 0.05)
    for window_s in (0.01, 0.1, 1.0):
        assert busiest(times, window_s) <= pace_bound(rate, window_s), window_s


async def test_beyond_the_burst_a_waiter_sleeps_on_the_clock_until_a_permit_appears() -> None:
    clock = FakeClock()
    budget = SendBudget(CountingBucket(2, send_burst(2)).take, 2, clock)
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
    # One call asks for everyone queued, so the burst is granted at once, not in ten.
    assert shared.granted[0][1] == rate


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

    async def one_after_another() -> None:
        for _ in range(200):
            assert await budget.acquire()

    await on_fake_time(clock, one_after_another())
    assert shared.calls <= 200 // int(rate * RESERVE_S) + 1
    # every permit used came from the shared bucket: none beyond what it granted
    assert sum(granted for _, granted in shared.granted) >= 200


async def test_the_permits_the_pace_allows_reach_every_waiter_in_one_turn() -> None:
    """A lock passed from waiter to waiter handed out one permit per turn of the event
    loop; a loaded loop turned slower than the rate and the pace bucket lost permits."""
    clock = FakeClock()
    rate = 1_000
    budget = SendBudget(CountingBucket(rate).take, rate, clock)
    waiters = [asyncio.ensure_future(budget.acquire()) for _ in range(int(rate * PACE_S))]
    for _ in range(5):  # the waiters queue, one budget call (a turn of its own), the answers
        await asyncio.sleep(0)
    assert all(waiter.done() and waiter.result() for waiter in waiters)
    assert clock.sleepers == 0


async def test_a_waiter_that_stops_waiting_leaves_its_permit_to_the_next() -> None:
    clock = FakeClock()
    rate = 100  # one permit of pace slack: the second waiter needs the first one's
    shared = CountingBucket(rate, 1)
    budget = SendBudget(shared.take, rate, clock)
    first = asyncio.ensure_future(budget.acquire())
    second = asyncio.ensure_future(budget.acquire())
    first.cancel()
    assert await asyncio.wait_for(second, 1.0)
    assert sum(n for _, n in shared.granted) == 1


async def test_when_every_waiter_stops_no_hand_out_is_left_behind() -> None:
    clock = FakeClock()
    budget = SendBudget(CountingBucket(2, send_burst(2)).take, 2, clock)
    assert await budget.acquire()
    waiter = asyncio.ensure_future(budget.acquire())
    await asyncio.sleep(0.01)
    assert clock.sleepers == 1  # the hand-out waits for the next permit on the clock
    waiter.cancel()
    for _ in range(3):  # the waiter ends, then the hand-out it cancelled
        await asyncio.sleep(0)
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "wxgate-send-budget"]
    clock.advance(0.5)
    assert await asyncio.wait_for(budget.acquire(), 1.0)  # a new waiter starts a new one


async def test_a_failed_budget_call_fails_the_waiter_it_was_made_for_only() -> None:
    clock = FakeClock()
    rate = 1_000
    bucket = CountingBucket(rate)
    failures = [StorageUnavailable("redis went away")]

    async def take(want: int, now: float) -> int:
        if failures:
            await asyncio.sleep(0)
            raise failures.pop()
        return await bucket.take(want, now)

    budget = SendBudget(take, rate, clock)
    first = asyncio.ensure_future(budget.acquire())
    second = asyncio.ensure_future(budget.acquire())
    with pytest.raises(StorageUnavailable):
        await first
    assert await asyncio.wait_for(second, 1.0)
