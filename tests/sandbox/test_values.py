"""Typed values at the sandbox: it answers 47003 exactly where the gateway's own
`typed_value_problem` finds a problem, for each kind of message, with WeChat's real
shapes (docs/wechat-protocol.md §2.3)."""

from __future__ import annotations

import pytest

from tests.sandbox.helpers import BIZSEND, SUBSCRIBE_SEND, WeChatCalls, message
from wxgate.sandbox.config import DEFAULT_APPID, DEFAULT_MINI_APPID
from wxgate.sandbox.control import SandboxControl
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.template import typed_value_problem

TEMPLATE_SAMPLES = [
    ("date1", "2018-01"),
    ("date1", "01-01"),
    ("date1", "2018年1月"),
    ("date1", "2018-01-01 15:01"),
    ("date1", "明天"),
    ("time2", "15:01"),
    ("time2", "2018-01 15:01"),
    ("time2", "25:00"),
    ("amount3", "¥123456789012"),
    ("amount3", "¥1234567890123"),
    ("amount3", "12.50元"),
    ("thing4", "二十个字以内的事物"),
    ("thing4", "超" * 21),
    ("const5", ""),
    ("character_string6", "订单1"),
    ("phone_number7", "+86-0766-66888866"),
    ("keyword1", "未分类的旧式关键词" * 3),
]


@pytest.fixture
async def token(wechat: WeChatCalls) -> str:
    return await wechat.token()


@pytest.mark.parametrize(("key", "value"), TEMPLATE_SAMPLES)
async def test_template_send_answers_47003_exactly_where_the_gateway_rule_does(
    wechat: WeChatCalls, token: str, key: str, value: str
):
    refused = typed_value_problem(key, value, kind=MessageKind.TEMPLATE) is not None
    answer = await wechat.send(token, message(data={key: {"value": value}}))
    assert answer["errcode"] == (47003 if refused else 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("date1", "2018-01"),
        ("date1", "01-01"),
        ("date1", "2018年1月"),
        ("amount2", "¥123456789012"),
    ],
)
async def test_documented_shapes_and_twelve_digit_amounts_are_accepted(
    wechat: WeChatCalls, token: str, key: str, value: str
):
    answer = await wechat.send(token, message(data={key: {"value": value}}))
    assert answer["errcode"] == 0


async def test_thirteen_digit_amounts_are_47003(wechat: WeChatCalls, token: str):
    answer = await wechat.send(token, message(data={"amount2": {"value": "¥1234567890123"}}))
    assert answer["errcode"] == 47003


# Library template 1002 (付款成功通知) with keys character_string1, amount2, time3.
PAYMENT = {
    "character_string1": {"value": "XN2024050100123"},
    "amount2": {"value": "¥128.00"},
    "time3": {"value": "2024-05-01 15:01"},
}
SUBSCRIBE_SAMPLES = [
    ("amount2", "¥1234567890"),
    ("amount2", "¥12345678901"),
    ("time3", "2018-01 15:01"),
    ("time3", "15:01~16:00"),
    ("time3", "下午"),
    ("character_string1", "XN-2024/05"),
]
KINDS = {
    MessageKind.SUBSCRIBE: (BIZSEND, DEFAULT_APPID),
    MessageKind.MINIPROGRAM: (SUBSCRIBE_SEND, DEFAULT_MINI_APPID),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("key", "value"), SUBSCRIBE_SAMPLES)
async def test_subscribe_sends_answer_47003_exactly_where_the_gateway_rule_does(
    wechat: WeChatCalls,
    sandbox_control: SandboxControl,
    kind: MessageKind,
    key: str,
    value: str,
):
    path, appid = KINDS[kind]
    token = await (wechat.mini_token() if kind is MessageKind.MINIPROGRAM else wechat.token())
    template_id = await wechat.add_subscribe_template(token, "1002", [1, 2, 3])
    await sandbox_control.popup(appid, "oAnn", template_id)
    data = {**PAYMENT, key: {"value": value}}
    body = {"touser": "oAnn", "template_id": template_id, "data": data}
    refused = typed_value_problem(key, value, kind=kind) is not None
    answer = await wechat.post(path, body, access_token=token)
    assert answer["errcode"] == (47003 if refused else 0)


async def test_subscribe_amounts_stop_at_ten_digits(
    wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.mini_token()
    template_id = await wechat.add_subscribe_template(token, "1002", [1, 2, 3])
    await sandbox_control.popup(DEFAULT_MINI_APPID, "oAnn", template_id)
    data = {**PAYMENT, "amount2": {"value": "¥12345678901"}}
    body = {"touser": "oAnn", "template_id": template_id, "data": data}
    assert (await wechat.post(SUBSCRIBE_SEND, body, access_token=token))["errcode"] == 47003
