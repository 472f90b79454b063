"""Slow clients against the server transport: a head or a body that trickles in is cut
off with 408 once its timeout passes, so a client cannot hold a connection (and what
the process keeps for it) for as long as it keeps sending.

Raw sockets over loopback to a real uvicorn serving the gateway's app, with timeouts
short enough for a test. Each test measures when the connection closed: not before
its timeout, and within the timeout plus a margin of twice the timeout plus however
late the event loop's timers ran meanwhile (measured: a busy machine delays the
server's timer and the client alike, and must not fail the test).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.api.conftest import API_KEY, make_settings, message_body
from wxgate.api.app import create_app
from wxgate.backends.sqlite import SqliteBackend
from wxgate.config import ServerSettings
from wxgate.observability import Metrics
from wxgate.server import serve_in_background

HEAD_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
STEP_S = 0.25  # between two pieces a slow client sends: far below either timeout
ANSWER_WAIT_S = 30.0  # for an answer the server owes now: generous, it returns when it comes
APPS = f"GET /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode()


def margin(timeout_s: float) -> float:
    return 2 * timeout_s


@pytest.fixture
async def address(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of the gateway's app served with the test's request timeouts."""
    settings = make_settings()
    server_settings = ServerSettings(
        api_keys=settings.server.api_keys,
        request_head_timeout_s=HEAD_TIMEOUT_S,
        request_body_timeout_s=BODY_TIMEOUT_S,
    )
    backend = SqliteBackend(tmp_path / "slow.db")
    await backend.start()
    app = create_app(settings, backend, metrics=Metrics())
    server = await serve_in_background(app, settings=server_settings)
    try:
        yield "127.0.0.1", server.port
    finally:
        await server.stop()
        await backend.close()


@dataclass
class Ending:
    """How a connection ended: what the server answered, and when it closed."""

    answer: bytes
    closed_after_s: float  # from the moment the measured wait began
    late_s: float  # how much later than asked this process's timers ran meanwhile

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1]) if self.answer else 0

    @property
    def envelope(self) -> dict[str, object]:
        return dict(orjson.loads(self.answer.partition(b"\r\n\r\n")[2]))


async def trickle(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, pieces: list[bytes]
) -> bytes:
    """Send `pieces` STEP_S apart until the server closes; everything it answered."""
    received = bytearray()
    for piece in pieces:
        with contextlib.suppress(ConnectionError):
            writer.write(piece)
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            chunk = await asyncio.wait_for(reader.read(65536), STEP_S)
            if not chunk:
                return bytes(received)
            received += chunk
    return bytes(received)


async def read_to_close(reader: asyncio.StreamReader, wait_s: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open after wait_s."""
    try:
        return await asyncio.wait_for(reader.read(), wait_s)
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {wait_s:.1f} s") from None


async def ended(
    address: tuple[str, int], pieces: list[bytes], timeout_s: float, *, start_after: int = 0
) -> Ending:
    """Connect, send `pieces[:start_after]` at once, then trickle the rest; the clock
    starts when the trickle does (the connection's start when start_after is 0)."""
    reader, writer = await asyncio.open_connection(*address)
    lag = asyncio.create_task(loop_lag())
    try:
        began = time.monotonic()
        if start_after:
            writer.write(b"".join(pieces[:start_after]))
            await writer.drain()
            began = time.monotonic()
        answer = await trickle(writer, reader, pieces[start_after:])
        answer += await read_to_close(reader, timeout_s + margin(timeout_s) + ANSWER_WAIT_S)
        return Ending(answer, time.monotonic() - began, await stopped(lag))
    finally:
        writer.close()
        lag.cancel()


LAG_TICK_S = 0.02


async def loop_lag() -> float:
    """Until cancelled: the time by which this event loop woke its sleepers late, added
    up. The server shares the loop, so its timeout timer runs late by as much on a busy
    machine; the measured bound on when it closed allows for that lateness."""
    late = 0.0
    try:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            late += max(0.0, time.monotonic() - before - LAG_TICK_S)
    except asyncio.CancelledError:
        return late


async def stopped(lag: asyncio.Task[float]) -> float:
    lag.cancel()
    return await lag


def header_lines(count: int) -> list[bytes]:
    lines = [b"GET /v1/apps HTTP/1.1\r\n", b"Host: x\r\n"]
    return lines + [b"X-Slow-%d: %d\r\n" % (n, n) for n in range(count)]


def assert_cut_off(ending: Ending, timeout_s: float, what: str) -> None:
    assert ending.status == 408, ending.answer[:200]
    assert ending.envelope == {
        "code": 40800,
        "msg": f"request {what} not received within {timeout_s:g} s",
        "data": None,
    }
    assert b"connection: close" in ending.answer.lower()
    assert timeout_s * 0.9 <= ending.closed_after_s <= timeout_s + margin(timeout_s) + ending.late_s


async def test_a_head_sent_one_line_at_a_time_is_408_after_the_head_timeout(
    address: tuple[str, int],
) -> None:
    # One header line every STEP_S, for far longer than the timeout.
    lines = header_lines(int(10 * HEAD_TIMEOUT_S / STEP_S))

    ending = await ended(address, lines, HEAD_TIMEOUT_S)

    assert_cut_off(ending, HEAD_TIMEOUT_S, "head")


async def test_a_connection_that_sends_nothing_is_408_after_the_head_timeout(
    address: tuple[str, int],
) -> None:
    ending = await ended(address, [], HEAD_TIMEOUT_S)

    assert_cut_off(ending, HEAD_TIMEOUT_S, "head")


async def test_a_body_sent_one_byte_at_a_time_is_408_after_the_body_timeout(
    address: tuple[str, int],
) -> None:
    body_bytes = int(10 * BODY_TIMEOUT_S / STEP_S)
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n"
    ).encode()

    ending = await ended(address, [head] + [b" "] * body_bytes, BODY_TIMEOUT_S, start_after=1)

    assert_cut_off(ending, BODY_TIMEOUT_S, "body")


async def test_a_slow_head_and_body_within_their_timeouts_are_served(
    address: tuple[str, int],
) -> None:
    body = orjson.dumps(message_body())
    head = [
        b"POST /v1/messages HTTP/1.1\r\n",
        f"Host: x\r\nAuthorization: Bearer {API_KEY}\r\n".encode(),
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode(),
    ]
    thirds = [body[: len(body) // 3], body[len(body) // 3 : -5], body[-5:]]

    async def slow_post() -> tuple[bytes, float, float]:
        """The answer, and how long this client took to send the head and the body."""
        reader, writer = await asyncio.open_connection(*address)
        try:
            # Head and body each take two steps, well inside their timeouts.
            began = time.monotonic()
            for piece in head:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(STEP_S)
            head_s, began = time.monotonic() - began, time.monotonic()
            for piece in thirds:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(STEP_S)
            body_s = time.monotonic() - began
            try:
                answer = await asyncio.wait_for(reader.readuntil(b"}}"), ANSWER_WAIT_S)
            except asyncio.IncompleteReadError as closed:  # answered (a 408?) and closed
                answer = closed.partial
        finally:
            writer.close()
        return answer, head_s, body_s

    # A machine busy with other work can stretch this client's own steps past a timeout;
    # such an attempt shows nothing and is made again.
    for _ in range(3):
        answer, head_s, body_s = await slow_post()
        if head_s < 0.8 * HEAD_TIMEOUT_S and body_s < 0.8 * BODY_TIMEOUT_S:
            break
    assert head_s < 0.8 * HEAD_TIMEOUT_S and body_s < 0.8 * BODY_TIMEOUT_S, (head_s, body_s)

    assert answer.startswith(b"HTTP/1.1 202 "), answer[:200]


async def test_a_kept_alive_connection_idle_past_the_head_timeout_is_still_served(
    address: tuple[str, int],
) -> None:
    # The pause between requests is the keep-alive timeout's (uvicorn's 5 s), not the head's.
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(APPS)
        first = await asyncio.wait_for(reader.readuntil(b"}]}}"), ANSWER_WAIT_S)
        await asyncio.sleep(HEAD_TIMEOUT_S * 1.5)
        writer.write(APPS)
        second = await asyncio.wait_for(reader.readuntil(b"}]}}"), ANSWER_WAIT_S)
    finally:
        writer.close()

    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")
