"""wechatpy 1.8, a client nobody here wrote, sends subscribe messages to the sandbox
unmodified but for its base URL: `client.message.send_subscribe_message` (bizsend) and
`client.wxa.send_subscribe_message` (subscribe/send)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from tests.sandbox.helpers import ORDER_SHIPPED_DATA, WeChatCalls
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_SECRET,
    DEFAULT_SECRET,
)
from wxgate.sandbox.control import SandboxControl


def _official_client(base_url: str, token: str) -> WeChatClient:
    client = WeChatClient(DEFAULT_APPID, DEFAULT_SECRET, access_token=token)
    client.API_BASE_URL = f"{base_url}/cgi-bin/"
    return client


def _mini_program_client(base_url: str, token: str) -> WeChatClient:
    client = WeChatClient(DEFAULT_MINI_APPID, DEFAULT_MINI_SECRET, access_token=token)
    client.wxa.API_BASE_URL = f"{base_url}/"  # the wxa API family has its own base URL
    return client


async def _granted_template(
    wechat: WeChatCalls, control: SandboxControl, token: str, appid: str
) -> str:
    template_id = await wechat.add_subscribe_template(token)
    await control.popup(appid, "oAnn", template_id)
    return template_id


async def test_wechatpy_sends_a_subscribe_notification_through_bizsend(
    sandbox: Any, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.token()
    template_id = await _granted_template(wechat, sandbox_control, token, DEFAULT_APPID)
    client = _official_client(sandbox.base_url, token)
    answer = await asyncio.to_thread(
        client.message.send_subscribe_message,
        "oAnn",
        template_id,
        ORDER_SHIPPED_DATA,
        page="https://example.com/orders/1",
    )
    assert answer == {"errcode": 0, "errmsg": "ok"}
    [item] = await sandbox_control.messages(kind="subscribe")
    assert (item["touser"], item["template_id"]) == ("oAnn", template_id)
    assert item["page"] == "https://example.com/orders/1"


async def test_wechatpy_sends_a_mini_program_subscribe_message(
    sandbox: Any, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.mini_token()
    template_id = await _granted_template(wechat, sandbox_control, token, DEFAULT_MINI_APPID)
    client = _mini_program_client(sandbox.base_url, token)
    answer = await asyncio.to_thread(
        client.wxa.send_subscribe_message,
        "oAnn",
        template_id,
        ORDER_SHIPPED_DATA,
        page="pages/order?id=1",
    )
    assert answer["errcode"] == 0
    [item] = await sandbox_control.messages(kind="miniprogram")
    assert item["msgid"] == answer["msgid"]
    assert item["page"] == "pages/order?id=1"


async def test_wechatpy_raises_43101_for_a_second_send_on_a_one_time_grant(
    sandbox: Any, wechat: WeChatCalls, sandbox_control: SandboxControl
):
    token = await wechat.mini_token()
    template_id = await _granted_template(wechat, sandbox_control, token, DEFAULT_MINI_APPID)
    client = _mini_program_client(sandbox.base_url, token)
    send = client.wxa.send_subscribe_message
    await asyncio.to_thread(send, "oAnn", template_id, ORDER_SHIPPED_DATA)
    with pytest.raises(WeChatClientException) as refused:
        await asyncio.to_thread(send, "oAnn", template_id, ORDER_SHIPPED_DATA)
    assert refused.value.errcode == 43101
