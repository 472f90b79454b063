"""The HTTP face of the gateway: `create_app` wires routes, middleware and error answers.

The caller owns the backend's life cycle and the workers; this module only builds
the FastAPI app around them. Every answer, refusals included, is the envelope
`{"code", "msg", "data"}`: FastAPI's own validation and HTTP errors are mapped
onto it here, and anything unhandled becomes 50000 in ErrorLogMiddleware.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from wxgate.api.auth import ApiKeyMiddleware, ApiKeys, document_api_keys
from wxgate.api.backpressure import Backpressure
from wxgate.api.console import install_console
from wxgate.api.dedupe import Dedupe
from wxgate.api.docs_ui import install_docs
from wxgate.api.errors import ApiError
from wxgate.api.fastpath import MessageFastPath
from wxgate.api.intake_checks import intake_checks
from wxgate.api.middleware import BodyLimitMiddleware, ErrorLogMiddleware, TraceMiddleware
from wxgate.api.routes import (
    apps,
    audit,
    batches,
    callback,
    cancels,
    dead_letters,
    grants,
    messages,
    ops,
    suppressions,
    templates,
    webhooks,
)
from wxgate.api.schemas import JsonResponse, failure
from wxgate.api.state import ApiState, Readiness
from wxgate.backends.base import Backend, StorageUnavailable
from wxgate.clock import Clock, SystemClock
from wxgate.config import Settings
from wxgate.delivery.loop_lag import IntakeActivity
from wxgate.observability import Metrics, get_logger, register_secret
from wxgate.wechat.callback import CallbackCodec

_SYSTEM_CLOCK = SystemClock()  # stateless, so one instance serves as the default
STORAGE_RETRY_AFTER_S = 1
_log = get_logger("wxgate.api")


def _field_error(error: dict[str, Any]) -> dict[str, Any]:
    msg = str(error.get("msg", "invalid"))
    detail = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and detail:
        msg = f"{msg}: {detail}"
    return {"loc": list(error.get("loc", ())), "msg": msg}


async def _on_api_error(_request: Request, exc: ApiError) -> Response:
    return failure(exc.status, exc.code, exc.msg, exc.data, exc.headers)


async def _on_validation_error(_request: Request, exc: RequestValidationError) -> Response:
    errors = [_field_error(error) for error in exc.errors()]
    return failure(400, 40000, "invalid request", {"errors": errors})


async def _on_storage_unavailable(_request: Request, exc: StorageUnavailable) -> Response:
    # Storage is away for a moment (a Redis restart, SQLite busy past its timeout) and
    # nothing of the call took effect: 503, so the client retries (with the same
    # idempotency key) and WeChat re-sends a callback, instead of a 500.
    _log.warning("storage_unavailable", error=str(exc))
    retry = {"Retry-After": str(STORAGE_RETRY_AFTER_S)}
    data = {"retry_after_s": STORAGE_RETRY_AFTER_S}
    return failure(503, 50300, "storage unavailable; retry later", data, retry)


async def _on_http_error(_request: Request, exc: HTTPException) -> Response:
    data = None
    if exc.status_code == 400:  # e.g. a body that is not UTF-8 or nests too deep
        data = {"errors": [{"loc": ["body"], "msg": str(exc.detail)}]}
    return failure(exc.status_code, exc.status_code * 100, str(exc.detail), data, exc.headers)


def _codecs(settings: Settings) -> dict[str, CallbackCodec]:
    codecs = {}
    for name, app in settings.apps.items():
        token = app.callback_token.get_secret_value()
        if token:
            key = app.encoding_aes_key.get_secret_value()
            register_secret(token)
            register_secret(key)
            codecs[name] = CallbackCodec(token, app.appid, key)
    return codecs


def _include_routes(app: FastAPI, serve_api: bool) -> None:
    # One flat level of routers: this FastAPI resolves nested includes on every request,
    # which cost ~100 us of route matching per request (measured).
    if serve_api:
        for module in (batches, messages, dead_letters, apps, cancels, audit, grants, webhooks):
            app.include_router(module.router, prefix="/v1")
        for module in (templates, suppressions):
            app.include_router(module.router, prefix="/v1")
        app.include_router(callback.router)
    app.include_router(ops.router)


def _document_api_keys(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_api_keys(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook


def create_app(
    settings: Settings,
    backend: Backend,
    *,
    metrics: Metrics,
    clock: Clock = _SYSTEM_CLOCK,
    readiness: Readiness | None = None,
    serve_api: bool = True,
    intake: IntakeActivity | None = None,
) -> FastAPI:
    """The API over `backend`; `readiness` adds checks (e.g. {"workers": True}) to /readyz.

    `intake` is marked by every intake request (a worker in the same process yields
    to it, delivery/loop_lag.py). With `serve_api=False` (a worker-only process) only
    /healthz, /readyz and /metrics are served, for the orchestrator's probes and
    Prometheus."""
    server = settings.server
    app = FastAPI(
        title="wxgate",
        summary="A reliable WeChat Official Account template-message gateway",
        default_response_class=JsonResponse,
        docs_url=None,  # install_docs serves /docs and /redoc without a CDN
        redoc_url=None,
        # FastAPI's OpenTelemetry spans and metrics: the gateway has its own trace ids
        # and Prometheus metrics, and asking for the global providers on every request
        # cost ~10 µs of the ~200 an intake request takes.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        exception_handlers={
            ApiError: _on_api_error,
            RequestValidationError: _on_validation_error,
            HTTPException: _on_http_error,
            StorageUnavailable: _on_storage_unavailable,
        },
    )
    keys = ApiKeys(
        server.api_keys,
        server.rate_limit_per_key_per_s,
        server.rate_limit_burst,
        backend,
    )
    app.state.wxgate = ApiState(
        settings=settings,
        backend=backend,
        metrics=metrics,
        clock=clock,
        backpressure=Backpressure(backend, server.max_queued, clock),
        codecs=_codecs(settings),
        readiness=readiness,
        intake_checks=intake_checks(settings, backend, clock),
        dedupe=Dedupe.for_apps(settings, backend, clock, metrics),
        intake=intake if intake is not None else IntakeActivity(),
    )
    _include_routes(app, serve_api)
    install_docs(app)
    if serve_api:
        install_console(app, settings, keys)
    _document_api_keys(app)
    # add_middleware wraps what is already there: the last one added runs first.
    if serve_api:
        app.add_middleware(MessageFastPath)
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes)
    protect_metrics = server.metrics_require_key
    app.add_middleware(ApiKeyMiddleware, keys=keys, clock=clock, protect_metrics=protect_metrics)
    app.add_middleware(ErrorLogMiddleware, log=_log)
    app.add_middleware(TraceMiddleware)
    if not server.api_keys:
        _log.warning(
            "api_open", detail="server.api_keys is empty: /v1 accepts requests without a key"
        )
    return app
