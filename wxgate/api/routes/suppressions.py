"""/v1/suppressions: an app's suppression list: look a recipient up, list, import, lift.

A message to a suppressed recipient is answered 202 and stored `suppressed` without a
WeChat call (api/suppression_check.py); the worker, the delivery reports and the
follow events keep the list (delivery/suppression.py). An operator imports a list
(POST) and lifts an entry (DELETE), whatever its reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.audit import audited
from wxgate.api.auth import require_app
from wxgate.api.errors import InvalidRequest, NotFound
from wxgate.api.intake import resolve_app
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import ok
from wxgate.api.state import ApiState, api_state
from wxgate.backends.suppressions import Suppression, SuppressionReason
from wxgate.clock import rfc3339
from wxgate.wechat.fields import opaque_id_problem

router = APIRouter(prefix="/suppressions", tags=["suppressions"], route_class=JsonRoute)

MAX_PAGE = 1000
MAX_IMPORT = 10_000  # openids per POST; a bigger list is several requests


class SuppressionsIn(BaseModel):
    """A list of openids to suppress, with the reason to record (default: operator)."""

    model_config = ConfigDict(extra="forbid")

    app: str | None = None
    openids: list[str] = Field(min_length=1, max_length=MAX_IMPORT)
    reason: SuppressionReason = SuppressionReason.OPERATOR


def suppression_json(entry: Suppression) -> dict[str, Any]:
    return {
        "openid": entry.openid,
        "reason": entry.reason.value,
        "errcode": entry.errcode,
        "since": rfc3339(entry.since),
    }


def _app(state: ApiState, app: str | None, loc: list[str | int]) -> str:
    try:
        name = resolve_app(state.settings, app)
    except InvalidRequest as exc:
        raise InvalidRequest([{**error, "loc": loc} for error in exc.errors]) from None
    require_app(name)  # the key's apps (auth.py)
    return name


@router.get("", summary="An app's suppressed recipients, or whether one is")
async def list_suppressions(
    request: Request,
    app: str | None = None,
    touser: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> Response:
    """With `touser`, that recipient's entry (or none); else a page of entries, whose
    `next_cursor` is the `cursor` of the next page (null on the last one)."""
    state = api_state(request)
    name = _app(state, app, ["query", "app"])
    store = state.backend.suppression_store()
    if touser is not None:
        found = await store.find(name, [touser])
        items = [suppression_json(found[touser])] if touser in found else []
        return ok({"app": name, "items": items, "next_cursor": None})
    try:
        page = await store.page(name, limit, cursor)
    except ValueError as exc:
        raise InvalidRequest.at(["query", "cursor"], str(exc)) from None
    items = [suppression_json(entry) for entry in page.items]
    return ok({"app": name, "items": items, "next_cursor": page.next_cursor})


@router.post("", summary="Import a list of recipients to suppress")
async def import_suppressions(request: Request, body: SuppressionsIn) -> Response:
    """Each openid is suppressed with `reason` (an invalid_openid entry already there
    stays as it is); `added` counts those not suppressed before."""
    state = api_state(request)
    name = _app(state, body.app, ["body", "app"])
    problems = [
        {"loc": ["body", "openids", index], "msg": f"openid: {problem}"}
        for index, openid in enumerate(body.openids)
        if (problem := opaque_id_problem(openid)) is not None
    ]
    if problems:
        raise InvalidRequest(problems[:100])
    now = state.clock.now()
    entries = [Suppression(openid, body.reason, now) for openid in body.openids]
    added = await state.backend.suppression_store().add(name, entries)
    await audited(state, "suppression.add", name, f"{added} added, reason {body.reason.value}")
    return ok({"app": name, "added": added, "total": len(set(body.openids))})


@router.delete("/{app}/{openid}", summary="Lift one recipient's suppression")
async def lift_suppression(request: Request, app: str, openid: str) -> Response:
    state = api_state(request)
    if app not in state.settings.apps:
        raise NotFound(f"no app {app!r}")
    require_app(app)
    if not await state.backend.suppression_store().lift(app, openid):
        raise NotFound(f"{openid!r} is not suppressed for app {app!r}")
    await audited(state, "suppression.lift", f"{app} {openid}")
    return ok({"app": app, "openid": openid, "lifted": True})
