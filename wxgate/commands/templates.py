"""`wxgate templates`: the template registry on the gateway host (sync, list, show).

Like the other operator commands it opens the configured storage directly; `sync`
also speaks to WeChat with the app's credentials, as a worker's sync would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wxgate.backends.base import Backend
from wxgate.backends.templates import RegisteredTemplate, TemplateSyncState
from wxgate.commands.storage import app_name as configured_app
from wxgate.commands.storage import console, fail, settings_of, when, with_backend

templates_app = typer.Typer(help="The template registry: sync, list, show.", no_args_is_help=True)

AppArg = Annotated[str | None, typer.Option("--app", help="App name (default: every app).")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./wxgate.toml if present)."),
]


@templates_app.command("sync")
def templates_sync(app_name: AppArg = None, config: ConfigOption = None) -> None:
    """Fetch the apps' templates from WeChat into the registry now."""
    from wxgate.clock import SystemClock
    from wxgate.delivery.template_sync import TemplateSync
    from wxgate.gateway import token_manager
    from wxgate.wechat.client import AccountClient, WeChatHttp

    settings = settings_of(config)
    names = [configured_app(settings, app_name)] if app_name else sorted(settings.apps)

    async def sync(backend: Backend) -> list[str]:
        lines = []
        async with WeChatHttp(pool_size=2) as http:
            for name in names:
                app = settings.apps[name]
                tokens = token_manager(name, app, backend.token_store(), http)
                try:
                    client = AccountClient(http, tokens, app.api_base)
                    syncer = TemplateSync(
                        backend.template_store(), {name: client}, {name: app}, SystemClock()
                    )
                    for result in await syncer.sync_app(name):
                        told = f"failed: {result.error}"
                        if result.count is not None:
                            told = f"{result.count} template(s)"
                        lines.append(f"{name} {result.kind.value}: {told}")
                finally:
                    await tokens.close()
        return lines

    for line in with_backend(settings, sync):
        console.print(escape(line))


def _sync_line(state: TemplateSyncState | None) -> str:

    if state is None:
        return "never synced"
    if state.last_ok:
        return f"synced {when(state.ok_at)}"
    return f"last sync failed {when(state.attempt_at)}: {state.error}"


@templates_app.command("list")
def templates_list(app_name: AppArg = None, config: ConfigOption = None) -> None:
    """Each app's registered templates and their keys, with how the last sync went."""

    settings = settings_of(config)
    names = [configured_app(settings, app_name)] if app_name else sorted(settings.apps)

    async def load(
        backend: Backend,
    ) -> list[tuple[str, list[RegisteredTemplate], dict[Any, TemplateSyncState]]]:
        store = backend.template_store()
        return [(n, await store.templates(n), await store.sync_states(n)) for n in names]

    for name, templates, states in with_backend(settings, load):
        syncs = "; ".join(f"{kind.value}: {_sync_line(state)}" for kind, state in states.items())
        table = Table(title=f"{name}: {len(templates)} template(s) ({syncs or 'never synced'})")
        for column in ("template_id", "kind", "title", "keys"):
            table.add_column(column)
        for template in templates:
            keys = ", ".join(f"{key.name}:{key.type or '-'}" for key in template.keys)
            table.add_row(
                Text(template.template_id), template.kind.value, Text(template.title), Text(keys)
            )
        console.print(table)


@templates_app.command("show")
def templates_show(
    template_id: Annotated[str, typer.Argument(help="The template_id.")],
    app_name: AppArg = None,
    config: ConfigOption = None,
) -> None:
    """One registered template as JSON: its content and each key's type."""
    from wxgate.api.routes.templates import template_json

    settings = settings_of(config)
    name = configured_app(settings, app_name)

    async def load(backend: Backend) -> list[RegisteredTemplate]:
        return await backend.template_store().templates(name)

    found = [t for t in with_backend(settings, load) if t.template_id == template_id]
    if not found:
        fail(f"{name}: no template {template_id!r} in the registry (wxgate templates sync?)", 1)
    console.print_json(orjson.dumps(template_json(found[0])).decode())
