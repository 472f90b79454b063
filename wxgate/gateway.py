"""The gateway process: every part built from Settings, started and stopped in order.

Start-up: the listening socket (so a taken port fails before anything else
starts), storage, then the WeChat session and one token manager and client per
app, then the workers (role `all` or `worker`), then HTTP. Shut-down runs the
other way with a deadline: HTTP stops taking requests, workers stop leasing and
hand back what they hold, the WeChat session closes, storage flushes and closes.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import uvicorn
from fastapi import FastAPI

from wxgate.api.app import create_app
from wxgate.backends.base import Backend, StorageUnavailable
from wxgate.clock import Clock, SystemClock
from wxgate.config import NO_LISTENER, AppSettings, Role, ServerSettings, Settings
from wxgate.delivery.events import MetricsListener, WorkerListener
from wxgate.delivery.loop_lag import IntakeActivity
from wxgate.delivery.send_checks import send_checks
from wxgate.delivery.suppression import SuppressionRecorder
from wxgate.delivery.template_sync import KindSynced, TemplateSync
from wxgate.delivery.webhooks import WebhookDispatcher, webhook_targets
from wxgate.delivery.worker import AppRuntime, Worker
from wxgate.observability import Metrics, get_logger, register_secret
from wxgate.server import server_config
from wxgate.startup import STARTUP_FAILURES, startup_error
from wxgate.wechat.client import AccountClient, TokenFetcher, WeChatHttp
from wxgate.wechat.token import TokenManager
from wxgate.wechat.tokenstore import TokenStore

log = get_logger(__name__)


def make_backend(settings: Settings, clock: Clock) -> Backend:
    """The storage engine the settings name."""
    storage = settings.storage
    if storage.backend == "redis":
        from wxgate.backends.redis import RedisBackend

        return RedisBackend(
            storage.redis_url,
            prefix=storage.redis_prefix,
            retention_s=storage.retention_s,
            clock=clock,
            cluster=storage.redis_cluster,
            partitions=storage.redis_partitions,
        )
    from wxgate.backends.sqlite import SqliteBackend

    return SqliteBackend(
        storage.sqlite_path,
        synchronous=storage.sqlite_synchronous,
        group_commit_ms=storage.group_commit_ms,
        clock=clock,
    )


def token_manager(
    name: str,
    app: AppSettings,
    store: TokenStore,
    http: WeChatHttp,
    *,
    clock: Clock | None = None,
    on_fetch: Callable[[str, str], None] | None = None,
    on_foreign_refresh: Callable[[str], None] | None = None,
) -> TokenManager:
    """App `name`'s token manager as its settings say: credentials, mode, refresh margin,
    fetching from its own `api_base`. The gateway's and the CLI's token commands share it."""
    return TokenManager(
        name,
        app.appid,
        app.secret,
        store,
        TokenFetcher(http, app.api_base),
        mode=app.token_mode,
        refresh_margin_s=app.refresh_margin_s,
        clock=clock,
        on_fetch=on_fetch,
        on_foreign_refresh=on_foreign_refresh,
    )


def _report_worker_end(task: asyncio.Task[None]) -> None:
    """A worker that ends on its own (not by stop()) must not go unnoticed."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the delivery worker stopped", error=repr(task.exception()))


def register_settings_secrets(settings: Settings) -> None:
    """Tell the log scrubber every secret the settings hold."""
    for app in settings.apps.values():
        for secret in (app.secret, app.callback_token, app.encoding_aes_key, app.webhook_secret):
            register_secret(secret.get_secret_value())
    redis_password = urlparse(settings.storage.redis_url).password
    if redis_password:
        register_secret(redis_password)


@dataclass
class Gateway:
    """One wxgate process: storage, WeChat clients, workers and the HTTP app."""

    settings: Settings
    role: Role = "all"
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    backend: Backend | None = None
    http: WeChatHttp | None = None
    tokens: dict[str, TokenManager] = field(default_factory=dict)
    clients: dict[str, AccountClient] = field(default_factory=dict)
    worker: Worker | None = None
    app: FastAPI | None = None
    _worker_task: asyncio.Task[None] | None = None
    _purge_task: asyncio.Task[None] | None = None
    template_sync: TemplateSync | None = None
    _sync_task: asyncio.Task[None] | None = None
    webhooks: WebhookDispatcher | None = None
    _webhooks_task: asyncio.Task[None] | None = None
    intake: IntakeActivity = field(default_factory=IntakeActivity)  # marked by the API

    async def start(self) -> None:
        register_settings_secrets(self.settings)
        if self.backend is None:
            self.backend = make_backend(self.settings, self.clock)
        await self.backend.start()
        delivery = self.settings.delivery
        self.http = WeChatHttp(
            # every send slot needs a connection of its own, or the pool caps the window
            pool_size=max(delivery.pool_size, delivery.most_in_flight()),
            connect_timeout_s=delivery.connect_timeout_s,
            read_timeout_s=delivery.read_timeout_s,
        )
        await self.http.start()
        self._build_clients()
        if self.role in ("all", "worker"):
            self._start_worker()
        self.app = create_app(
            self.settings,
            self.backend,
            metrics=self.metrics,
            clock=self.clock,
            readiness=self._readiness,
            serve_api=self.role in ("all", "api"),
            intake=self.intake,
        )
        log.info(
            "gateway started",
            role=self.role,
            backend=self.backend.name,
            apps=sorted(self.settings.apps),
        )

    def _build_clients(self) -> None:
        assert self.http is not None and self.backend is not None
        store = self.backend.token_store()
        fetches = self.metrics.token_fetches
        for name, app in self.settings.apps.items():

            def on_fetch(endpoint: str, result: str, app_name: str = name) -> None:
                fetches.labels(app_name, endpoint, result).inc()

            manager = token_manager(
                name,
                app,
                store,
                self.http,
                clock=self.clock,
                on_fetch=on_fetch,
                on_foreign_refresh=self._count_foreign_refresh,
            )
            self.tokens[name] = manager
            self.clients[name] = AccountClient(self.http, manager, app.api_base)

    def _count_foreign_refresh(self, app: str) -> None:
        self.metrics.token_foreign_refresh.labels(app).inc()

    def _yield_to_intake(self) -> tuple[float, IntakeActivity] | None:
        """The worker yields to intake only where there is intake: `--role all`."""
        target_ms = self.settings.delivery.yield_to_intake_ms
        if self.role != "all" or target_ms <= 0:
            return None
        return target_ms / 1000, self.intake

    def _start_worker(self) -> None:
        assert self.backend is not None
        runtimes = {
            name: AppRuntime(name=name, settings=app, client=self.clients[name])
            for name, app in self.settings.apps.items()
        }
        self.worker = Worker(
            self.backend,
            runtimes,
            self.settings.delivery,
            clock=self.clock,
            listeners=self._listeners(),
            checks=send_checks(self.settings, self.backend, self.clock),
            yield_to_intake=self._yield_to_intake(),
        )
        self._worker_task = asyncio.create_task(self.worker.run(), name="wxgate-worker")
        self._worker_task.add_done_callback(_report_worker_end)
        self._purge_task = asyncio.create_task(self._purge_loop(), name="wxgate-purge")
        self._start_webhooks()

    def _start_webhooks(self) -> None:
        """The webhook dispatcher, beside the worker with a session of its own."""
        assert self.backend is not None
        self.webhooks = WebhookDispatcher(
            self.backend.webhook_outbox(),
            webhook_targets(self.settings),
            self.settings.webhooks,
            clock=self.clock,
            metrics=self.metrics,
        )
        self._webhooks_task = asyncio.create_task(self.webhooks.run(), name="wxgate-webhooks")
        self._webhooks_task.add_done_callback(_report_worker_end)

    def _listeners(self) -> list[WorkerListener]:
        """What hears the worker's events: metrics, and the features that act on outcomes."""
        return [MetricsListener(self.metrics), *self._registry_listeners()]

    def _registry_listeners(self) -> list[WorkerListener]:
        """The template sync (started here; a 40037 asks it for an early sync) and the
        suppression recorder (43004, 43101, 40003 suppress the recipient)."""
        assert self.backend is not None
        self.template_sync = TemplateSync(
            self.backend.template_store(),
            self.clients,
            self.settings.apps,
            self.clock,
            on_synced=self._count_template_sync,
        )
        self._sync_task = asyncio.create_task(self.template_sync.run(), name="wxgate-templates")
        return [self.template_sync, SuppressionRecorder(self.backend.suppression_store())]

    def _count_template_sync(self, synced: KindSynced) -> None:
        result = "failed" if synced.count is None else "ok"
        self.metrics.template_syncs.labels(synced.app, synced.kind.value, result).inc()

    async def _purge_loop(self) -> None:
        """Delete settled records past their retention, now and then (worker roles only)."""
        assert self.backend is not None
        storage = self.settings.storage
        while True:
            await self.clock.sleep(storage.purge_interval_s)
            try:
                purged = await self.backend.purge(self.clock.now() - storage.retention_s)
            except StorageUnavailable as exc:
                log.warning("purge skipped: storage unavailable", error=str(exc))
                continue
            if purged:
                log.info("purged settled records past retention", count=purged)
            await self._purge_webhooks(self.clock.now() - storage.retention_s)

    async def _purge_webhooks(self, older_than: float) -> None:
        assert self.backend is not None
        try:
            await self.backend.webhook_outbox().purge(sorted(self.settings.apps), older_than)
        except StorageUnavailable as exc:
            log.warning("webhook purge skipped: storage unavailable", error=str(exc))

    async def _readiness(self) -> dict[str, bool]:
        if self.worker is None:
            return {}
        return {"workers": self.worker.running}

    async def stop(self) -> None:
        """Workers first (they hand back their leases), then WeChat, then storage."""
        grace = self.settings.delivery.shutdown_grace_s
        if self._purge_task is not None:
            self._purge_task.cancel()
            await asyncio.gather(self._purge_task, return_exceptions=True)
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self.worker is not None:
            await self.worker.stop(grace)
        if self._worker_task is not None:
            await asyncio.gather(self._worker_task, return_exceptions=True)
        if self.webhooks is not None:
            await self.webhooks.stop(grace)
        if self._webhooks_task is not None:
            await asyncio.gather(self._webhooks_task, return_exceptions=True)
        for manager in self.tokens.values():
            await manager.close()
        if self.http is not None:
            await self.http.close()
        if self.backend is not None:
            await self.backend.close()
        log.info("gateway stopped", role=self.role)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ListenError(Exception):
    """The process cannot listen where its settings say; the message names the fix."""


def _port_setting(role: Role) -> str:
    if role == "worker":
        return "[server] worker_port (0: any free port, -1: none)"
    return "[server] port"


def listen_socket(
    server: ServerSettings, role: Role, host: str | None = None, port: int | None = None
) -> socket.socket | None:
    """The bound socket a process of `role` serves HTTP on (`host`/`port` override the
    settings), or None for a worker with `worker_port = -1`; ListenError if it cannot bind."""
    host = host or server.host
    port = server.listen_port(role) if port is None else port
    if port is None:
        return None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; change [server] host"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(
            f"cannot listen on {host}:{port}: {reason}; change {_port_setting(role)} or pass --port"
        ) from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _request_exit(server: uvicorn.Server) -> None:
    server.should_exit = True


async def serve(
    settings: Settings, role: Role = "all", host: str | None = None, port: int | None = None
) -> None:
    """Run a gateway until SIGINT/SIGTERM, HTTP on the configured (or given) address:
    `[server] port` for roles all and api, `worker_port` for a worker (see
    `ServerSettings.listen_port`). ListenError, before anything starts, if it is taken;
    StartupError, once whatever had started is stopped again, if the gateway cannot
    start (storage that will not open, a setting that fails when used)."""
    sock = listen_socket(settings.server, role, host, port)
    gateway = Gateway(settings, role=role)
    try:
        await gateway.start()
    except BaseException as exc:
        if sock is not None:
            sock.close()
        await gateway.stop()  # the WeChat session, the worker: whatever had started
        if isinstance(exc, STARTUP_FAILURES):
            raise startup_error(settings, exc) from exc
        raise
    if sock is None:
        log.info("serving no HTTP", role=role, setting=f"[server] worker_port = {NO_LISTENER}")
        await _until_stopped(gateway)
    else:
        log.info("listening", role=role, url=_url(sock))
        await _serve_http(gateway, sock)


async def _until_stopped(gateway: Gateway) -> None:
    """Wait for SIGINT or SIGTERM, then stop the gateway (a worker without HTTP)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _serve_http(gateway: Gateway, sock: socket.socket) -> None:
    """Serve the gateway's app on `sock` until a stop signal, then stop the gateway.

    uvicorn takes the first signal to stop HTTP, then raises it again for the handler
    it found in place. Without one of ours there, that is the default handler, which
    kills the process before the workers hand back their leases; ours only asks
    uvicorn to exit, so the gateway's ordered stop below still runs."""
    assert gateway.app is not None
    config = server_config(
        gateway.app,
        *sock.getsockname()[:2],  # uvicorn serves the socket given; these are for its logs
        grace_s=gateway.settings.delivery.shutdown_grace_s,
        settings=gateway.settings.server,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, _request_exit, server)
    # Start-up leaves ~88,000 long-lived objects (FastAPI, pydantic, the routes) that
    # every full collection scanned again: measured, two 43-47 ms stalls of the event
    # loop in 10 s of 2,000 requests/s, each a burst of requests over 10 ms. Frozen,
    # they are never scanned again; what the gateway allocates later is collected as usual.
    gc.freeze()
    try:
        await server.serve(sockets=[sock])
    finally:
        await gateway.stop()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
