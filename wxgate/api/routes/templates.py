"""/v1/templates: an app's template registry as its last sync stored it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.errors import InvalidRequest
from wxgate.api.intake import resolve_app
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import ok
from wxgate.api.state import api_state
from wxgate.backends.templates import RegisteredTemplate, TemplateSyncState
from wxgate.clock import rfc3339

router = APIRouter(prefix="/templates", tags=["templates"], route_class=JsonRoute)


def template_json(template: RegisteredTemplate) -> dict[str, Any]:
    return {
        "template_id": template.template_id,
        "kind": template.kind.value,
        "title": template.title,
        "content": template.content,
        "keys": [
            {
                "name": key.name,
                "type": key.type,
                "enum_values": None if key.enum_values is None else list(key.enum_values),
            }
            for key in template.keys
        ],
    }


def sync_json(state: TemplateSyncState) -> dict[str, Any]:
    return {
        "kind": state.kind.value,
        "last_ok": state.last_ok,
        "ok_at": rfc3339(state.ok_at),
        "attempt_at": rfc3339(state.attempt_at),
        "error": state.error or None,
        "count": state.count,
    }


@router.get("", summary="An app's templates, as its last template sync stored them")
async def list_templates(request: Request, app: str | None = None) -> Response:
    """Each template with the keys its content names and their types, and how the
    last sync of each kind went. `template_check` is the app's setting (null: enforce
    once a sync has succeeded, warn before)."""
    state = api_state(request)
    try:
        name = resolve_app(state.settings, app)
    except InvalidRequest as exc:
        raise InvalidRequest([{**error, "loc": ["query", "app"]} for error in exc.errors]) from None
    store = state.backend.template_store()
    templates = await store.templates(name)
    syncs = await store.sync_states(name)
    return ok(
        {
            "app": name,
            "template_check": state.settings.apps[name].template_check,
            "syncs": [sync_json(syncs[kind]) for kind in sorted(syncs)],
            "items": [template_json(template) for template in templates],
        }
    )
