"""The template sync: each app's templates fetched from WeChat into the registry.

Worker processes run it: at start, every `[apps.NAME] template_sync_s` (skipped
when another process synced that app more recently than that), and soon after a
send is answered 40037 (invalid template_id: the account's templates changed).
Template messages come from get_all_private_template, subscribe kinds from
gettemplate (docs/wechat-protocol.md §2.1, §4.1). A kind whose fetch fails keeps its
templates and records the failure, which makes intake stop refusing unknown
template ids of that kind (see api/template_check.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wxgate.backends.base import StorageUnavailable
from wxgate.backends.templates import RegisteredTemplate, TemplateStore
from wxgate.clock import Clock
from wxgate.config import AppSettings
from wxgate.delivery.events import MessageSettled, WorkerEvent
from wxgate.observability import get_logger
from wxgate.wechat.client import AccountClient
from wxgate.wechat.errors import WeChatError
from wxgate.wechat.kinds import AccountKind, MessageKind
from wxgate.wechat.template_content import template_keys

INVALID_TEMPLATE_ID = 40037  # the catalogue's "invalid template_id": our registry is stale
RESYNC_AFTER_40037_S = 60.0  # at most one early sync per app in this long
FETCH_TIMEOUT_S = 30.0

_log = get_logger(__name__)

# What each kind of account lists, per kind of message.
SYNCED_KINDS = {  # what a sync fetches for each kind of account
    AccountKind.OFFICIAL_ACCOUNT: (MessageKind.TEMPLATE, MessageKind.SUBSCRIBE),
    AccountKind.MINIPROGRAM: (MessageKind.MINIPROGRAM,),
}


@dataclass(frozen=True, slots=True)
class KindSynced:
    """How one kind of one app's sync went: the templates stored, or the error."""

    app: str
    kind: MessageKind
    count: int | None  # None: the fetch failed
    error: str = ""


async def fetch_templates(client: AccountClient, kind: MessageKind) -> list[RegisteredTemplate]:
    """The account's templates of `kind`, as WeChat lists them now."""
    if kind is MessageKind.TEMPLATE:
        return [
            RegisteredTemplate(
                info.template_id,
                kind,
                info.title,
                info.content,
                tuple(template_keys(info.content)),
            )
            for info in await client.list_templates()
            if info.template_id
        ]
    return [
        RegisteredTemplate(t.template_id, kind, t.title, t.content, t.keys)
        for t in await client.get_subscribe_templates()
        if t.template_id
    ]


class TemplateSync:
    """Keeps the registry of every app current (see the module docstring); a worker
    listener too, so a 40037 asks for an early sync."""

    def __init__(
        self,
        store: TemplateStore,
        clients: Mapping[str, AccountClient],
        apps: Mapping[str, AppSettings],
        clock: Clock,
        *,
        on_synced: Callable[[KindSynced], None] | None = None,
    ) -> None:
        self._store = store
        self._clients = dict(clients)
        self._apps = dict(apps)
        self._clock = clock
        self._on_synced = on_synced
        self._wanted: set[str] = set()
        self._wake = asyncio.Event()
        self._early_at: dict[str, float] = {}

    async def sync_app(self, app: str) -> list[KindSynced]:
        """Fetch and store every kind of `app`'s templates now."""
        settings = self._apps[app]
        results = [await self._sync_kind(app, kind) for kind in SYNCED_KINDS[settings.kind]]
        for result in results:
            if self._on_synced is not None:
                self._on_synced(result)
        return results

    async def _sync_kind(self, app: str, kind: MessageKind) -> KindSynced:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                templates = await fetch_templates(self._clients[app], kind)
        except (WeChatError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            _log.warning("template sync failed", app=app, kind=kind.value, error=error)
            await self._store.sync_failed(app, kind, error[:200], self._clock.now())
            return KindSynced(app, kind, None, error)
        await self._store.replace(app, kind, templates, self._clock.now())
        _log.info("templates synced", app=app, kind=kind.value, count=len(templates))
        return KindSynced(app, kind, len(templates))

    def request(self, app: str) -> None:
        """Sync `app` soon (after a 40037), at most once per RESYNC_AFTER_40037_S."""
        now = self._clock.now()
        if app not in self._apps or now - self._early_at.get(app, -1e18) < RESYNC_AFTER_40037_S:
            return
        self._early_at[app] = now
        self._wanted.add(app)
        self._wake.set()

    def on_event(self, event: WorkerEvent) -> None:
        if isinstance(event, MessageSettled) and event.errcode == INVALID_TEMPLATE_ID:
            self.request(event.app)

    async def run(self) -> None:
        """Sync every app now, then as each one falls due or is asked for; until cancelled."""
        due: dict[str, float] = {}
        for app in self._apps:
            await self._sync_logged(app)
            due[app] = self._clock.now() + self._apps[app].template_sync_s
        while True:
            wait_s = max(0.0, min(due.values(), default=3600.0) - self._clock.now())
            await self._wait(wait_s)
            now = self._clock.now()
            for app in sorted(self._wanted | {a for a, at in due.items() if at <= now}):
                self._wanted.discard(app)
                if await self._synced_elsewhere(app, now):
                    due[app] = now + self._apps[app].template_sync_s
                    continue
                await self._sync_logged(app)
                due[app] = self._clock.now() + self._apps[app].template_sync_s

    async def _synced_elsewhere(self, app: str, now: float) -> bool:
        """Another process synced every kind of `app` within its interval (and this is
        not an early sync): this one need not ask WeChat again."""
        if app in self._early_at and now - self._early_at[app] < RESYNC_AFTER_40037_S:
            return False
        try:
            states = await self._store.sync_states(app)
        except StorageUnavailable:
            return False
        kinds = SYNCED_KINDS[self._apps[app].kind]
        interval = self._apps[app].template_sync_s
        return all(
            kind in states and now - states[kind].attempt_at < interval * 0.9 for kind in kinds
        )

    async def _sync_logged(self, app: str) -> None:
        try:
            await self.sync_app(app)
        except StorageUnavailable as exc:
            _log.warning("template sync not stored: storage unavailable", app=app, error=str(exc))

    async def _wait(self, delay_s: float) -> None:
        if self._wanted:
            return
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay_s))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
