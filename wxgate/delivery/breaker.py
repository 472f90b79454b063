"""The per-app circuit breaker: stop sending to an app while WeChat keeps failing it.

A small state machine on an injected clock: closed until `failures` TRANSIENT
answers in a row, then open (the worker leases none of the app's messages, so an
outage does not burn every message's attempts), then half-open after `cooldown_s`,
when one probe goes out; its success closes the breaker, its failure re-opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from wxgate.clock import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Clock,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be >= 1 and cooldown_s > 0")
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe went out

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock.monotonic() - self._opened_at >= self._cooldown_s
        ):
            self._probe_at = None
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def accepting(self) -> bool:
        """Whether the worker should lease this app's messages now."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probe_out()

    def allow(self) -> bool:
        """Whether one send may go out now; in half-open, True once (the probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_out():
            return False
        self._probe_at = self._clock.monotonic()
        return True

    def record_success(self) -> None:
        """WeChat gave a definite answer: it is up."""
        self._failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._probe_at = None
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A TRANSIENT answer (busy, timeout, 5xx, reset)."""
        state = self.state
        if state is BreakerState.OPEN:
            return
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock.monotonic()
            self._probe_at = None
            self._move(BreakerState.OPEN)

    def _probe_out(self) -> bool:
        # A probe that never reported back (its worker stopped) must not hold the
        # breaker half-open forever: after one cool-down another probe may go.
        if self._probe_at is None:
            return False
        return self._clock.monotonic() - self._probe_at < self._cooldown_s

    def _move(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
