"""The HTTP server transport the gateway and the sandbox-less tools run: uvicorn with a
bounded HTTP/1.1 protocol, configured one way, in the foreground or in the background.

The protocol is uvicorn's httptools protocol with a bound on the size of a request's
head (request line and headers), and the API's envelope on the answers the protocol
gives itself. uvicorn with httptools sets no such bound: a client could send a header
of any size, or any number of headers, and the process would hold it all in memory
(measured: a 64 MB header answered 200 and raised the peak resident size by 200 MB).
The body has its own bound (`server.max_body_bytes`, BodyLimitMiddleware); this is
the head's. A request the parser cannot read was answered in plain text; it gets the
envelope like every other answer.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 431 and closes the connection once a request's head passes MAX_HEAD_BYTES.

    The parser keeps an unfinished head in memory, so what each chunk adds to an
    unfinished head is counted: its bytes less the body bytes it carried, for chunks
    in which no head was completed; a chunk that completes a head is not counted,
    which bounds a head at the limit plus one read."""

    _head_bytes = 0  # of the head being read
    _heads = 0  # heads completed on this connection
    _body_bytes = 0  # body bytes of the chunk being fed
    _in_head = True  # the next bytes belong to a request's head

    def data_received(self, data: bytes) -> None:
        heads, self._body_bytes = self._heads, 0
        super().data_received(data)
        if self._heads != heads or not self._in_head:
            return  # a head was completed, or the chunk was body
        self._head_bytes += len(data) - self._body_bytes
        if self._head_bytes > MAX_HEAD_BYTES:
            self.logger.warning("request head over %d bytes refused", MAX_HEAD_BYTES)
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(UNREADABLE)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next bytes start the next head


def server_config(app: FastAPI, host: str, port: int, *, grace_s: float = 0.0) -> uvicorn.Config:
    """uvicorn as the gateway runs it: the bounded protocol, no lifespan (the gateway
    starts and stops its parts itself), no access log, logging left to wxgate."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=BoundedHttpToolsProtocol,
        # Rounded up: int() made any grace under 1 s "no limit" (None).
        timeout_graceful_shutdown=math.ceil(grace_s) or None,
    )


@dataclass
class BackgroundServer:
    """uvicorn serving an app inside the running event loop (demo, tests, benchmarks)."""

    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def serve_in_background(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0
) -> BackgroundServer:
    """Start serving `app` and return once the socket listens (port 0: any free port)."""
    server = uvicorn.Server(server_config(app, host, port))
    task = asyncio.create_task(server.serve(), name="wxgate-http")
    # uvicorn offers no start-up event, only this flag.
    while not server.started:
        if task.done():
            await task  # raises why it could not start (e.g. the port is taken)
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    return BackgroundServer(server, task)
