"""Delivery reports that must not be believed, sent to the live gateway's callback URL.

The sandbox here has no callback URL, so sent messages wait in `sent` and the only
reports the gateway receives are the ones these tests forge, replay or break; a
genuine one afterwards shows the record could still change.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from tests.e2e.conftest import APP, MakeStack, Stack
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_ORIGINAL_ID,
)
from wxgate.wechat.callback import CallbackCodec, template_finish_xml

PATH = f"/wechat/callback/{APP}"


def sealed(
    record: dict[str, Any],
    status: str = "success",
    *,
    token: str = DEFAULT_CALLBACK_TOKEN,
    aes_key: str = "",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """The query and body WeChat would POST to report on `record`."""
    xml = template_finish_xml(
        DEFAULT_ORIGINAL_ID, record["touser"], int(time.time()), int(record["msgid"]), status
    )
    codec = CallbackCodec(token, DEFAULT_APPID, aes_key)
    return codec.seal(
        xml,
        str(int(time.time()) if timestamp is None else timestamp),
        nonce or str(secrets.randbelow(10**10)),
        openid=record["touser"],
    )


async def post(stack: Stack, query: dict[str, str], body: bytes) -> tuple[int, Any]:
    return await stack.call(
        "POST", PATH, key=None, params=query, data=body, headers={"Content-Type": "text/xml"}
    )


async def sent_messages(stack: Stack, count: int) -> list[dict[str, Any]]:
    ids = [await stack.send(f"oReport_{n}") for n in range(count)]
    return await stack.settled(ids, {"sent"})


@pytest.mark.parametrize("safe", [False, True], ids=["plain", "safe"])
async def test_forged_report_is_refused_and_changes_nothing(
    make_stack: MakeStack, safe: bool
) -> None:
    aes_key = DEFAULT_ENCODING_AES_KEY if safe else ""
    stack = await make_stack(None, app={"encoding_aes_key": aes_key})
    [record] = await sent_messages(stack, 1)

    query, body = sealed(record, "failed:user block", token="guessed-token", aes_key=aes_key)
    status, answer = await post(stack, query, body)

    assert status == 403 and answer["code"] == 40300
    assert (await stack.record(record["id"]))["status"] == "sent"
    genuine_query, genuine_body = sealed(record, aes_key=aes_key)
    assert (await post(stack, genuine_query, genuine_body)) == (200, "success")
    assert (await stack.record(record["id"]))["status"] == "delivered"


async def test_stale_report_is_refused_as_a_replay(make_stack: MakeStack) -> None:
    stack = await make_stack(None)
    [record] = await sent_messages(stack, 1)

    query, body = sealed(record, "failed:user block", timestamp=int(time.time()) - 3600)
    status, answer = await post(stack, query, body)

    assert status == 403 and answer["code"] == 40300
    assert "timestamp" in answer["msg"]
    assert (await stack.record(record["id"]))["status"] == "sent"


async def test_captured_query_with_another_body_changes_nothing(make_stack: MakeStack) -> None:
    stack = await make_stack(None)
    first, second = await sent_messages(stack, 2)
    query, body = sealed(first)
    assert (await post(stack, query, body)) == (200, "success")
    assert (await stack.record(first["id"]))["status"] == "delivered"

    # Plaintext signatures cover timestamp and nonce, not the body: the nonce is the guard.
    _, forged_body = sealed(second, "failed:user block")
    status, answer = await post(stack, query, forged_body)

    assert (status, answer) == (200, "success")  # WeChat's retry is acknowledged ...
    assert (await stack.record(second["id"]))["status"] == "sent"  # ... and changes nothing


async def test_a_report_with_entities_is_a_400(make_stack: MakeStack) -> None:
    # No WeChat server sends a DTD: refused, signature or not.
    stack = await make_stack(None)
    [record] = await sent_messages(stack, 1)
    query, _ = sealed(record)
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>'

    status, answer = await post(stack, query, body)

    assert status == 400 and answer["code"] == 40000
    assert answer["data"]["errors"][0]["loc"] == ["body"]
    assert (await stack.record(record["id"]))["status"] == "sent"


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><ToUserName>broken",
        b"<xml><ToUserName>gh_x</ToUserName><FromUserName>oReport_0</FromUserName>"
        b"<CreateTime>1700000000</CreateTime><MsgType>event</MsgType>"
        b"<Event>TEMPLATESENDJOBFINISH</Event><Status>success</Status></xml>",
    ],
    ids=["not-xml", "no-msgid"],
)
async def test_a_signed_report_that_cannot_be_read_is_taken_and_changes_nothing(
    make_stack: MakeStack, body: bytes
) -> None:
    # Refusing it would only make WeChat retry it and alarm the account's owner.
    stack = await make_stack(None)
    [record] = await sent_messages(stack, 1)
    query, _ = sealed(record)

    assert (await post(stack, query, body)) == (200, "success")
    assert (await stack.record(record["id"]))["status"] == "sent"
