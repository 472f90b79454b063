"""`wxgate keys`: API keys. `keys new --name N --apps A --scopes S` stores a scoped key
(every process sees it at once); `keys new` alone prints a key and the hash line for
the config file (a config key may do everything). `keys list` shows names, apps,
scopes, created and last used, never a hash; `keys revoke ID` ends a key within a
second everywhere. Each stored-key change is written to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wxgate.backends.api_keys import SCOPES
from wxgate.clock import SystemClock
from wxgate.commands.storage import cli_actor, fail, settings_of, with_backend
from wxgate.config import hash_api_key
from wxgate.keyring import KeyRequestError, make_key, new_api_key, revoke_key

app = typer.Typer(help="API keys.", no_args_is_help=True)
console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml if present)."),
]


def _split(value: str | None) -> list[str]:
    return [] if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("new")
def keys_new(
    name: Annotated[str | None, typer.Option(help="Who uses the key, e.g. billing.")] = None,
    apps: Annotated[
        str | None, typer.Option(help="Comma-separated apps it may use (default: every app).")
    ] = None,
    scopes: Annotated[
        str | None, typer.Option(help=f"Comma-separated, of {','.join(SCOPES)} (default: all).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make an API key. With --name: stored, limited to --apps and --scopes. Without:
    give the key to the client and put the hash line in the config (every scope)."""
    if name is None:
        if apps is not None or scopes is not None:
            fail("--apps and --scopes need --name: only a stored key has them", 2)
        key = new_api_key()
        console.print(f"API key (shown once, give it to the client):\n  {key}")
        console.print(escape(f'config line for [server] api_keys:\n  "{hash_api_key(key)}"'))
        return
    settings = settings_of(config)
    wanted_scopes = _split(scopes) or list(SCOPES)
    now = SystemClock().now()
    try:
        made = with_backend(
            settings,
            lambda backend: make_key(
                backend,
                name=name,
                apps=_split(apps),
                scopes=wanted_scopes,
                known_apps=list(settings.apps),
                actor=cli_actor(),
                now=now,
            ),
        )
    except KeyRequestError as exc:
        fail(str(exc), 2)
    stored = made.stored
    console.print(f"API key (shown once, give it to the client):\n  {made.key}")
    console.print(
        escape(
            f"id {stored.id}, name {stored.name}, apps {','.join(stored.apps) or '*'}, "
            f"scopes {','.join(stored.scopes)}"
        ),
        soft_wrap=True,
    )


@app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """Stored keys: id, name, apps, scopes, created, last used, revoked (never a hash)."""
    settings = settings_of(config)
    keys = with_backend(settings, lambda backend: backend.api_key_store().keys())
    table = Table(title=f"{len(keys)} stored key(s); config keys: {len(settings.server.api_keys)}")
    for column in ("id", "name", "apps", "scopes", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(
            key.id,
            Text(key.name),
            Text(",".join(key.apps) or "*"),
            ",".join(key.scopes),
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
    console.print(table)


@app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a stored key: refused by every process within a second."""
    settings = settings_of(config)
    now = SystemClock().now()
    revoked = with_backend(
        settings, lambda backend: revoke_key(backend, key_id, actor=cli_actor(), now=now)
    )
    if revoked is None:
        fail(f"no live key {key_id!r}", 1)
    console.print(escape(f"revoked {revoked.id} ({revoked.name})"))
