"""Hostile input to a running gateway: XML with external entities and expansion bombs,
bodies far over the limit, deeply nested JSON, bytes that are not UTF-8, huge `data`
maps and recipient lists, control characters in values, odd headers and queries.

Each is refused with a clear error (its code and the field or reason named), nothing
stored or changed, the process stays up, and its memory stays bounded: the peak
resident size of the gateway grows by less than MEMORY_BOUND_KB over the whole module
while it is offered hundreds of megabytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.timing import fastest
from wxgate.wechat.callback import CallbackCodec, Envelope, sign

from .conftest import (
    AES_KEY,
    API_KEY,
    PLAIN_APPID,
    PLAIN_TOKEN,
    SAFE_APPID,
    SAFE_TOKEN,
    Client,
    Deployment,
    raw_request,
)

MEMORY_BOUND_KB = 64 * 1024
BODY_LIMIT = 1_048_576  # server.max_body_bytes of the session gateway
PLAIN = CallbackCodec(PLAIN_TOKEN, PLAIN_APPID)
SAFE = CallbackCodec(SAFE_TOKEN, SAFE_APPID, AES_KEY)
MESSAGE = {
    "app": "plain",
    "touser": "oHOSTILE",
    "template_id": "TPL_x",
    "data": {"thing1": {"value": "ok"}},
}


@pytest.fixture(scope="module")
def peak_before(deployment: Deployment) -> Iterator[int]:
    """The gateway's peak resident size before this module's attacks; checked after."""
    yield deployment.gateway.memory_kb("VmHWM")


@pytest.fixture(autouse=True)
async def unchanged(client: Client, deployment: Deployment, peak_before: int) -> Any:
    """Every test here leaves every stored message as it was, and the process up."""
    before = await client.snapshot()
    yield
    assert deployment.gateway.alive()
    assert await client.snapshot() == before


def errors(body: dict[str, Any]) -> list[tuple[list[Any], str]]:
    return [(error["loc"], error["msg"]) for error in body["data"]["errors"]]


async def post_json(
    client: Client, raw: bytes, path: str = "/v1/messages", **headers: str
) -> tuple[int, Any]:
    status, body, _ = await client.call(
        "POST", path, data=raw, headers={"Content-Type": "application/json", **headers}
    )
    return status, body


# -- JSON intake ----------------------------------------------------------------------


async def test_json_nested_a_hundred_thousand_deep_is_400(client: Client) -> None:
    depth = 100_000
    raw = b'{"touser": "oA", "template_id": "t", "data": ' + b"[" * depth + b"]" * depth + b"}"
    status, body = await post_json(client, raw)
    assert (status, body["code"]) == (400, 40000)
    assert errors(body)[0][0][0] == "body"


async def test_objects_nested_inside_a_data_value_are_400_naming_it(client: Client) -> None:
    depth = 500  # deeper than orjson.dumps would write, within what the server may parse
    nested = b'{"value": ' * depth + b'"x"' + b"}" * depth
    head = orjson.dumps({k: v for k, v in MESSAGE.items() if k != "data"})[:-1]
    status, body = await post_json(client, head + b', "data": {"thing1": ' + nested + b"}}")
    assert status == 400
    assert errors(body)[0][0][:4] == ["body", "data", "thing1", "value"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"app": "plain", "touser": "o\xff\xfeA", "template_id": "t", "data": {}}',
        b'{"app": "plain", "touser": "o\xc0\xafA", "template_id": "t", "data": {}}',  # overlong
        b'{"touser": "oA", "template_id": "t", "data": {"k": {"value": "\\ud800"}}}',
        b"\xef\xbb\xbf\xff" + b"{}",
    ],
)
async def test_bytes_that_are_not_utf8_are_400(client: Client, raw: bytes) -> None:
    status, body = await post_json(client, raw)
    assert (status, body["code"]) == (400, 40000)


async def test_a_data_map_of_twenty_thousand_keys_is_400_naming_data(client: Client) -> None:
    data = {f"keyword{n}": {"value": "v"} for n in range(20_000)}
    status, body = await post_json(client, orjson.dumps({**MESSAGE, "data": data}))
    assert status == 400
    assert errors(body)[0][0] == ["body", "data"]


async def test_a_value_of_half_a_megabyte_is_400_naming_it(client: Client) -> None:
    data = {"thing1": {"value": "长" * 170_000}}
    status, body = await post_json(client, orjson.dumps({**MESSAGE, "data": data}))
    assert status == 400
    assert errors(body)[0][0] == ["body", "data", "thing1", "value"]


async def test_a_batch_of_ten_thousand_and_one_recipients_is_400_and_stores_none(
    client: Client,
) -> None:
    batch = {"app": "plain", "template_id": "TPL_x", "data": {"thing1": {"value": "ok"}}}
    batch["recipients"] = [f"o{n}" for n in range(10_001)]
    status, body = await post_json(client, orjson.dumps(batch), "/v1/messages/batch")
    assert status == 400
    assert errors(body)[0][0] == ["body", "recipients"]


async def test_a_batch_with_one_bad_recipient_among_thousands_stores_none(client: Client) -> None:
    batch = {"app": "plain", "template_id": "TPL_x", "data": {"thing1": {"value": "ok"}}}
    batch["recipients"] = [f"oFINE{n}" for n in range(5_000)] + ["o BAD"]
    status, body = await post_json(client, orjson.dumps(batch), "/v1/messages/batch")
    assert status == 400
    assert errors(body)[0][0] == ["body", "recipients", 5_000, "touser"]


@pytest.mark.parametrize("number", [b"1" * 100_000, b"1e999999", b"-" + b"9" * 5000, b"NaN"])
async def test_absurd_numbers_are_400(client: Client, number: bytes) -> None:
    raw = b'{"app": "plain", "touser": ' + number + b', "template_id": "t", "data": {}}'
    (status, body), took = await fastest(lambda: post_json(client, raw), under_s=2.0)
    assert (status, body["code"]) == (400, 40000)
    assert took < 2.0


@pytest.mark.parametrize("errcode", [2**31, 2**63, 2**64 - 1, -(2**31) - 1])
async def test_a_dead_letter_errcode_beyond_32_bits_is_400_naming_it(
    client: Client, errcode: int
) -> None:
    # Found by fuzzing: a number past 2^63 reached SQLite as an OverflowError (a 500).
    status, body = await post_json(client, b'{"errcode": %d}' % errcode, "/v1/dead-letters/replay")
    assert status == 400
    assert errors(body)[0][0] == ["body", "errcode"]


CONTROL = [
    ({"touser": "o\x00A"}, ["body", "touser"]),
    ({"touser": "o\x1b[31mA"}, ["body", "touser"]),
    ({"template_id": "t\x07"}, ["body", "template_id"]),
    ({"url": "https://shop.example.com/\x00"}, ["body", "url"]),
    ({"data": {"thing1": {"value": "a\x00b"}}}, ["body", "data", "thing1", "value"]),
    ({"data": {"thing1": {"value": "a\x7fb"}}}, ["body", "data", "thing1", "value"]),
    ({"data": {"thing1": {"value": "a\u2028b"}}}, ["body", "data", "thing1", "value"]),
    ({"data": {"thing\x001": {"value": "ab"}}}, ["body", "data", "thing\x001"]),
    ({"miniprogram": {"appid": "wx1", "pagepath": "p\x00"}}, ["body", "miniprogram", "pagepath"]),
    ({"idempotency_key": "order\x00-1"}, ["body", "idempotency_key"]),
    ({"idempotency_key": "order\n-1"}, ["body", "idempotency_key"]),
]


@pytest.mark.parametrize(("change", "loc"), CONTROL)
async def test_control_characters_in_a_value_are_400_naming_the_field(
    client: Client, change: dict[str, Any], loc: list[str]
) -> None:
    status, body = await post_json(client, orjson.dumps({**MESSAGE, **change}))
    assert status == 400
    [(where, why)] = errors(body)
    assert where == loc
    assert "control" in why or "line break" in why or "letter" in why


async def test_a_control_character_in_the_idempotency_key_header_is_400(client: Client) -> None:
    status, body = await post_json(client, orjson.dumps(MESSAGE), **{"Idempotency-Key": "order\t1"})
    assert status == 400
    assert errors(body) == [(["header", "Idempotency-Key"], "no control characters allowed")]


# -- bodies over the limit ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [b"/v1/messages", b"/v1/messages/batch", b"/wechat/callback/plain"]
)
async def test_a_declared_body_of_fifty_megabytes_is_413_before_it_is_sent(
    deployment: Deployment, path: bytes
) -> None:
    head = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    )  # fmt: skip
    (status, body), took = await fastest(
        lambda: raw_request(deployment.url, head + b"{", timeout_s=5), under_s=2.0
    )
    assert status == 413
    assert orjson.loads(body)["code"] == 41300
    assert took < 2.0


@pytest.mark.parametrize("path", ["/v1/messages", "/wechat/callback/plain"])
async def test_a_streamed_body_crossing_the_limit_is_413(client: Client, path: str) -> None:
    async def chunks() -> Any:
        for _ in range(8 * BODY_LIMIT // 65_536):
            yield b" " * 65_536

    status, body, _ = await client.call(
        "POST", path, data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (status, body["code"]) == (413, 41300)


# -- XML on the callback URL ------------------------------------------------------------

XXE = b"""<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><FromUserName>&xxe;</FromUserName><CreateTime>1</CreateTime>
<MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID><Status>success</Status></xml>"""
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml/>'
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x">'
    b"%remote;]><xml/>"
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
        for n in range(1, 10)
    )
    + b"]><xml><FromUserName>&lol9;</FromUserName></xml>"
)
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "' + b"A" * 50_000 + b'">]><xml>'
    + b"&a;" * 10_000 + b"</xml>"
)  # fmt: skip
DEEP_XML = b"<xml>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</xml>"
WRONG_ENCODING = b'<?xml version="1.0" encoding="x-no-such-codec"?><xml/>'
NOT_UTF8 = b'<?xml version="1.0" encoding="utf-8"?><xml><FromUserName>\xff\xfe</FromUserName></xml>'


def signed_plain(body: bytes) -> tuple[dict[str, str], bytes]:
    query, _ = PLAIN.seal("<xml/>", str(int(time.time())), str(time.monotonic_ns()))
    return query, body


def signed_safe(inner: bytes) -> tuple[dict[str, str], bytes]:
    """A safe-mode push whose encrypted payload is `inner`, correctly signed."""
    timestamp, nonce = str(int(time.time())), str(time.monotonic_ns())
    encrypt = Envelope(AES_KEY, SAFE_APPID).encrypt(inner)
    query = {
        "signature": sign(SAFE_TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": sign(SAFE_TOKEN, timestamp, nonce, encrypt),
    }
    return query, f"<xml><ToUserName>gh</ToUserName><Encrypt>{encrypt}</Encrypt></xml>".encode()


@pytest.mark.parametrize(
    "document",
    [XXE, EXTERNAL_DTD, PARAMETER_ENTITY, LAUGHS, QUADRATIC, WRONG_ENCODING, NOT_UTF8],
    ids=["xxe", "external-dtd", "parameter-entity", "billion-laughs", "quadratic", "codec",
         "not-utf8"],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_hostile_xml_is_refused_quickly_and_reads_no_file(
    client: Client, document: bytes, mode: str
) -> None:
    # WeChat never sends a DTD, entities or another encoding: refused, signed or not.
    async def push() -> tuple[int, Any, Any]:  # signed afresh: each with its own nonce
        query, body = signed_plain(document) if mode == "plain" else signed_safe(document)
        return await client.call(
            "POST", f"/wechat/callback/{mode}", key=None, params=query, data=body
        )

    (status, answer, _), took = await fastest(push, under_s=2.0)
    assert took < 2.0
    assert (status, answer["code"]) == (400, 40000)
    assert b"root:" not in orjson.dumps(answer)


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_deeply_nested_signed_xml_is_read_quickly_and_taken_as_unreadable(
    client: Client, mode: str
) -> None:
    # Well-formed, harmless and signed: not an event anyone can read, answered
    # `success` so that a sender with the token is not made to retry it.
    async def push() -> tuple[int, Any, Any]:  # signed afresh: each with its own nonce
        query, body = signed_plain(DEEP_XML) if mode == "plain" else signed_safe(DEEP_XML)
        return await client.call(
            "POST", f"/wechat/callback/{mode}", key=None, params=query, data=body
        )

    (status, answer, _), took = await fastest(push, under_s=2.0)
    assert took < 2.0
    assert (status, answer) == (200, b"success")


async def test_an_encrypt_value_of_most_of_a_megabyte_is_refused(client: Client) -> None:
    query, _ = SAFE.seal("<xml/>", str(int(time.time())), str(time.monotonic_ns()))
    body = b"<xml><Encrypt>" + b"QUFB" * 200_000 + b"</Encrypt></xml>"
    status, answer, _ = await client.call(
        "POST", "/wechat/callback/safe", key=None, params=query, data=body
    )
    assert (status, answer["code"]) == (403, 40300)  # its msg_signature cannot match


# -- headers and queries ----------------------------------------------------------------


async def test_a_request_id_that_is_not_text_is_replaced_not_echoed(deployment: Deployment) -> None:
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xff\xfe<script>\r\n"
        b"Connection: close\r\n\r\n"
    )
    reader_status, body = await raw_request(deployment.url, request)
    assert reader_status == 200
    assert orjson.loads(body)["code"] == 0


async def test_an_authorization_header_that_is_not_text_is_401(deployment: Deployment) -> None:
    request = (
        b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, body = await raw_request(deployment.url, request)
    assert (status, orjson.loads(body)["code"]) == (401, 40100)


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Padding: " + b"a" * 1_048_576 + b"\r\n",
        b"X-Padding: " + b"a" * 16 * 1_048_576 + b"\r\n",
        b"X-A: b\r\n" * 200_000,
    ],
    ids=["one-megabyte-header", "sixteen-megabyte-header", "two-hundred-thousand-headers"],
)
async def test_a_request_head_over_64_kib_is_431_and_not_kept(
    deployment: Deployment, headers: bytes
) -> None:
    head = b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
    status, body = await raw_request(deployment.url, head + b"\r\n" + headers + b"\r\n")
    # 431 with the envelope, or the connection closed while the client was still sending.
    assert status in (431, 0)
    if status:
        assert orjson.loads(body)["code"] == 43100


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"GET /health z HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz?x=\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on plain HTTP
    ],
    ids=["header-name", "space-in-path", "control-in-query", "negative-length", "bad-chunk", "tls"],
)
async def test_a_request_the_parser_cannot_read_is_a_400_envelope(
    deployment: Deployment, request_bytes: bytes
) -> None:
    status, body = await raw_request(deployment.url, request_bytes)
    assert (status, orjson.loads(body)["code"]) == (400, 40000)


async def test_a_body_sent_with_its_head_in_one_piece_is_not_taken_for_a_head(
    deployment: Deployment,
) -> None:
    batch = {"app": "plain", "template_id": "TPL_x", "data": {"thing1": {"value": "ok"}}}
    body = orjson.dumps({**batch, "recipients": [f"oPIECE{n:06d}" for n in range(10_001)]})
    assert len(body) > 2 * 64 * 1024
    head = (
        b"POST /v1/messages/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + API_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    status, answer = await raw_request(deployment.url, head + body)
    assert (status, orjson.loads(answer)["data"]["errors"][0]["loc"]) == (
        400,
        ["body", "recipients"],
    )


async def test_a_request_head_of_32_kib_is_still_served(deployment: Deployment) -> None:
    head = b"GET /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
    padding = b"X-Padding: " + b"a" * 32 * 1024 + b"\r\n"
    status, _ = await raw_request(
        deployment.url, head + b"\r\n" + padding + b"Connection: close\r\n\r\n"
    )
    assert status == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=-1", 400),
        ("limit=100000000000000000000000000000", 400),
        ("status=bogus", 400),
        ("touser=%FF%FE", 200),
        ("cursor=%00%01", 200),
        ("app=" + "a" * 10_000, 200),
    ],
)
async def test_odd_queries_on_the_listing_are_answered_cleanly(
    client: Client, query: str, status: int
) -> None:
    answered, body, _ = await client.call("GET", f"/v1/messages?{query}")
    assert (answered, body["code"]) == (status, 0 if status == 200 else 40000)


async def test_a_message_id_that_is_not_text_is_a_404(client: Client) -> None:
    status, body, _ = await client.call("GET", "/v1/messages/%FF%FE%00")
    assert (status, body["code"]) == (404, 40400)


# -- last: the memory bound over everything above -----------------------------------------


async def test_zz_the_gateways_peak_memory_stayed_bounded(
    deployment: Deployment, peak_before: int
) -> None:
    grown = deployment.gateway.memory_kb("VmHWM") - peak_before
    assert grown < MEMORY_BOUND_KB, f"peak resident size grew by {grown} kB"
