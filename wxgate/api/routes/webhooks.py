"""Status webhooks: each app's backlog, the events waiting or dead, replaying dead ones
(`wxgate.webhook_operations`; the dispatcher itself runs in worker processes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from wxgate import webhook_operations
from wxgate.api.audit import audited
from wxgate.api.auth import app_for_listing
from wxgate.api.errors import InvalidRequest
from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import ok
from wxgate.api.state import api_state
from wxgate.backends.webhook_outbox import HookEntry, HookState, webhook_id
from wxgate.clock import rfc3339

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=JsonRoute)

MAX_EVENTS = 500
MAX_REPLAY_SEQS = 1000


class WebhookReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    app: str | None = Field(None, description="one app; every app when left out")
    seqs: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        max_length=MAX_REPLAY_SEQS,
        description="the events' `seq`s (with `app`); every dead event when left out",
    )


def _known_app(request: Request, app: str | None, loc: list[str | int]) -> list[str]:
    settings = api_state(request).settings
    app = app_for_listing(app)  # a key limited to some apps sees only them (auth.py)
    if app is None:
        return sorted(settings.apps)
    if app not in settings.apps:
        raise InvalidRequest.at(loc, f"unknown app {app!r}")
    return [app]


def _entry_json(entry: HookEntry) -> dict[str, Any]:
    event = entry.event
    return {
        "seq": event.seq,
        "webhook_id": webhook_id(event),
        "message_id": event.message_id,
        "app": event.app,
        "status": event.status.value,
        "at": rfc3339(event.at),
        "state": entry.state.value,
        "attempts": entry.attempts,
        "next_attempt_at": rfc3339(entry.next_attempt_at),
        "last_error": entry.last_error,
    }


@router.get("", summary="Each app's webhook backlog")
async def webhook_backlog(request: Request) -> Response:
    """Per app: events not delivered yet, dead ones, the oldest waiting's age, and whether
    the app has a webhook_url (the URL and secret are never shown)."""
    state = api_state(request)
    now = state.clock.now()
    backlog = await webhook_operations.webhook_backlog(state.backend, state.settings)
    items = [
        {
            "app": entry.app,
            "webhook_url_set": state.settings.apps[entry.app].webhook_url is not None,
            "pending": entry.pending,
            "dead": entry.dead,
            "oldest_age_s": round(entry.oldest_age(now), 3),
        }
        for entry in backlog
    ]
    return ok({"items": items})


@router.get("/events", summary="Webhook events waiting or dead")
async def webhook_events(
    request: Request,
    app: str,
    state: HookState = HookState.DEAD,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
) -> Response:
    """One app's undelivered events in `state` (`pending`, or `dead`), oldest first."""
    [name] = _known_app(request, app, ["query", "app"])
    api = api_state(request)
    wanted = HookState.DEAD if state is HookState.DEAD else HookState.PENDING
    entries = await webhook_operations.webhook_events(api.backend, name, wanted, limit)
    return ok({"items": [_entry_json(entry) for entry in entries]})


@router.post("/replay", summary="Replay dead webhook events")
async def replay_webhooks(request: Request, body: WebhookReplayIn) -> Response:
    """Dead events back to pending, due now, with their webhook ids unchanged."""
    if body.seqs is not None and body.app is None:
        raise InvalidRequest.at(["body", "app"], "seqs name events of one app: give it")
    apps = _known_app(request, body.app, ["body", "app"])
    state = api_state(request)
    replayed = await webhook_operations.replay_webhooks(
        state.backend, apps, body.seqs, state.clock.now()
    )
    await audited(state, "webhook.replay", f"webhooks of {','.join(apps)}", f"{replayed} replayed")
    return ok({"replayed": replayed})
