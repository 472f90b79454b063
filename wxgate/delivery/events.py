"""What a worker tells the world: typed events, and the listener that turns them into metrics.

The worker emits an event after each durable settle, pause, resume and breaker move;
listeners (metrics, and features that act on outcomes, such as a suppression list)
subscribe instead of being called inline. A listener must not block: one that needs
I/O runs it on a task of its own. Metric labels come
from bounded sets only: app, outcome, category, errcode via `errcode_label`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wxgate.backends.base import Outcome, PauseReason, Settlement
from wxgate.delivery.breaker import BreakerState
from wxgate.observability import Metrics
from wxgate.wechat.errors import Category, errcode_label


@dataclass(frozen=True, slots=True)
class MessageSettled:
    """A settlement was durably written."""

    app: str
    outcome: Outcome
    category: Category | None  # the answer's category; None when nothing was sent
    errcode: int | None
    latency_s: float | None  # the send call, token included; None when nothing was sent
    settlement: Settlement | None = None  # what was written (its lease holds the record)


@dataclass(frozen=True, slots=True)
class AppPaused:
    app: str
    reason: PauseReason
    until: float | None
    errcode: int | None = None


@dataclass(frozen=True, slots=True)
class AppResumed:
    app: str
    reason: PauseReason  # the reason of the pause that ended


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    app: str
    state: BreakerState


WorkerEvent = MessageSettled | AppPaused | AppResumed | BreakerChanged


class WorkerListener(Protocol):
    def on_event(self, event: WorkerEvent) -> None: ...


_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}
_NOT_ERRORS = frozenset({None, Category.OK})


class MetricsListener:
    """Worker events into the prometheus metrics of `wxgate.observability.Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._handlers: dict[type, Callable[..., None]] = {
            MessageSettled: self._settled,
            AppPaused: self._paused,
            AppResumed: self._resumed,
            BreakerChanged: self._breaker,
        }

    def on_event(self, event: WorkerEvent) -> None:
        self._handlers[type(event)](event)

    @functools.cache  # noqa: B019  # one listener per worker; labels come from bounded sets
    def _counter(self, app: str, outcome: str) -> Any:
        return self._metrics.messages.labels(app, outcome)

    @functools.cache  # noqa: B019
    def _kind_counter(self, app: str, kind: str, outcome: str) -> Any:
        return self._metrics.messages_by_kind.labels(app, kind, outcome)

    @functools.cache  # noqa: B019
    def _latency(self, app: str) -> Any:
        return self._metrics.send_seconds.labels(app)

    def _settled(self, event: MessageSettled) -> None:
        # The labelled children are cached: .labels() cost ~6 us per settled message
        # on the delivery hot path (measured by the benchmark's profile).
        m = self._metrics
        self._counter(event.app, event.outcome.value).inc()
        if event.settlement is not None:
            kind = event.settlement.lease.record.kind.value
            self._kind_counter(event.app, kind, event.outcome.value).inc()
        if event.latency_s is not None:
            self._latency(event.app).observe(event.latency_s)
        if event.category in _NOT_ERRORS:
            return
        code = errcode_label(event.errcode)
        m.wechat_errors.labels(event.app, code, event.category).inc()
        if event.category is Category.CONFIG:
            m.config_errors.labels(event.app, code).inc()

    def _paused(self, event: AppPaused) -> None:
        self._metrics.app_paused.labels(event.app, event.reason).set(1)

    def _resumed(self, event: AppResumed) -> None:
        self._metrics.app_paused.labels(event.app, event.reason).set(0)

    def _breaker(self, event: BreakerChanged) -> None:
        self._metrics.breaker_state.labels(event.app).set(_BREAKER_GAUGE[event.state])
