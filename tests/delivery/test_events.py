"""Worker events become prometheus metrics, with bounded labels only."""

from __future__ import annotations

from prometheus_client import generate_latest

from wxgate.backends.base import Outcome, PauseReason
from wxgate.delivery.breaker import BreakerState
from wxgate.delivery.events import (
    AppPaused,
    AppResumed,
    BreakerChanged,
    MessageSettled,
    MetricsListener,
)
from wxgate.observability import Metrics
from wxgate.wechat.errors import Category


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_settled_message_counts_its_outcome_and_latency() -> None:
    metrics = Metrics()
    MetricsListener(metrics).on_event(MessageSettled("shop", Outcome.SENT, Category.OK, None, 0.02))
    assert _value(metrics, "wxgate_messages_total", app="shop", outcome="sent") == 1
    assert _value(metrics, "wxgate_send_seconds_count", app="shop") == 1
    assert (
        _value(metrics, "wxgate_wechat_errors_total", app="shop", errcode="none", category="OK")
        is None
    )


def test_a_wechat_error_is_counted_by_errcode_and_category() -> None:
    metrics = Metrics()
    MetricsListener(metrics).on_event(
        MessageSettled("shop", Outcome.RETRY, Category.TRANSIENT, -1, 0.01)
    )
    assert (
        _value(
            metrics, "wxgate_wechat_errors_total", app="shop", errcode="-1", category="TRANSIENT"
        )
        == 1
    )
    assert _value(metrics, "wxgate_messages_total", app="shop", outcome="retry") == 1


def test_an_errcode_outside_the_catalogue_is_labelled_other() -> None:
    metrics = Metrics()
    MetricsListener(metrics).on_event(
        MessageSettled("shop", Outcome.RETRY, Category.UNKNOWN, 987_654, 0.01)
    )
    assert (
        _value(
            metrics, "wxgate_wechat_errors_total", app="shop", errcode="other", category="UNKNOWN"
        )
        == 1
    )
    assert b"987654" not in generate_latest(metrics.registry)


def test_a_config_answer_also_counts_as_a_config_error() -> None:
    metrics = Metrics()
    MetricsListener(metrics).on_event(
        MessageSettled("shop", Outcome.DEAD, Category.CONFIG, 40125, 0.01)
    )
    assert _value(metrics, "wxgate_config_errors_total", app="shop", errcode="40125") == 1


def test_a_release_without_a_send_observes_no_latency() -> None:
    metrics = Metrics()
    MetricsListener(metrics).on_event(MessageSettled("shop", Outcome.RELEASE, None, None, None))
    assert _value(metrics, "wxgate_messages_total", app="shop", outcome="release") == 1
    assert _value(metrics, "wxgate_send_seconds_count", app="shop") is None


def test_pause_and_resume_move_the_paused_gauge() -> None:
    metrics = Metrics()
    listener = MetricsListener(metrics)
    listener.on_event(AppPaused("shop", PauseReason.QUOTA, 1.0, 45009))
    assert _value(metrics, "wxgate_app_paused", app="shop", reason="QUOTA") == 1
    listener.on_event(AppResumed("shop", PauseReason.QUOTA))
    assert _value(metrics, "wxgate_app_paused", app="shop", reason="QUOTA") == 0


def test_breaker_moves_set_the_breaker_gauge() -> None:
    metrics = Metrics()
    listener = MetricsListener(metrics)
    listener.on_event(BreakerChanged("shop", BreakerState.OPEN))
    assert _value(metrics, "wxgate_breaker_state", app="shop") == 1
    listener.on_event(BreakerChanged("shop", BreakerState.HALF_OPEN))
    assert _value(metrics, "wxgate_breaker_state", app="shop") == 2
    listener.on_event(BreakerChanged("shop", BreakerState.CLOSED))
    assert _value(metrics, "wxgate_breaker_state", app="shop") == 0
