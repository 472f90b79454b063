"""A lean keep-alive HTTP/1.1 client for load generators (httptools on uvloop).

aiohttp costs a load generator several times the CPU of the requests it makes,
CPU the measured server then lacks on a two-core machine; this client writes a
pre-rendered request and parses the answer with httptools, nothing more.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import httptools


class Answer(NamedTuple):
    status: int
    body: bytes


class Connection(asyncio.Protocol):
    """One connection; one request at a time (`request` awaits its answer)."""

    def __init__(self, host: str, headers: bytes) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head = b"Host: %s\r\n%s" % (host.encode(), headers)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._chunks: list[bytes] = []

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> Connection:
        """A connection to `url`'s host and port (http only), sending `headers` every time."""
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        pairs = (headers or {}).items()
        rendered = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in pairs)
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: cls(host, rendered), host, int(port))
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body, self._chunks = b"".join(self._chunks), []
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("connection closed"))

    async def request(self, method: bytes, path: bytes, body: bytes = b"") -> Answer:
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(
            b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (method, path, self._head, len(body), body)
        )
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
