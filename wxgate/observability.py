"""Logging and metrics set-up, in one place.

Logs are structlog: JSON when stderr is not a terminal, pretty on one. Every
event passes through `scrub`, which masks `access_token=` in any text and
replaces every registered secret (AppSecrets, tokens, API keys) wherever it
appears, so a careless log call cannot leak one. Metrics are prometheus-client
collectors on a registry owned by one `Metrics` object, with labels from
bounded sets only (app, category, errcode, outcome; never openid or message id).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_TOKEN_IN_URL = re.compile(r"(access_token=)[^&\s\"']+")
_MASK = "***"


class _SecretRegistry:
    """Strings that must never be printed; shared by every logger of the process."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        # Very short values would mask ordinary words; 6+ characters are real secrets.
        if len(value) < 6 or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str) -> str:
        text = _TOKEN_IN_URL.sub(r"\1" + _MASK, text)
        pattern = self._pattern
        return pattern.sub(_MASK, text) if pattern is not None else text


SECRETS = _SecretRegistry()


def register_secret(value: str) -> None:
    """Never print `value` in a log line from now on (AppSecrets, tokens, API keys)."""
    SECRETS.add(value)


def mask_url(url: str) -> str:
    """A URL with its access_token (and any registered secret) masked."""
    return SECRETS.scrub(url)


def scrub(text: str) -> str:
    return SECRETS.scrub(text)


def _scrub_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = SECRETS.scrub(value)
        elif isinstance(value, BaseException):
            event[key] = SECRETS.scrub(repr(value))
    return event


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Route structlog and the standard library's logging through one scrubbed renderer."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub_processor,
    ]
    structlog.configure(
        # filter_by_level first, so a line below the level costs one comparison, not
        # the whole chain (13.5 us per dropped debug line, measured on the delivery
        # path). Records from the standard library were filtered by logging already.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@functools.lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *values: str) -> Any:
    """`metric.labels(*values)`, kept: on the request path the label lookup (its checks,
    its lock) cost ~7 µs, and a counted request needs three. Bounded, as label values
    must be anyway (apps, routes, outcomes)."""
    return metric.labels(*values)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every wxgate metric, registered on one registry (a fresh one per gateway in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "wxgate_messages",
            "Messages by outcome (accepted, sent, delivered, rejected, retry, failed, dead).",
            ["app", "outcome"],
            registry=r,
        )
        # The same counts by kind (template, subscribe, miniprogram): a series of its own,
        # so queries and dashboards on wxgate_messages keep their labels.
        self.messages_by_kind = Counter(
            "wxgate_messages_by_kind",
            "Messages by kind (template, subscribe, miniprogram) and outcome.",
            ["app", "kind", "outcome"],
            registry=r,
        )
        self.wechat_errors = Counter(
            "wxgate_wechat_errors",
            "WeChat answers other than success, by errcode and category.",
            ["app", "errcode", "category"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "wxgate_send_seconds",
            "Time of one template/send call, token included.",
            ["app"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.intake_seconds = Histogram(
            "wxgate_intake_seconds",
            "Time from request to durable accept.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "wxgate_queue_depth", "Messages per status.", ["status"], registry=r
        )
        self.token_fetches = Counter(
            "wxgate_token_fetches",
            "Access-token fetches from WeChat, by endpoint and result.",
            ["app", "endpoint", "result"],
            registry=r,
        )
        self.token_foreign_refresh = Counter(
            "wxgate_token_foreign_refresh",
            "Times another system was seen refreshing an app's token (it retires ours).",
            ["app"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "wxgate_breaker_state",
            "Circuit breaker per app: 0 closed, 1 open, 2 half-open.",
            ["app"],
            registry=r,
        )
        self.app_paused = Gauge(
            "wxgate_app_paused",
            "1 while an app is paused (QUOTA until the daily reset, CONFIG until resumed).",
            ["app", "reason"],
            registry=r,
        )
        self.config_errors = Counter(
            "wxgate_config_errors",
            "CONFIG answers: an operator must fix the app and replay its dead letters.",
            ["app", "errcode"],
            registry=r,
        )
        self.callbacks = Counter(
            "wxgate_callbacks",
            "WeChat callback requests by result (applied, matched_by_recipient, "
            "duplicate, unknown_msgid, forbidden, replayed, malformed, unparseable, ignored, "
            "suppressed, lifted).",
            ["app", "result"],
            registry=r,
        )
        self.template_syncs = Counter(
            "wxgate_template_syncs",
            "Template registry syncs from WeChat, by kind and result (ok, failed).",
            ["app", "kind", "result"],
            registry=r,
        )
        self.callbacks_refused = Counter(
            "wxgate_callbacks_refused",
            "WeChat callback requests refused, by reason (unknown_app, no_callback_token, "
            "signature, msg_signature, encryption_required, decrypt, appid, xml, field, "
            "timestamp, other); app is _unknown for a URL naming no configured app.",
            ["app", "reason"],
            registry=r,
        )
        # Read from storage at each scrape (like wxgate_queue_depth): every process
        # shows the shared value, so dashboards take max by app.
        self.queue_oldest_age = Gauge(
            "wxgate_queue_oldest_age_seconds",
            "Age of the oldest message waiting to be sent (queued or sending), per app.",
            ["app"],
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "wxgate_webhook_backlog",
            "Status webhook events not delivered yet (dead ones apart), per app.",
            ["app"],
            registry=r,
        )
        self.webhook_oldest_age = Gauge(
            "wxgate_webhook_oldest_age_seconds",
            "Age of the oldest status webhook event not delivered yet, per app.",
            ["app"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "wxgate_webhook_attempts",
            "Status webhook posts by outcome (delivered, http_4xx, http_5xx, redirect, "
            "timeout, unreachable, no_endpoint).",
            ["app", "outcome"],
            registry=r,
        )
