"""What a command group needs to reach a gateway's storage: its settings (or exit 2
naming each problem, never a secret), a backend opened for one call, and who is
acting, for the audit log."""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
import uvloop
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from wxgate.backends.base import Backend
from wxgate.clock import SystemClock
from wxgate.config import Settings, load_settings

_T = TypeVar("_T")
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    err_console.print(escape(message), style="red")
    raise typer.Exit(code)


def settings_of(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ValidationError as exc:
        for err in exc.errors():  # the input is left out: it may be a secret
            where = ".".join(str(p) for p in err["loc"])
            err_console.print(escape(f"config: {where}: {err['msg']}"), style="red")
        raise typer.Exit(2) from exc
    except (FileNotFoundError, ValueError) as exc:
        fail(f"config: {exc}", 2)


def with_backend(settings: Settings, use: Callable[[Backend], Awaitable[_T]]) -> _T:
    """Open the configured storage, `use` it, close it."""
    from wxgate.gateway import make_backend

    async def run() -> _T:
        backend = make_backend(settings, SystemClock())
        await backend.start()
        try:
            return await use(backend)
        finally:
            await backend.close()

    return uvloop.run(run())  # type: ignore[no-any-return]


def cli_actor() -> str:
    """Who the audit log names for an action taken on the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


console = Console(soft_wrap=True)


def app_name(settings: Settings, name: str | None) -> str:
    """The configured app a command names (or the only one), or exit 2 saying why."""
    try:
        return settings.app(name)[0]
    except KeyError as exc:
        fail(str(exc.args[0]) if name is None else f"no app {name!r}", 2)


def when(epoch: float | None) -> str:
    """A stored time as the tables show it (UTC); empty for none."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")
