"""The web console at /ui: server-rendered pages over what the API already does.

`install_console` adds the pages (wxgate/api/console/pages.py), their stylesheet and
script (console/static/, served by the gateway itself: no CDN, no outside font) and
the session signer (console/session.py) to an app. See docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from wxgate.api.auth import ApiKeys
from wxgate.api.console.activity import ActivityCache
from wxgate.api.console.pages import UI_PATH, Console, build_router, environment
from wxgate.api.console.session import SessionCodec, derive_secret
from wxgate.config import Settings
from wxgate.observability import register_secret

STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PATH = UI_PATH + "/assets"


def install_console(app: FastAPI, settings: Settings, keys: ApiKeys) -> None:
    """Serve the console on `app`; sign-in checks keys with `keys`, the API's own check."""
    configured = settings.server.console_secret.get_secret_value()
    if configured:
        register_secret(configured)  # scrubbed from any log line, like the other secrets
    console = Console(
        keys=keys,
        key_hashes=tuple(settings.server.api_keys),
        codec=SessionCodec(derive_secret(settings)),
        env=environment(),
        activity=ActivityCache(),
    )
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="console-assets")
    app.include_router(build_router(console))
