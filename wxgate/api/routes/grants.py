"""/v1/grants: the grant ledger of subscribe messages, as far as this gateway has heard
(backends/grants.py, docs/subscribe.md)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.errors import InvalidRequest
from wxgate.api.intake import resolve_app
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import ok
from wxgate.api.state import api_state
from wxgate.backends.grants import Grant
from wxgate.clock import rfc3339

router = APIRouter(prefix="/grants", tags=["grants"], route_class=JsonRoute)


def grant_json(grant: Grant) -> dict[str, object]:
    return {**grant.to_json(), "updated_at": rfc3339(grant.updated_at)}


@router.get("", summary="The subscribe templates one user granted an app")
async def list_grants(request: Request, touser: str, app: str | None = None) -> Response:
    """One item per template: `one_time` sends left and `long_term`. Only grants whose
    popup events reached this gateway are known."""
    state = api_state(request)
    try:
        name = resolve_app(state.settings, app)
    except InvalidRequest as exc:
        raise InvalidRequest.at(["query", "app"], exc.errors[0]["msg"]) from None
    grants = await state.backend.grant_store().list(name, touser)
    return ok({"app": name, "touser": touser, "items": [grant_json(g) for g in grants]})
