"""The per-app circuit breaker: closed, open after a run of failures, half-open, one probe."""

from __future__ import annotations

import pytest

from wxgate.clock import FakeClock
from wxgate.delivery.breaker import BreakerState, CircuitBreaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _tripped(clock: FakeClock, moves: list[BreakerState] | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker(3, 30.0, clock, on_change=None if moves is None else moves.append)
    for _ in range(3):
        breaker.record_failure()
    return breaker


def test_a_new_breaker_is_closed_and_allows_sends(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 30.0, clock)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.accepting()


def test_it_opens_after_the_configured_run_of_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 30.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert not breaker.accepting()


def test_a_success_breaks_the_run_of_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 30.0, clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_it_stays_open_until_the_cooldown_passes(clock: FakeClock) -> None:
    breaker = _tripped(clock)
    clock.advance(29.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    breaker = _tripped(clock)
    clock.advance(30.0)
    assert breaker.accepting()
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.accepting()


def test_a_successful_probe_closes_it(clock: FakeClock) -> None:
    breaker = _tripped(clock)
    clock.advance(30.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_probe_reopens_it_for_another_cooldown(clock: FakeClock) -> None:
    breaker = _tripped(clock)
    clock.advance(30.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(29.0)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_probe_that_never_reports_back_is_replaced_after_a_cooldown(clock: FakeClock) -> None:
    breaker = _tripped(clock)
    clock.advance(30.0)
    assert breaker.allow()
    clock.advance(30.0)
    assert breaker.allow()


def test_every_move_is_reported_once(clock: FakeClock) -> None:
    moves: list[BreakerState] = []
    breaker = _tripped(clock, moves)
    breaker.record_failure()  # already open: no new move
    clock.advance(30.0)
    breaker.allow()
    breaker.record_success()
    assert moves == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_nonsense_settings_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 30.0, clock)
    with pytest.raises(ValueError):
        CircuitBreaker(3, 0.0, clock)
