"""The API's pure-ASGI middleware: trace ids, error logging, the body-size limit.

Plain ASGI classes rather than Starlette's BaseHTTPMiddleware, which runs every
request through an extra task and memory stream and costs far more per request.
Order, outermost first: Trace (every answer carries X-Request-ID, every log line
trace_id) -> ErrorLog (each 4xx/5xx logged once; an unhandled exception becomes
a 50000 envelope) -> BodyLimit.
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wxgate.api.errors import PayloadTooLarge
from wxgate.api.schemas import failure

TRACE_ID_KEY = "wxgate.trace_id"  # where the trace id sits in the ASGI scope
REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def trace_id_of(scope: Scope) -> str | None:
    trace_id: str | None = scope.get(TRACE_ID_KEY)
    return trace_id


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _incoming_request_id(scope: Scope) -> str | None:
    raw = _header(scope, REQUEST_ID_HEADER)
    if raw is None:
        return None
    value = raw.decode("latin-1")
    return value if _SANE_REQUEST_ID.fullmatch(value) else None


class TraceMiddleware:
    """Take a sane X-Request-ID or make one; echo it; bind it to every log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Not uuid4: os.urandom releases the GIL, and taking it back from the storage
        # threads cost ~50 us a request under load (measured). A trace id only has to
        # be unique, not unpredictable. A generator of our own, so that code seeding the
        # global `random` (tests do) cannot make ids repeat; reseeded in a forked child.
        self._ids = random.Random()
        os.register_at_fork(after_in_child=self._ids.seed)

    def _new_trace_id(self) -> str:
        return f"{self._ids.getrandbits(128):032x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = _incoming_request_id(scope) or self._new_trace_id()
        scope[TRACE_ID_KEY] = trace_id
        echoed = (REQUEST_ID_HEADER, trace_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(trace_id=trace_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


class ErrorLogMiddleware:
    """Log every 4xx/5xx once (method, path, status, client; never headers or body),
    and answer an exception nothing else handled with a 50000 envelope."""

    def __init__(self, app: ASGIApp, log: Any) -> None:
        self.app = app
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_capturing_status)
        except Exception:
            # The catch-all: classified as internal, logged with its traceback, answered.
            self._log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if status:
                raise  # the answer already started; only closing the connection is left
            status = 500
            answer = failure(500, 50000, "internal error", {"trace_id": trace_id_of(scope)})
            await answer(scope, receive, send)
        if status >= 400:
            self._log_failure(scope, status)

    def _log_failure(self, scope: Scope, status: int) -> None:
        client = scope.get("client")
        log = self._log.error if status >= 500 else self._log.info
        log(
            "request_failed",
            method=scope["method"],
            path=scope["path"],
            status=status,
            client=client[0] if client else None,
        )


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: at once when Content-Length says so, or as soon
    as a streamed (chunked) body crosses the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"body larger than {self.max_bytes} bytes", data={"max_bytes": self.max_bytes}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            # The server holds a body to its Content-Length, so only the header needs a look.
            if declared.isdigit() and int(declared) > self.max_bytes:
                exc = self._too_large()
                answer = failure(exc.status, exc.code, exc.msg, exc.data)
                await answer(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the reader: FastAPI re-raises an HTTPException, and the
                    # app's handler renders the 41300 envelope.
                    raise self._too_large()
            return message

        return limited_receive
