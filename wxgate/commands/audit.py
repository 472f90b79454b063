"""`wxgate audit`: the audit log of operator actions (replays, resumes, cancels,
suppression and key changes), newest first: when, who (the key's name), what, on what."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from wxgate.commands.storage import settings_of, with_backend

console = Console()


def audit(
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. replay.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries.")] = 50,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml)."),
    ] = None,
) -> None:
    """The audit log, newest first."""
    settings = settings_of(config)
    entries = with_backend(settings, lambda backend: backend.audit_log().entries(limit, action))
    table = Table(title=f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}")
    for column in ("at (UTC)", "actor", "action", "target", "detail"):
        table.add_column(column)
    for entry in entries:
        at = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            at, Text(entry.actor), Text(entry.action), Text(entry.target), Text(entry.detail)
        )
    console.print(table)
