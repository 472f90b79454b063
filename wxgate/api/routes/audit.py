"""GET /v1/audit: the audit log of operator actions, newest first (scope `admin`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import Envelope, ok
from wxgate.api.state import api_state
from wxgate.clock import rfc3339

router = APIRouter(tags=["audit"], route_class=JsonRoute)

MAX_ENTRIES = 1000


class AuditEntryOut(BaseModel):
    at: str
    actor: str
    action: str
    target: str
    detail: str


class AuditPage(BaseModel):
    items: list[AuditEntryOut]


@router.get("/audit", response_model=Envelope[AuditPage], summary="The audit log, newest first")
async def audit_log(
    request: Request,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100,
) -> Response:
    """Replays, resumes, cancels, suppression and key changes: who (the key's name),
    when, and what each touched."""
    entries = await api_state(request).backend.audit_log().entries(limit, action)
    items = [
        {
            "at": rfc3339(e.at),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": e.detail,
        }
        for e in entries
    ]
    return ok({"items": items})
