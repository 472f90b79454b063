"""`wxgate suppressions`: an app's suppression list on the gateway host (list, add, lift).

Opens the configured storage directly, like the other operator commands. `add`
imports openids (arguments, or a file with one per line) with the reason `operator`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wxgate.backends.audit import AuditEntry
from wxgate.backends.base import Backend
from wxgate.backends.suppressions import Suppression, SuppressionPage, SuppressionReason
from wxgate.commands.storage import app_name as configured_app
from wxgate.commands.storage import cli_actor, console, fail, settings_of, when, with_backend

suppressions_app = typer.Typer(
    help="The suppression list: list, add (import), lift.", no_args_is_help=True
)

AppOption = Annotated[
    str | None, typer.Option("--app", help="App name (optional when one app is configured).")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml if present)."),
]
IMPORT_CHUNK = 10_000


@suppressions_app.command("list")
def suppressions_list(
    app_name: AppOption = None,
    touser: Annotated[str | None, typer.Option(help="Only this recipient.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    config: ConfigOption = None,
) -> None:
    """Suppressed recipients of an app (the first `limit`), or whether one is."""

    settings = settings_of(config)
    name = configured_app(settings, app_name)

    async def load(backend: Backend) -> SuppressionPage:
        store = backend.suppression_store()
        if touser is not None:
            found = await store.find(name, [touser])
            return SuppressionPage([found[touser]] if touser in found else [], None)
        return await store.page(name, limit)

    page = with_backend(settings, load)
    more = " (more: use the API's cursor)" if page.next_cursor else ""
    table = Table(title=f"{name}: {len(page.items)} suppressed{more}")
    for column in ("openid", "reason", "errcode", "since"):
        table.add_column(column)
    for entry in page.items:
        errcode = "" if entry.errcode is None else str(entry.errcode)
        table.add_row(Text(entry.openid), entry.reason.value, errcode, when(entry.since))
    console.print(table)


@suppressions_app.command("add")
def suppressions_add(
    openids: Annotated[list[str] | None, typer.Argument(help="Openids to suppress.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A file of openids, one per line.")
    ] = None,
    app_name: AppOption = None,
    config: ConfigOption = None,
) -> None:
    """Suppress openids (reason `operator`); an invalid_openid entry stays as it is."""
    from wxgate.clock import SystemClock

    settings = settings_of(config)
    name = configured_app(settings, app_name)
    wanted = list(openids or [])
    if file is not None:
        wanted += [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not wanted:
        fail("no openids given (arguments, or --file)", 2)
    now = SystemClock().now()
    entries = [Suppression(openid, SuppressionReason.OPERATOR, now) for openid in wanted]

    async def add(backend: Backend) -> int:
        store = backend.suppression_store()
        added = 0
        for start in range(0, len(entries), IMPORT_CHUNK):
            added += await store.add(name, entries[start : start + IMPORT_CHUNK])
        detail = f"{added} added, reason {SuppressionReason.OPERATOR.value}"
        await backend.audit_log().record(
            AuditEntry(now, cli_actor(), "suppression.add", name, detail)
        )
        return added

    added = with_backend(settings, add)
    console.print(escape(f"{name}: {added} newly suppressed of {len(set(wanted))}"))


@suppressions_app.command("lift")
def suppressions_lift(
    openid: Annotated[str, typer.Argument(help="The openid to lift.")],
    app_name: AppOption = None,
    config: ConfigOption = None,
) -> None:
    """Take one recipient off the list, whatever its reason."""

    settings = settings_of(config)
    name = configured_app(settings, app_name)

    async def lift(backend: Backend) -> bool:
        if not await backend.suppression_store().lift(name, openid):
            return False
        entry = AuditEntry(time.time(), cli_actor(), "suppression.lift", f"{name} {openid}")
        await backend.audit_log().record(entry)
        return True

    lifted = with_backend(settings, lift)
    if not lifted:
        fail(f"{name}: {openid} is not suppressed", 1)
    console.print(escape(f"{name}: {openid} lifted"))
