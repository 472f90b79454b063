"""The HTTP server transport the gateway and the sandbox-less tools run: uvicorn with a
bounded HTTP/1.1 protocol, configured one way, in the foreground or in the background.

The protocol is uvicorn's httptools protocol with a bound on the size of a request's
head (request line and headers) and on the time its head and its body take to arrive,
and the API's envelope on the answers the protocol gives itself. uvicorn with
httptools sets no such bound: a client could send a header of any size, or any number
of headers, and the process would hold it all in memory (measured: a 64 MB header
answered 200 and raised the peak resident size by 200 MB); and a client sending one
header line or one body byte a second was waited for as long as it kept sending.
The body has its own size bound (`server.max_body_bytes`, BodyLimitMiddleware); this
is the head's. A request the parser cannot read was answered in plain text; it gets
the envelope like every other answer.
"""

from __future__ import annotations

import asyncio
import functools
import math
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wxgate.config import ServerSettings

# Far above any real request to this API (nginx's default allows 32 KiB), far below harm.
MAX_HEAD_BYTES = 64 * 1024


def _answer(status: int, reason: bytes, msg: str) -> bytes:
    """A whole HTTP answer with the envelope `{"code": status * 100, "msg", "data": null}`,
    closing the connection."""
    body = orjson.dumps({"code": status * 100, "msg": msg, "data": None})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, reason, len(body))
    ) + body


HEAD_TOO_LARGE = _answer(
    431, b"Request Header Fields Too Large", f"request head larger than {MAX_HEAD_BYTES} bytes"
)
UNREADABLE = _answer(400, b"Bad Request", "invalid HTTP request")
_DEFAULTS = ServerSettings()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 431 and closes the connection once a request's head passes MAX_HEAD_BYTES;
    answers 408 and closes it when a head or a body takes too long to arrive.

    The parser keeps an unfinished head in memory, so what each chunk adds to an
    unfinished head is counted: its bytes less the body bytes it carried, for chunks
    in which no head was completed; a chunk that completes a head is not counted,
    which bounds a head at the limit plus one read.

    One deadline runs while the connection waits for a request: for its head from the
    connection's start (a new connection) or from the first byte after a kept-alive
    pause (the pause itself is uvicorn's keep-alive timeout's), then for its body from
    the head's end. None runs while a request is being answered."""

    _head_bytes = 0  # of the head being read
    _heads = 0  # heads completed on this connection
    _body_bytes = 0  # body bytes of the chunk being fed
    _in_head = True  # the next bytes belong to a request's head
    _deadline: TimerHandle | None = None  # of the head or the body being waited for

    def __init__(
        self,
        *args: Any,
        head_timeout_s: float = _DEFAULTS.request_head_timeout_s,
        body_timeout_s: float = _DEFAULTS.request_body_timeout_s,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._body_timeout_s = body_timeout_s
        self._head_late = _answer(
            408, b"Request Timeout", f"request head not received within {head_timeout_s:g} s"
        )
        self._body_late = _answer(
            408, b"Request Timeout", f"request body not received within {body_timeout_s:g} s"
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads, self._body_bytes = self._heads, 0
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._heads == heads and self._in_head:  # the chunk added to an unfinished head
            self._head_bytes += len(data) - self._body_bytes
            if self._head_bytes > MAX_HEAD_BYTES:
                self.logger.warning("request head over %d bytes refused", MAX_HEAD_BYTES)
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()
                return
        self._arm()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(UNREADABLE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._heads += 1
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next bytes start the next head

    # -- the deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        """Start the deadline of what the connection now waits for, unless one runs.

        After a chunk that completed whole requests, nothing is waited for (a request
        is being answered); so a request that arrives in one piece costs no timer."""
        if self._deadline is not None:
            return
        if not self._in_head:
            self._deadline = self.loop.call_later(self._body_timeout_s, self._body_timed_out)
        elif self._head_bytes:
            self._deadline = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # The previous request's answer is still being made (a pipelined head is
            # late): it goes out first, and the connection closes after it.
            self.cycle.keep_alive = False
            return
        self.logger.warning("request head not received within %g s", self._head_timeout_s)
        self.transport.write(self._head_late)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._deadline = None
        self.logger.warning("request body not received within %g s", self._body_timeout_s)
        if not self.cycle.response_started:  # else an answer is half sent: only close
            self.transport.write(self._body_late)
        self.transport.close()


def server_config(
    app: FastAPI,
    host: str,
    port: int,
    *,
    grace_s: float = 0.0,
    settings: ServerSettings = _DEFAULTS,
) -> uvicorn.Config:
    """uvicorn as the gateway runs it: the bounded protocol with the request timeouts of
    `settings`, no lifespan (the gateway starts and stops its parts itself), no access
    log, logging left to wxgate."""
    protocol = functools.partial(
        BoundedHttpToolsProtocol,
        head_timeout_s=settings.request_head_timeout_s,
        body_timeout_s=settings.request_body_timeout_s,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=protocol,  # type: ignore[arg-type]  # uvicorn calls it as it calls a class
        # Rounded up: int() made any grace under 1 s "no limit" (None).
        timeout_graceful_shutdown=math.ceil(grace_s) or None,
    )


class PromptServer(uvicorn.Server):
    """uvicorn whose main loop ends as soon as `stop` is called, not at its next 0.1 s
    tick (the demo's and the tests' servers start and stop hundreds of times); its
    shutdown, which lets open connections finish, is uvicorn's own."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    async def main_loop(self) -> None:
        ticking = asyncio.create_task(super().main_loop(), name="wxgate-http-ticks")
        stopping = asyncio.create_task(self._stopping.wait(), name="wxgate-http-stop")
        try:
            await asyncio.wait((ticking, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ticking, stopping):
                task.cancel()
            await asyncio.gather(ticking, stopping, return_exceptions=True)

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()


@dataclass
class BackgroundServer:
    """uvicorn serving an app inside the running event loop (demo, tests, benchmarks)."""

    server: PromptServer
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.stop()
        await self.task


async def serve_in_background(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, settings: ServerSettings = _DEFAULTS
) -> BackgroundServer:
    """Start serving `app` and return once the socket listens (port 0: any free port);
    `settings` gives the request timeouts."""
    server = PromptServer(server_config(app, host, port, settings=settings))
    task = asyncio.create_task(server.serve(), name="wxgate-http")
    # uvicorn offers no start-up event, only this flag.
    while not server.started:
        if task.done():
            await task  # raises why it could not start (e.g. the port is taken)
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    return BackgroundServer(server, task)
