"""Operator queries and actions on status webhooks, shared by the API, the CLI, /metrics
and the console: the backlog per app, the events waiting or dead, replaying dead ones.

Storage answers for the apps it is asked about; these functions ask about every
configured app (a message may name its own callback_url in any of them).
"""

from __future__ import annotations

from collections.abc import Sequence

from wxgate.backends.base import Backend, StorageUnavailable
from wxgate.backends.webhook_outbox import HookBacklog, HookEntry, HookState
from wxgate.config import Settings
from wxgate.observability import Metrics, get_logger

log = get_logger(__name__)


async def webhook_backlog(backend: Backend, settings: Settings) -> list[HookBacklog]:
    """Every configured app's pending and dead counts and oldest pending event, by name."""
    return await backend.webhook_outbox().backlog(sorted(settings.apps))


async def webhook_events(
    backend: Backend, app: str, state: HookState, limit: int
) -> list[HookEntry]:
    """`app`'s undelivered events in `state`, oldest first."""
    return await backend.webhook_outbox().entries(app, state, limit)


async def replay_webhooks(
    backend: Backend, apps: Sequence[str], seqs: Sequence[str] | None, now: float
) -> int:
    """Dead events of `apps` (the named seqs, or all) back to pending; the count."""
    outbox = backend.webhook_outbox()
    return sum([await outbox.replay(app, seqs, now) for app in apps])


async def refresh_storage_gauges(
    backend: Backend, settings: Settings, metrics: Metrics, now: float
) -> None:
    """The gauges read from shared storage at each scrape: the oldest queued message and
    the webhook backlog per app. Storage being away keeps the values last seen."""
    apps = sorted(settings.apps)
    try:
        oldest = await backend.oldest_queued(apps)
        backlog = await backend.webhook_outbox().backlog(apps)
    except StorageUnavailable as exc:
        log.warning("storage gauges not refreshed", error=str(exc))
        return
    for app in apps:
        created = oldest.get(app)
        metrics.queue_oldest_age.labels(app).set(
            0.0 if created is None else max(0.0, now - created)
        )
    for entry in backlog:
        metrics.webhook_backlog.labels(entry.app).set(entry.pending)
        metrics.webhook_oldest_age.labels(entry.app).set(entry.oldest_age(now))
