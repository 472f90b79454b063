"""The sandbox's own HTTP/1.1: keep-alive, pipelining in order, chunked bodies, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.sandbox.helpers import SEND, WeChatCalls, message
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.http import MAX_BODY_BYTES, HttpConnection


class RawClient:
    """A socket that writes bytes as given and reads answers one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""


@pytest.fixture
async def raw(sandbox: Any) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", sandbox.port)
    yield RawClient(reader, writer)
    writer.close()


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def test_one_connection_answers_many_requests(raw: RawClient, wechat: WeChatCalls):
    token = await wechat.token()
    for _ in range(3):
        raw.writer.write(_post(f"{SEND}?access_token={token}", orjson.dumps(message())))
        status, headers, body = await raw.answer()
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        assert orjson.loads(body)["errcode"] == 0


async def test_pipelined_requests_are_answered_in_order_even_when_one_is_delayed(
    raw: RawClient, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.token()
    await sandbox_control.set_faults(latency_ms=150)
    bodies = [orjson.dumps(message(client_msg_id=f"p{i}")) for i in range(3)]
    raw.writer.write(b"".join(_post(f"{SEND}?access_token={token}", b) for b in bodies))
    msgids = [orjson.loads((await raw.answer())[2])["msgid"] for _ in bodies]
    inbox = await sandbox_control.messages()
    assert [m["client_msg_id"] for m in inbox] == ["p0", "p1", "p2"]
    assert msgids == [m["msgid"] for m in inbox]


async def test_chunked_request_body_is_read_whole(raw: RawClient, wechat: WeChatCalls):
    token = await wechat.token()
    body = orjson.dumps(message())
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    raw.writer.write(
        f"POST {SEND}?access_token={token} HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
        + chunks
        + b"0\r\n\r\n"
    )
    assert orjson.loads((await raw.answer())[2])["errcode"] == 0


async def test_connection_close_is_honoured(raw: RawClient):
    raw.writer.write(b"GET /sandbox/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await raw.answer()
    assert status == 200
    assert headers["connection"] == "close"
    assert await raw.closed()


async def test_unknown_path_is_404(raw: RawClient):
    raw.writer.write(b"GET /cgi-bin/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.answer())[0] == 404


async def test_oversized_body_is_413_and_closes(raw: RawClient):
    raw.writer.write(_post(SEND, b"x" * (MAX_BODY_BYTES + 1)))
    assert (await raw.answer())[0] == 413
    assert await raw.closed()


async def test_malformed_request_is_400_and_closes(raw: RawClient):
    raw.writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await raw.answer())[0] == 400
    assert await raw.closed()


async def test_wrong_method_on_a_control_endpoint_is_405(raw: RawClient):
    raw.writer.write(b"GET /sandbox/reset HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.answer())[0] == 405


async def test_a_failure_inside_the_sandbox_is_a_500_not_a_silent_400():
    def broken(method: bytes, target: bytes, body: bytes) -> bytes:
        raise KeyError("a bug")

    connections: set[HttpConnection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(broken, connections), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = await RawClient(reader, writer).answer()
        assert status == 500
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
