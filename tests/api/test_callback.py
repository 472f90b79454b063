"""GET/POST /wechat/callback/{app}: WeChat's URL check and delivery reports."""

from __future__ import annotations

import time
from typing import Any

import pytest
import structlog.testing
from prometheus_client import generate_latest

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


YEAR_S = 365 * 24 * 3600


async def test_url_check_with_a_year_old_timestamp_is_403_and_counted_as_replayed(
    gateway: Gateway,
) -> None:
    # A captured URL check stays validly signed for ever; the POST's replay window applies.
    ts, nonce = str(int(time.time()) - YEAR_S), "486452656"
    query = {"signature": sign(CALLBACK_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}

    with structlog.testing.capture_logs() as logs:
        status, body, _ = await gateway.request(
            "GET", "/wechat/callback/default", key=None, params={**query, "echostr": "e-12345"}
        )

    assert status == 403 and body["code"] == 40300 and "timestamp" in body["msg"]
    assert "e-12345" not in str(body)
    assert callbacks(gateway, "default", "replayed") == 1
    assert refused(gateway, "default", "timestamp") == 1
    [warning] = [line for line in logs if line["event"] == "callback refused"]
    assert warning["reason"] == "timestamp" and "behind" in warning["detail"]


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
    with structlog.testing.capture_logs() as logs:
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


# -- a refused callback names its app, reason and fix, and is counted -------------------------


def refused(gateway: Gateway, app: str, reason: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "wxgate_callbacks_refused_total", {"app": app, "reason": reason}
    )
    return value or 0.0


async def refusal_warning(gateway: Gateway, app: str, query: dict[str, str], body: bytes) -> Any:
    """POST one push that must be refused; the one WARNING it logged."""
    with structlog.testing.capture_logs() as logs:
        status, _ = await push(gateway, app, query, body)
    assert status in (400, 403, 404)
    [warning] = [line for line in logs if line["event"] == "callback refused"]
    assert warning["log_level"] == "warning"
    return warning


def plain_query(nonce: str, timestamp: str | None = None) -> dict[str, str]:
    ts = now_ts() if timestamp is None else timestamp
    return {"signature": sign(CALLBACK_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}


def safe_query(nonce: str, encrypt: str) -> tuple[dict[str, str], bytes]:
    """A safe-mode query whose msg_signature holds over `encrypt`, whatever it is."""
    query = plain_query(nonce) | {"encrypt_type": "aes"}
    query["msg_signature"] = sign(CALLBACK_TOKEN, query["timestamp"], nonce, encrypt)
    return query, f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


async def test_a_bad_signature_warns_to_set_the_consoles_token(gateway: Gateway) -> None:
    query, body = FORGER.seal(report(), now_ts(), "r-1")

    warning = await refusal_warning(gateway, "default", query, body)

    assert (warning["app"], warning["reason"]) == ("default", "signature")
    assert "apps.default.callback_token" in warning["fix"] and "Token" in warning["fix"]
    assert refused(gateway, "default", "signature") == 1


async def test_a_bad_msg_signature_warns_to_set_the_consoles_token(gateway: Gateway) -> None:
    query, body = SAFE.seal(report(), now_ts(), "r-2")
    query["msg_signature"] = sign(CALLBACK_TOKEN, "0", "0", "0")

    warning = await refusal_warning(gateway, "safe", query, body)

    assert (warning["app"], warning["reason"]) == ("safe", "msg_signature")
    assert "apps.safe.callback_token" in warning["fix"]
    assert refused(gateway, "safe", "msg_signature") == 1


async def test_plaintext_to_a_safe_mode_app_warns_to_switch_the_console_to_safe_mode(
    gateway: Gateway,
) -> None:
    query, body = SAFE.seal(report(), now_ts(), "r-3", encrypt=False)

    warning = await refusal_warning(gateway, "safe", query, body)

    assert (warning["app"], warning["reason"]) == ("safe", "encryption_required")
    assert "requires safe mode" in warning["fix"] and "安全模式" in warning["fix"]
    assert "clear apps.safe.encoding_aes_key" in warning["fix"]
    assert refused(gateway, "safe", "encryption_required") == 1


async def test_an_envelope_that_does_not_open_warns_to_set_the_aes_key(gateway: Gateway) -> None:
    query, body = safe_query("r-4", "not base64 at all!")

    warning = await refusal_warning(gateway, "safe", query, body)

    assert (warning["app"], warning["reason"]) == ("safe", "decrypt")
    assert "apps.safe.encoding_aes_key" in warning["fix"] and "EncodingAESKey" in warning["fix"]
    assert refused(gateway, "safe", "decrypt") == 1


async def test_an_encrypted_push_to_an_app_without_a_key_warns_to_set_one(
    gateway: Gateway,
) -> None:
    query, body = SAFE.seal(report(), now_ts(), "r-5")

    warning = await refusal_warning(gateway, "default", query, body)

    assert (warning["app"], warning["reason"]) == ("default", "decrypt")
    assert "apps.default.encoding_aes_key" in warning["fix"]
    assert refused(gateway, "default", "decrypt") == 1


async def test_an_envelope_for_another_appid_warns_to_set_the_appid(gateway: Gateway) -> None:
    other_account = CallbackCodec(CALLBACK_TOKEN, "wx00000000000000e5", AES_KEY)
    query, body = other_account.seal(report(), now_ts(), "r-6")

    warning = await refusal_warning(gateway, "safe", query, body)

    assert (warning["app"], warning["reason"]) == ("safe", "appid")
    assert "apps.safe.appid" in warning["fix"]
    assert refused(gateway, "safe", "appid") == 1


async def test_a_safe_mode_body_that_is_not_an_envelope_is_a_refusal_named_xml(
    gateway: Gateway,
) -> None:
    # Nothing of it can be verified (its msg_signature covers the Encrypt it lacks);
    # a plaintext push that cannot be read is signed, and taken: see above.
    query = plain_query("r-7") | {"encrypt_type": "aes", "msg_signature": "0" * 40}
    warning = await refusal_warning(gateway, "safe", query, b"<xml><MsgType>")

    assert (warning["app"], warning["reason"]) == ("safe", "xml")
    assert "only WeChat" in warning["fix"]
    assert refused(gateway, "safe", "xml") == 1


async def test_a_garbled_timestamp_is_a_refusal_named_field(gateway: Gateway) -> None:
    query = plain_query("r-8", timestamp="soon")

    warning = await refusal_warning(gateway, "default", query, report().encode())

    assert (warning["app"], warning["reason"]) == ("default", "field")
    assert refused(gateway, "default", "field") == 1


async def test_a_stale_timestamp_warns_to_check_the_clock(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(), str(int(time.time()) - 1000), "r-9")

    warning = await refusal_warning(gateway, "default", query, body)

    assert (warning["app"], warning["reason"]) == ("default", "timestamp")
    assert "clock" in warning["fix"] and "callback_max_age_s" in warning["fix"]
    assert "behind" in warning["detail"]
    assert refused(gateway, "default", "timestamp") == 1


async def test_an_app_without_a_callback_token_warns_to_set_one(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(), now_ts(), "r-10")

    warning = await refusal_warning(gateway, "silent", query, body)

    assert (warning["app"], warning["reason"]) == ("silent", "no_callback_token")
    assert "apps.silent.callback_token" in warning["fix"]
    assert refused(gateway, "silent", "no_callback_token") == 1


async def test_an_unknown_app_is_counted_under_a_fixed_label(gateway: Gateway) -> None:
    query, body = PLAIN.seal(report(), now_ts(), "r-11")

    warning = await refusal_warning(gateway, "shpo", query, body)

    assert (warning["app"], warning["reason"]) == ("shpo", "unknown_app")
    assert "[apps.<name>]" in warning["fix"]
    assert refused(gateway, "_unknown", "unknown_app") == 1
    assert "shpo" not in generate_latest(gateway.metrics.registry).decode()


async def test_a_url_check_with_a_bad_signature_is_a_refusal_too(gateway: Gateway) -> None:
    ts = now_ts()
    query = {"signature": sign("wrong", ts, "r-12"), "timestamp": ts, "nonce": "r-12"}

    with structlog.testing.capture_logs() as logs:
        status, _, _ = await gateway.request(
            "GET", "/wechat/callback/default", key=None, params={**query, "echostr": "e-1"}
        )

    assert status == 403
    assert [line["reason"] for line in logs if line["event"] == "callback refused"] == ["signature"]
    assert refused(gateway, "default", "signature") == 1


async def test_an_accepted_push_logs_no_refusal(gateway: Gateway) -> None:
    await sent_message(gateway, "default")
    query, body = PLAIN.seal(report(), now_ts(), "r-13")

    with structlog.testing.capture_logs() as logs:
        assert await push(gateway, "default", query, body) == (200, "success")

    assert not [line for line in logs if line["event"] == "callback refused"]
    assert refused(gateway, "default", "signature") == 0
