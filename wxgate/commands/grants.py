"""`wxgate grants`: the grant ledger of subscribe messages, read from storage
(backends/grants.py, docs/subscribe.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from wxgate.commands.storage import app_name as configured_app
from wxgate.commands.storage import console, settings_of, when, with_backend

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

    settings = settings_of(config)
    name = configured_app(settings, app_name)
    grants = with_backend(settings, lambda b: b.grant_store().list(name, touser))
    table = Table(title=f"grants of {touser} in {name}")
    for column in ("template_id", "one-time sends", "long-term", "updated"):
        table.add_column(column)
    for grant in grants:
        table.add_row(
            Text(grant.template_id),
            str(grant.one_time),
            "yes" if grant.long_term else "no",
            when(grant.updated_at),
        )
    console.print(table)
    if not grants:
        console.print(Text("no grant known (the ledger only knows popups that reached it)"))
