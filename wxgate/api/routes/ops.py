"""Operations: liveness, readiness and Prometheus metrics (outside /v1, open by default).

/metrics is behind the API key (ApiKeyMiddleware) only when `metrics_require_key`
is set; the queue-depth gauge is refreshed from the backend at each scrape.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.routing import JsonRoute
from wxgate.api.schemas import failure, ok
from wxgate.api.state import ApiState, api_state
from wxgate.backends.base import StorageUnavailable
from wxgate.observability import get_logger
from wxgate.webhook_operations import refresh_storage_gauges

router = APIRouter(tags=["operations"], route_class=JsonRoute)

PING_TIMEOUT_S = 2.0
_log = get_logger("wxgate.api")


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> Response:
    return ok({"status": "alive"})


async def _backend_ready(state: ApiState) -> bool:
    try:
        return await asyncio.wait_for(state.backend.ping(), PING_TIMEOUT_S)
    except Exception as exc:  # whatever broke, the answer is "not ready", with the reason logged
        _log.warning("backend_not_ready", error=repr(exc))
        return False


async def _storage_writable(state: ApiState) -> bool:
    """Storage that answers may still refuse writes (a full disk): not ready either, so a
    balancer sends intake elsewhere; ready again once a write succeeds."""
    try:
        return await asyncio.wait_for(state.backend.writable(), PING_TIMEOUT_S)
    except Exception as exc:  # as for the backend check: "not ready", the reason logged
        _log.warning("storage_not_writable", error=repr(exc))
        return False


async def _extra_checks(state: ApiState) -> dict[str, bool]:
    if state.readiness is None:
        return {}
    try:
        return await state.readiness()
    except Exception as exc:  # a check that cannot answer is a check that failed
        _log.warning("readiness_check_failed", error=repr(exc))
        return {"readiness": False}


@router.get(
    "/readyz", summary="Readiness: the backend answers and takes writes, and the workers run"
)
async def readyz(request: Request) -> Response:
    state = api_state(request)
    checks = {"backend": await _backend_ready(state)}
    checks["storage_writable"] = checks["backend"] and await _storage_writable(state)
    checks.update(await _extra_checks(state))
    data = {"ready": all(checks.values()), "checks": checks}
    if not data["ready"]:
        return failure(503, 50300, "not ready", data)
    return ok(data)


@router.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(request: Request) -> Response:
    state = api_state(request)
    try:
        counts = await state.backend.counts()
    except StorageUnavailable as exc:
        # Metrics matter most while storage is away: serve them, the queue depth as last seen.
        _log.warning("queue_depth_not_refreshed", error=str(exc))
    else:
        for status, count in counts.items():
            state.metrics.queue_depth.labels(status=str(status)).set(count)
    await refresh_storage_gauges(state.backend, state.settings, state.metrics, state.clock.now())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
