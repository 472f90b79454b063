"""template/send at the sandbox answers as WeChat would (docs/wechat-protocol.md §2, §9 item 4)."""

from __future__ import annotations

import re

import pytest

from tests.sandbox.helpers import (
    SEND,
    WeChatCalls,
    message,
    to_next_beijing_day,
    to_next_minute,
)
from wxgate.sandbox.control import SandboxControl
from wxgate.wechat.errors import CATALOGUE

RID = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


@pytest.fixture
async def token(wechat: WeChatCalls) -> str:
    return await wechat.token()


async def test_accepted_send_answers_ok_with_an_int64_msgid_above_2_53(
    wechat: WeChatCalls, token: str
):
    answer = await wechat.send(token)
    assert answer["errcode"] == 0
    assert answer["errmsg"] == "ok"
    assert isinstance(answer["msgid"], int)
    assert 2**53 < answer["msgid"] < 2**63


async def test_msgid_in_the_inbox_is_the_exact_answered_one(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    first = (await wechat.send(token))["msgid"]
    second = (await wechat.send(token))["msgid"]
    inbox = await sandbox_control.messages()
    assert [m["msgid"] for m in inbox] == [first, second]
    assert second == first + 1  # adjacent int64s, which a double could not tell apart


async def test_inbox_keeps_what_was_sent(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    body = message(
        touser="oAlice",
        template_id="TPL_order",
        url="https://example.com/o/1",
        miniprogram={"appid": "wxmini", "pagepath": "pages/o?id=1"},
        client_msg_id="m-1",
    )
    await wechat.send(token, body)
    [item] = await sandbox_control.messages()
    assert item["touser"] == "oAlice"
    assert item["template_id"] == "TPL_order"
    assert item["client_msg_id"] == "m-1"
    assert item["data"] == body["data"]
    assert item["url"] == "https://example.com/o/1"
    assert item["miniprogram"] == {"appid": "wxmini", "pagepath": "pages/o?id=1"}
    assert item["report_status"] == "success"
    assert item["received_at"] > 0


@pytest.mark.parametrize(
    ("touser", "errcode"),
    [("invalid_1", 40003), ("unfollowed_1", 43004), ("refused_1", 43101)],
)
async def test_test_openids_are_refused_with_their_errcode(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str, touser: str, errcode: int
):
    answer = await wechat.send(token, message(touser=touser))
    assert answer["errcode"] == errcode
    assert answer["errmsg"].startswith(CATALOGUE[errcode].errmsg)
    assert RID.search(answer["errmsg"])
    assert await sandbox_control.messages() == []


@pytest.mark.parametrize(
    ("touser", "status"),
    [
        ("blocked_1", "failed:user block"),
        ("sysfail_1", "failed: system failed"),
        ("freqlimit_1", "failed:freq limit"),
    ],
)
async def test_reporting_openids_are_accepted_and_report_a_failure(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str, touser: str, status: str
):
    assert (await wechat.send(token, message(touser=touser)))["errcode"] == 0
    [item] = await sandbox_control.messages()
    assert item["report_status"] == status


async def test_busy_openid_gets_system_error_twice_then_succeeds(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    answers = [(await wechat.send(token, message(touser="busy_1")))["errcode"] for _ in range(3)]
    assert answers == [-1, -1, 0]
    assert (await wechat.send(token, message(touser="busy_2")))["errcode"] == -1
    assert len(await sandbox_control.messages()) == 1


async def test_bad_template_is_40037(wechat: WeChatCalls, token: str):
    answer = await wechat.send(token, message(template_id="bad_tpl"))
    assert answer["errcode"] == 40037


async def test_bad_typed_value_is_47003_naming_the_key(wechat: WeChatCalls, token: str):
    body = message()
    body["data"]["thing1"] = {"value": "这是一个超过二十个字符的事物描述用来测试长度限制的"}
    answer = await wechat.send(token, body)
    assert answer["errcode"] == 47003
    assert answer["errmsg"].startswith("argument invalid! data.thing1.value invalid rid: ")


async def test_non_string_value_is_47003(wechat: WeChatCalls, token: str):
    body = message()
    body["data"]["amount3"] = {"value": 12}
    answer = await wechat.send(token, body)
    assert answer["errcode"] == 47003
    assert "data.amount3.value" in answer["errmsg"]


async def test_untyped_keys_are_not_checked_by_type(wechat: WeChatCalls, token: str):
    body = message()
    body["data"] = {"keyword1": {"value": "任意内容" * 3}, "remark": {"value": "x"}}
    assert (await wechat.send(token, body))["errcode"] == 0


async def test_empty_body_is_44002(wechat: WeChatCalls, token: str):
    assert (await wechat.post(SEND, b"", access_token=token))["errcode"] == 44002


async def test_body_that_is_not_json_is_47001(wechat: WeChatCalls, token: str):
    assert (await wechat.post(SEND, b"touser=o1", access_token=token))["errcode"] == 47001


@pytest.mark.parametrize(
    ("missing", "errcode"), [("touser", 40003), ("template_id", 40037), ("data", 47001)]
)
async def test_missing_required_field_answers_as_wechat_does(
    wechat: WeChatCalls, token: str, missing: str, errcode: int
):
    body = message()
    del body[missing]
    assert (await wechat.send(token, body))["errcode"] == errcode


async def test_get_on_template_send_is_43002(wechat: WeChatCalls, token: str):
    assert (await wechat.get(SEND, access_token=token))["errcode"] == 43002


async def test_duplicate_client_msg_id_within_ten_minutes_is_absorbed(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    body = message(client_msg_id="order-42")
    first = await wechat.send(token, body)
    await sandbox_control.advance_clock(599)
    again = await wechat.send(token, body)
    assert again == {"errcode": 0, "errmsg": "ok", "msgid": first["msgid"]}
    assert len(await sandbox_control.messages(client_msg_id="order-42")) == 1
    stats = await sandbox_control.stats()
    assert stats["duplicates_absorbed"] == 1
    assert stats["inbox"] == 1


async def test_same_client_msg_id_after_ten_minutes_is_a_new_message(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    body = message(client_msg_id="order-42")
    first = await wechat.send(token, body)
    await sandbox_control.advance_clock(601)
    again = await wechat.send(token, body)
    assert again["msgid"] != first["msgid"]
    assert len(await sandbox_control.messages(client_msg_id="order-42")) == 2


async def test_client_msg_id_is_per_recipient(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await wechat.send(token, message(touser="oA", client_msg_id="same"))
    await wechat.send(token, message(touser="oB", client_msg_id="same"))
    assert len(await sandbox_control.messages(client_msg_id="same")) == 2


async def test_daily_quota_answers_45009_until_the_next_beijing_day(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await to_next_beijing_day(sandbox_control)
    token = await wechat.token()
    await sandbox_control.set_faults(daily_quota=2)
    answers = [(await wechat.send(token))["errcode"] for _ in range(3)]
    assert answers == [0, 0, 45009]
    await to_next_beijing_day(sandbox_control)
    token = await wechat.token()
    assert (await wechat.send(token))["errcode"] == 0


async def test_minute_limit_answers_45011_until_the_next_minute(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await to_next_minute(sandbox_control)
    await sandbox_control.set_faults(minute_limit=3)
    answers = [(await wechat.send(token))["errcode"] for _ in range(4)]
    assert answers == [0, 0, 0, 45011]
    assert "retry next minute" in (await wechat.send(token))["errmsg"]
    await sandbox_control.advance_clock(60)
    assert (await wechat.send(token))["errcode"] == 0


async def test_sends_are_counted_by_errcode(
    wechat: WeChatCalls, sandbox_control: SandboxControl, token: str
):
    await wechat.send(token)
    await wechat.send(token, message(touser="invalid_x"))
    await wechat.send(token, message(template_id="bad_x"))
    stats = await sandbox_control.stats()
    assert stats["sends"] == {"0": 1, "40003": 1, "40037": 1}
    assert stats["sends_total"] == 3
