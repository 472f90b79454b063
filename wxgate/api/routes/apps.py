"""The configured apps (WeChat accounts) as an operator sees them, and lifting a pause.

Never shows a secret: not the AppSecret, the callback token or the AES key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.audit import audited
from wxgate.api.auth import require_app
from wxgate.api.errors import NotFound
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import ok
from wxgate.api.state import api_state
from wxgate.backends.base import Pause
from wxgate.clock import rfc3339
from wxgate.config import AppSettings

router = APIRouter(prefix="/apps", tags=["apps"], route_class=JsonRoute)


def _pause_json(pause: Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {
        "reason": pause.reason,
        "since": rfc3339(pause.since),
        "until": rfc3339(pause.until),
        "errcode": pause.errcode,
        "note": pause.note,
    }


def _app_json(name: str, app: AppSettings, pause: Pause | None) -> dict[str, Any]:
    return {
        "app": name,
        "appid": app.appid,
        "api_base": app.api_base,
        "token_mode": app.token_mode,
        "rate_limit_per_s": app.rate_limit_per_s,
        "callback": {
            "configured": bool(app.callback_token.get_secret_value()),
            "safe_mode": bool(app.encoding_aes_key.get_secret_value()),
        },
        "pause": _pause_json(pause),
    }


@router.get("", summary="Configured apps and their pauses")
async def list_apps(request: Request) -> Response:
    state = api_state(request)
    pauses = await state.backend.pauses(state.clock.now())
    apps = [_app_json(name, app, pauses.get(name)) for name, app in state.settings.apps.items()]
    return ok({"items": apps})


@router.post("/{app}/resume", summary="Lift an app's pause (after fixing its config)")
async def resume_app(request: Request, app: str) -> Response:
    state = api_state(request)
    if app not in state.settings.apps:
        raise NotFound(f"no app {app!r}")
    require_app(app)
    resumed = await state.backend.resume_app(app, state.clock.now())
    await audited(state, "resume", app, "resumed" if resumed else "was not paused")
    return ok({"app": app, "resumed": resumed})
