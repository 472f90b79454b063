"""`wxgate webhooks`: a fresh signing secret, the backlog and events, replaying dead ones.

Reads storage directly, as `wxgate dlq` does (`wxgate.webhook_operations`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvloop
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wxgate import webhook_operations
from wxgate.backends.base import Backend
from wxgate.backends.webhook_outbox import HookBacklog, HookEntry, HookState, webhook_id
from wxgate.clock import SystemClock
from wxgate.config import Settings, load_settings
from wxgate.delivery.webhook_signing import new_secret

webhooks_app = typer.Typer(
    help="Status webhooks: secrets, backlog, dead events and their replay.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)
_T = TypeVar("_T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml if present)."),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        # One line, without the offending input (it may be a secret).
        err_console.print(escape(f"config: {type(exc).__name__}; `wxgate config check`"))
        raise typer.Exit(2) from exc


def _with_backend(settings: Settings, use: Callable[[Backend], Awaitable[_T]]) -> _T:
    from wxgate.gateway import make_backend

    async def run() -> _T:
        backend = make_backend(settings, SystemClock())
        await backend.start()
        try:
            return await use(backend)
        finally:
            await backend.close()

    return uvloop.run(run())


def _known(settings: Settings, app: str | None) -> list[str]:
    if app is None:
        return sorted(settings.apps)
    if app not in settings.apps:
        err_console.print(escape(f"unknown app {app!r}"), style="red")
        raise typer.Exit(2)
    return [app]


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


@webhooks_app.command("secret")
def secret() -> None:
    """Print a fresh webhook secret (whsec_...) for an app's webhook_secret setting."""
    print(new_secret())


@webhooks_app.command("list")
def list_events(
    app: Annotated[str | None, typer.Option("--app", help="One app (default: every app).")] = None,
    state: Annotated[HookState, typer.Option(help="pending or dead events.")] = HookState.DEAD,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
) -> None:
    """Each app's backlog, then its events in `--state` (dead by default), oldest first."""
    settings = _settings(config)
    apps = _known(settings, app)
    wanted = HookState.DEAD if state is HookState.DEAD else HookState.PENDING

    async def read(backend: Backend) -> tuple[list[HookBacklog], list[HookEntry]]:
        backlog = await backend.webhook_outbox().backlog(apps)
        events: list[HookEntry] = []
        for name in apps:
            events += await webhook_operations.webhook_events(backend, name, wanted, limit)
        return backlog, events

    backlog, events = _with_backend(settings, read)
    now = SystemClock().now()
    summary = Table("app", "pending", "dead", "oldest pending", title="webhook backlog")
    for entry in backlog:
        age = f"{entry.oldest_age(now):.0f} s" if entry.oldest_at is not None else ""
        summary.add_row(Text(entry.app), str(entry.pending), str(entry.dead), age)
    console.print(summary)
    table = Table(
        "app", "seq", "webhook-id", "status", "written", "attempts", "last error",
        title=f"{len(events)} {wanted.value} event(s)",
    )  # fmt: skip
    for item in events:
        event = item.event
        table.add_row(
            Text(event.app), Text(event.seq), Text(webhook_id(event)), event.status.value,
            _when(event.at), str(item.attempts), Text(item.last_error or ""),
        )  # fmt: skip
    console.print(table)


@webhooks_app.command("replay")
def replay(
    seqs: Annotated[
        list[str] | None, typer.Argument(help="Event seqs (from `list`) of the one --app.")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every dead event.")] = False,
    app: Annotated[str | None, typer.Option("--app", help="One app (default: every app).")] = None,
    config: ConfigOption = None,
) -> None:
    """Dead webhook events back to pending, posted again with the same webhook-id."""
    if not seqs and not replay_all:
        raise typer.BadParameter("give event seqs with --app, or --all")
    if seqs and app is None:
        raise typer.BadParameter("seqs name events of one app: give --app")
    settings = _settings(config)
    apps = _known(settings, app)
    now = SystemClock().now()
    chosen = seqs or None
    moved = _with_backend(
        settings, lambda b: webhook_operations.replay_webhooks(b, apps, chosen, now)
    )
    console.print(f"replayed {moved} webhook event(s)")
