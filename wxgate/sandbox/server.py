"""The sandbox server: binds the HTTP protocol to the simulated WeChat, starts and
stops it in a fixed order, and runs it as a process on uvloop (`run`).

Start: callback delivery, then the listening socket. Stop: the listening socket,
then every open connection (hung ones included), then callback delivery.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from types import TracebackType

import uvloop

from wxgate.clock import Clock
from wxgate.observability import configure_logging, get_logger
from wxgate.sandbox.callbacks import CallbackDispatcher
from wxgate.sandbox.clock import OffsetClock
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_SECRET,
    DEFAULT_ORIGINAL_ID,
    DEFAULT_SECRET,
    DEFAULT_TOKEN_TTL_S,
    CallbackFormat,
    CallbackMode,
    SandboxAccount,
    default_account,
    default_miniprogram,
    load_accounts,
)
from wxgate.sandbox.errors import SandboxConfigError
from wxgate.sandbox.faults import FaultDice
from wxgate.sandbox.http import HttpConnection
from wxgate.sandbox.routes import Router
from wxgate.sandbox.stalls import LoopStalls
from wxgate.sandbox.subscribe import SubscribeDesk
from wxgate.sandbox.wechat import Push, SimulatedWeChat

# The public face of the sandbox: the server, how to run it, and the default accounts.
__all__ = [
    "DEFAULT_APPID",
    "DEFAULT_CALLBACK_TOKEN",
    "DEFAULT_ENCODING_AES_KEY",
    "DEFAULT_MINI_APPID",
    "DEFAULT_MINI_SECRET",
    "DEFAULT_ORIGINAL_ID",
    "DEFAULT_SECRET",
    "SandboxAccount",
    "SandboxServer",
    "run",
]

log = get_logger(__name__)


def _with_default_accounts(
    accounts: list[SandboxAccount] | None, defaults: list[SandboxAccount]
) -> list[SandboxAccount]:
    """The default accounts (each unless `accounts` redefine its appid), then `accounts`."""
    extra = list(accounts or [])
    configured = {a.appid for a in extra}
    return [*(a for a in defaults if a.appid not in configured), *extra]


class SandboxServer:
    """A local WeChat on `host:port` (port 0 picks a free one; `.port` has it after start).

    `callback_url` and `callback_mode` configure the default official account;
    `miniprogram_callback_url` and `miniprogram_callback_format` the default mini program
    (which shares `callback_mode`)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: list[SandboxAccount] | None = None,
        callback_url: str | None = None,
        callback_mode: CallbackMode = "plain",
        miniprogram_callback_url: str | None = None,
        miniprogram_callback_format: CallbackFormat = "xml",
        token_ttl_s: int = DEFAULT_TOKEN_TTL_S,
        callback_delay_s: float = 0.0,
        clock: Clock | None = None,
        dice: FaultDice | None = None,
    ) -> None:
        if token_ttl_s <= 0:
            raise SandboxConfigError("token_ttl_s must be positive")
        self.host = host
        self.port = port
        defaults = [
            default_account(callback_url, callback_mode),
            default_miniprogram(
                miniprogram_callback_url, callback_mode, miniprogram_callback_format
            ),
        ]
        self.accounts = _with_default_accounts(accounts, defaults)
        self.clock = OffsetClock(clock)
        self.callbacks: CallbackDispatcher | None = None
        self.stalls = LoopStalls(self.clock)
        self._callback_delay_s = callback_delay_s
        self.wechat = SimulatedWeChat(
            self.accounts,
            clock=self.clock,
            token_ttl_s=token_ttl_s,
            report=self._report,
            dice=dice,
        )
        self.subscribe = SubscribeDesk(self.wechat)
        self._server: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _report(self, push: Push) -> None:
        if self.callbacks is not None:
            self.callbacks.submit(push)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self.callbacks = CallbackDispatcher(
            self.wechat.stats, self.clock, delay_s=self._callback_delay_s
        )
        await self.callbacks.start()
        self.stalls.start()
        router = Router(self.wechat, self.subscribe, self.callbacks, self.clock, self.stalls)
        dispatch, connections = router.dispatch, self._connections
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(dispatch, connections),
            self.host,
            self.port,
            reuse_address=True,
            backlog=2048,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for connection in list(self._connections):
                connection.close()
            await server.wait_closed()
        await self.stalls.stop()
        if self.callbacks is not None:
            await self.callbacks.stop()
            self.callbacks = None

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _write_port_file(path: Path, port: int) -> None:
    # Written whole and renamed into place, so a reader never sees a partial number.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


async def _serve(server: SandboxServer, port_file: Path | None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with server:
        if port_file is not None:
            _write_port_file(port_file, server.port)
        log.info(
            "sandbox listening",
            url=server.base_url,
            appids=[account.appid for account in server.accounts],
            callback_urls=sum(1 for account in server.accounts if account.callback_url),
        )
        await stopping.wait()
        log.info("sandbox stopping")


def run(
    host: str = "127.0.0.1",
    port: int = 8081,
    callback_url: str | None = None,
    config_path: Path | None = None,
    callback_mode: CallbackMode = "plain",
    port_file: Path | None = None,
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S,
) -> None:
    """Serve the sandbox on uvloop until SIGINT or SIGTERM."""
    configure_logging()
    accounts = load_accounts(config_path) if config_path is not None else None
    server = SandboxServer(
        host=host,
        port=port,
        accounts=accounts,
        callback_url=callback_url,
        callback_mode=callback_mode,
        token_ttl_s=token_ttl_s,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(server, port_file))
