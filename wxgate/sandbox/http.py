"""HTTP/1.1 for the sandbox: an `asyncio.Protocol` parsing with httptools.

A connection hands each complete request (method, target, body) to a dispatch
function and writes what it returns. Most replies are a JSON body answered at
once; a few are deferred on purpose (fault injection: latency, a hang, a reset).
Keep-alive, pipelining (answers stay in order), chunked request bodies and
Content-Length bodies are handled; the rest of HTTP the sandbox does not need.
aiohttp.web was measured at a fraction of this speed for the same send path,
which is why the sandbox speaks HTTP itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import httptools

from wxgate.observability import get_logger

MAX_BODY_BYTES = 8 * 1024 * 1024
JSON_TYPE = b"application/json; encoding=utf-8"
TEXT_TYPE = b"text/plain; charset=utf-8"
HTML_TYPE = b"text/html; charset=utf-8"

_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: " + JSON_TYPE + b"\r\nContent-Length: "
_CLOSE = b"Connection: close\r\n"

log = get_logger(__name__)


class Response(NamedTuple):
    """Any answer other than a 200 JSON body (which is just its `bytes`)."""

    status: bytes  # e.g. b"502 Bad Gateway"
    content_type: bytes
    body: bytes


class Delayed(NamedTuple):
    """Answer `reply`, but only after `seconds`."""

    seconds: float
    reply: bytes | Response


class Hang(NamedTuple):
    """Answer nothing; close the connection after `seconds`."""

    seconds: float


class Abort:
    """Reset the connection without answering."""


ABORT = Abort()

Reply = bytes | Response | Delayed | Hang | Abort
Dispatch = Callable[[bytes, bytes, bytes], Reply]  # (method, target, body) -> reply
_Request = tuple[bytes, bytes, bytes, bool]  # (method, target, body, keep-alive)
_TOO_LARGE: _Request = (b"", b"", b"", False)


def render(reply: bytes | Response, keep_alive: bool) -> bytes:
    """The bytes on the wire for a reply."""
    if isinstance(reply, bytes):
        if keep_alive:
            return b"%s%d\r\n\r\n%s" % (_JSON_HEAD, len(reply), reply)
        return b"%s%d\r\n%s\r\n%s" % (_JSON_HEAD, len(reply), _CLOSE, reply)
    status, content_type, body = reply
    close = b"" if keep_alive else _CLOSE
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        content_type,
        len(body),
        close,
        body,
    )


class HttpConnection(asyncio.Protocol):
    """One client connection; `connections` is the server's set of open ones."""

    __slots__ = (
        "_body",
        "_connections",
        "_dispatch",
        "_oversized",
        "_parser",
        "_timer",
        "_transport",
        "_url",
        "_waiting",
    )

    def __init__(self, dispatch: Dispatch, connections: set[HttpConnection]) -> None:
        self._dispatch = dispatch
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body = b""
        self._oversized = False
        # While a deferred reply is pending, later pipelined requests wait here, in order.
        self._waiting: deque[_Request] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # A fault of the sandbox itself, not of the request: say so loudly.
            log.error("sandbox failed to answer a request", exc_info=exc.__context__ or exc)
            self._refuse(b"500 Internal Server Error")
        except httptools.HttpParserUpgrade:
            self._refuse(b"501 Not Implemented")
        except httptools.HttpParserError:
            self._refuse(b"400 Bad Request")

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests until it does.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        """Close this connection now, answered or not (server shutdown)."""
        if self._transport is not None:
            self._transport.close()

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = b""
        self._oversized = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY_BYTES:
            self._oversized = True
        elif self._body:
            self._body += body
        else:
            self._body = body

    def on_message_complete(self) -> None:
        parser = self._parser
        keep_alive = parser.should_keep_alive() and not self._oversized
        if self._oversized:
            request = _TOO_LARGE
        else:
            request = (parser.get_method(), self._url, self._body, keep_alive)
        if self._waiting is not None:
            self._waiting.append(request)
        else:
            self._answer(request)

    # -- answering ------------------------------------------------------------------

    def _answer(self, request: _Request) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if request is _TOO_LARGE:
            self._refuse(b"413 Content Too Large")
            return
        method, url, body, keep_alive = request
        reply = self._dispatch(method, url, body)
        if isinstance(reply, bytes | Response):
            transport.write(render(reply, keep_alive))
            if not keep_alive:
                transport.close()
        elif isinstance(reply, Delayed):
            self._defer(reply.seconds, self._answer_late, reply.reply, keep_alive)
        elif isinstance(reply, Hang):
            self._defer(reply.seconds, transport.close)
        else:
            transport.abort()

    def _defer(self, seconds: float, callback: Callable[..., None], *args: object) -> None:
        self._waiting = deque()
        self._timer = asyncio.get_running_loop().call_later(seconds, callback, *args)

    def _answer_late(self, reply: bytes | Response, keep_alive: bool) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(render(reply, keep_alive))
        if not keep_alive:
            transport.close()
            return
        waiting, self._waiting = self._waiting, None
        while waiting and self._waiting is None:
            self._answer(waiting.popleft())
        if waiting and self._waiting is not None:
            self._waiting.extend(waiting)  # another request was deferred; the rest wait again

    def _refuse(self, status: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(render(Response(status, TEXT_TYPE, status + b"\n"), False))
        self._transport.close()
