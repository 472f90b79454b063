"""GET/POST /wechat/callback/{app}: WeChat's URL check and delivery reports."""

from __future__ import annotations

import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from wxgate.backends.base import Outcome, Status
from wxgate.wechat.callback import CallbackCodec, sign, template_finish_xml

from .conftest import (
    AES_KEY,
    APPID,
    CALLBACK_TOKEN,
    SAFE_APPID,
    Gateway,
    GatewayFactory,
    app_config,
    make_settings,
    message_body,
)

PLAIN = CallbackCodec(CALLBACK_TOKEN, APPID)
SAFE = CallbackCodec(CALLBACK_TOKEN, SAFE_APPID, AES_KEY)
FORGER = CallbackCodec("not-the-callback-token", APPID)
MSGID = 3487542469355618313  # above 2**53


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    apps = {
        "default": app_config(APPID, callback_token=CALLBACK_TOKEN),
        "safe": app_config(SAFE_APPID, callback_token=CALLBACK_TOKEN, encoding_aes_key=AES_KEY),
        "silent": app_config("wx00000000000000d4"),  # no callback token configured
    }
    return await gateway_factory(make_settings(apps=apps))


async def sent_message(gateway: Gateway, app: str, msgid: int = MSGID, touser: str = "oA") -> str:
    _, body, _ = await gateway.post("/v1/messages", message_body(app=app, touser=touser))
    message_id: str = body["data"]["id"]
    await gateway.settle(message_id, Outcome.SENT, msgid=msgid)
    return message_id


def report(msgid: int = MSGID, status: str = "success", touser: str = "oA") -> str:
    return template_finish_xml("gh_0123456789ab", touser, int(time.time()), msgid, status)


async def push(gateway: Gateway, app: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
    status, answer, _ = await gateway.request(
        "POST", f"/wechat/callback/{app}", key=None, params=query, data=body
    )
    return status, answer


def now_ts() -> str:
    return str(int(time.time()))


async def status_of(gateway: Gateway, message_id: str) -> Status:
    record = await gateway.backend.get(message_id)
    assert record is not None
    return record.status


def callbacks(gateway: Gateway, app: str, result: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "wxgate_callbacks_total", {"app": app, "result": result}
    )
    return value or 0.0


async def test_url_check_answers_the_echostr_as_plain_text(gateway: Gateway) -> None:
    ts, nonce = now_ts(), "486452656"
    query = {"signature": sign(CALLBACK_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    status, body, reply = await gateway.request(
        "GET", "/wechat/callback/default", key=None, params={**query, "echostr": "e-12345"}
    )
    assert (status, body) == (200, "e-12345")
    assert reply.content_type == "text/plain"


async def test_url_check_with_a_bad_signature_is_403(gateway: Gateway) -> None:
    ts, nonce = now_ts(), "486452656"
    query = {"signature": sign("wrong", ts, nonce), "timestamp": ts, "nonce": nonce}
    status, body, _ = await gateway.request(
        "GET", "/wechat/callback/default", key=None, params={**query, "echostr": "e-12345"}
    )
    assert status == 403 and body["code"] == 40300


async def test_plain_success_report_marks_the_message_delivered(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "default")
    query, body = PLAIN.seal(report(), now_ts(), "n-1", openid="oA")
    assert await push(gateway, "default", query, body) == (200, "success")
    assert await status_of(gateway, message_id) is Status.DELIVERED
    assert callbacks(gateway, "default", "applied") == 1


async def test_safe_mode_failed_report_marks_the_message_rejected(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "safe")
    query, body = SAFE.seal(report(status="failed:user block"), now_ts(), "n-2", openid="oA")
    assert query["encrypt_type"] == "aes"
    assert await push(gateway, "safe", query, body) == (200, "success")
    record = await gateway.backend.get(message_id)
    assert record is not None and record.status is Status.REJECTED
    assert record.report_status == "failed:user block"


async def test_forged_signature_is_403_and_changes_nothing(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "default")
    query, body = FORGER.seal(report(), now_ts(), "n-3")
    status, answer = await push(gateway, "default", query, body)
    assert status == 403 and answer["code"] == 40300
    assert await status_of(gateway, message_id) is Status.SENT
    assert callbacks(gateway, "default", "forbidden") == 1


async def test_forged_msg_signature_is_403_and_changes_nothing(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "safe")
    query, body = SAFE.seal(report(), now_ts(), "n-4")
    query["msg_signature"] = sign(CALLBACK_TOKEN, "0", "0", "0")
    status, _ = await push(gateway, "safe", query, body)
    assert status == 403
    assert await status_of(gateway, message_id) is Status.SENT


async def test_plaintext_push_to_a_safe_mode_app_is_403(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "safe")
    query, body = SAFE.seal(report(), now_ts(), "n-5", encrypt=False)
    status, _ = await push(gateway, "safe", query, body)
    assert status == 403
    assert await status_of(gateway, message_id) is Status.SENT


@pytest.mark.parametrize("skew_s", [-1000, 1000])
async def test_timestamp_outside_the_window_is_403_and_changes_nothing(
    gateway: Gateway, skew_s: int
) -> None:
    message_id = await sent_message(gateway, "default")
    query, body = PLAIN.seal(report(), str(int(time.time()) + skew_s), "n-6")
    status, answer = await push(gateway, "default", query, body)
    assert status == 403 and "timestamp" in answer["msg"]
    assert await status_of(gateway, message_id) is Status.SENT
    assert callbacks(gateway, "default", "replayed") == 1


async def test_a_repeated_nonce_answers_success_and_changes_nothing(gateway: Gateway) -> None:
    first = await sent_message(gateway, "default", msgid=MSGID, touser="oA")
    second = await sent_message(gateway, "default", msgid=MSGID + 1, touser="oB")
    ts = now_ts()
    query, body = PLAIN.seal(report(MSGID), ts, "n-7")
    assert await push(gateway, "default", query, body) == (200, "success")
    # Plaintext signatures do not cover the body: the same query with another body
    # must not be believed a second time.
    again, other_body = PLAIN.seal(report(MSGID + 1, touser="oB"), ts, "n-7")
    assert await push(gateway, "default", again, other_body) == (200, "success")
    assert await status_of(gateway, first) is Status.DELIVERED
    assert await status_of(gateway, second) is Status.SENT
    assert callbacks(gateway, "default", "duplicate") == 1


async def test_a_retried_push_with_the_same_nonce_is_acknowledged(gateway: Gateway) -> None:
    message_id = await sent_message(gateway, "safe")
    query, body = SAFE.seal(report(), now_ts(), "n-8")
    assert await push(gateway, "safe", query, body) == (200, "success")
    assert await push(gateway, "safe", query, body) == (200, "success")
    assert await status_of(gateway, message_id) is Status.DELIVERED


async def test_a_report_for_an_unknown_msgid_is_acknowledged(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(msgid=12345), now_ts(), "n-9")
    assert await push(gateway, "default", query, body) == (200, "success")
    assert callbacks(gateway, "default", "unknown_msgid") == 1


async def test_other_events_are_acknowledged_and_ignored(gateway: Gateway) -> None:
    xml = (
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oA]]>"
        "</FromUserName><CreateTime>1714037059</CreateTime><MsgType><![CDATA[event]]>"
        "</MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    )
    query, body = PLAIN.seal(xml, now_ts(), "n-10")
    assert await push(gateway, "default", query, body) == (200, "success")
    assert callbacks(gateway, "default", "ignored") == 1


async def test_a_signed_push_that_cannot_be_read_is_taken_logged_and_counted(
    gateway: Gateway,
) -> None:
    # A 400 would make WeChat retry the push and alarm the account's owner.
    query, _ = PLAIN.seal(report(), now_ts(), "n-11")
    with capture_logs() as logs:
        status, answer = await push(gateway, "default", query, b"<xml><MsgType>event")
    assert (status, answer) == (200, "success")
    assert callbacks(gateway, "default", "unparseable") == 1
    [warning] = [line for line in logs if line["event"] == "callback_unparseable"]
    assert warning["log_level"] == "warning" and warning["app"] == "default"


async def test_unknown_app_is_404(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(), now_ts(), "n-12")
    status, answer = await push(gateway, "nope", query, body)
    assert status == 404 and answer["code"] == 40400


async def test_an_app_without_a_callback_token_refuses_pushes(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(), now_ts(), "n-13")
    status, _ = await push(gateway, "silent", query, body)
    assert status == 403
