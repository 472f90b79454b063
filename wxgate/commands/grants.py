"""`wxgate grants`: the grant ledger of subscribe messages, read from storage
(backends/grants.py, docs/subscribe.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvloop
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wxgate.backends.grants import Grant
from wxgate.clock import SystemClock
from wxgate.config import Settings, load_settings

app = typer.Typer(help="The grant ledger of subscribe messages.", no_args_is_help=True)


@app.command("list")
def grants_list(
    touser: Annotated[str, typer.Option(help="The user's openid.")],
    app_name: Annotated[
        str | None, typer.Option("--app", help="App name (optional when one app is configured).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
) -> None:
    """The templates one user granted an app: one-time sends left, long-term or not.
    Only grants whose popup events reached this gateway are known."""
    try:
        settings = load_settings(config)
        name = settings.app(app_name)[0]
    except (FileNotFoundError, ValueError, KeyError) as exc:
        Console(stderr=True).print(Text(f"config: {exc}", style="red"))
        raise typer.Exit(2) from exc
    grants = uvloop.run(_grants(settings, name, touser))
    console = Console()
    table = Table(title=f"grants of {touser} in {name}")
    for column in ("template_id", "one-time sends", "long-term", "updated"):
        table.add_column(column)
    for grant in grants:
        table.add_row(
            Text(grant.template_id),
            str(grant.one_time),
            "yes" if grant.long_term else "no",
            _when(grant.updated_at),
        )
    console.print(table)
    if not grants:
        console.print(Text("no grant known (the ledger only knows popups that reached it)"))


async def _grants(settings: Settings, app: str, touser: str) -> list[Grant]:
    from wxgate.gateway import make_backend  # the gateway module is heavy; only when run

    backend = make_backend(settings, SystemClock())
    await backend.start()
    try:
        return await backend.grant_store().list(app, touser)
    finally:
        await backend.close()


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""
