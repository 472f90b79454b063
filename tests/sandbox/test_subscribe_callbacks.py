"""Subscribe events from the sandbox (docs/wechat-protocol.md §5.5): popup, change and
sent events, in XML or a mini program's JSON, plaintext or safe mode, each opened by the
gateway's CallbackCodec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.sandbox.helpers import BIZSEND, SUBSCRIBE_SEND, WeChatCalls, subscribe_message
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_MINI_APPID,
    DEFAULT_MINI_ORIGINAL_ID,
    DEFAULT_ORIGINAL_ID,
)
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.server import SandboxServer
from wxgate.wechat.callback import (
    CallbackCodec,
    Envelope,
    SubscribeChangeEvent,
    SubscribePopupEvent,
    SubscribeSentEvent,
)


@dataclass
class Receiver:
    """An account's callback URL: opens every push with the gateway's CallbackCodec, and
    keeps a JSON push's document as it came, to check its shape."""

    appid: str
    queries: list[dict[str, str]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    json_documents: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        query, body = dict(request.query), await request.read()
        self.queries.append(query)
        self.content_types.append(request.content_type)
        codec = CallbackCodec(DEFAULT_CALLBACK_TOKEN, self.appid, DEFAULT_ENCODING_AES_KEY, False)
        self.events.append(codec.open(query, body))
        if request.content_type == "application/json":
            self.json_documents.append(self._json_document(query, body))
        return web.Response(text="success")

    def _json_document(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        document = orjson.loads(body)
        if query.get("encrypt_type") != "aes":
            return document
        assert set(document) == {"ToUserName", "Encrypt"}
        return orjson.loads(
            Envelope(DEFAULT_ENCODING_AES_KEY, self.appid).decrypt(document["Encrypt"])
        )


async def _serve(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/callback", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/callback"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def official_receiver() -> AsyncIterator[Receiver]:
    async for receiver in _serve(Receiver(DEFAULT_APPID)):
        yield receiver


@pytest.fixture
async def mini_receiver() -> AsyncIterator[Receiver]:
    async for receiver in _serve(Receiver(DEFAULT_MINI_APPID)):
        yield receiver


async def _send_after_accept(
    server: SandboxServer, *, mini: bool, touser: str = "oAnn"
) -> tuple[str, dict]:
    """Add template 1001, accept it for `touser`, send once; (template id, answer)."""
    async with aiohttp.ClientSession() as session, SandboxControl(server.base_url) as control:
        wechat = WeChatCalls(session, server.base_url)
        token = await (wechat.mini_token() if mini else wechat.token())
        template_id = await wechat.add_subscribe_template(token)
        appid = DEFAULT_MINI_APPID if mini else DEFAULT_APPID
        await control.popup(appid, touser, template_id)
        path = SUBSCRIBE_SEND if mini else BIZSEND
        answer = await wechat.post(path, subscribe_message(touser, template_id), access_token=token)
        await control.wait_for_callbacks()
    return template_id, answer


async def test_an_accepted_bizsend_is_followed_by_a_sent_event_in_xml(
    official_receiver: Receiver,
):
    async with SandboxServer(callback_url=official_receiver.url) as server:
        template_id, answer = await _send_after_accept(server, mini=False)
    assert answer == {"errcode": 0, "errmsg": "ok"}
    popup, sent = official_receiver.events
    assert isinstance(popup, SubscribePopupEvent)
    assert isinstance(sent, SubscribeSentEvent)
    assert (sent.to_user, sent.from_user) == (DEFAULT_ORIGINAL_ID, "oAnn")
    [item] = sent.items
    assert (item.template_id, item.error_code, item.error_status) == (template_id, 0, "success")
    assert item.msgid > 2**53  # bizsend answers none, but its event carries one
    assert official_receiver.queries[1]["openid"] == "oAnn"


async def test_a_mini_program_sent_event_carries_the_answered_msgid(mini_receiver: Receiver):
    async with SandboxServer(miniprogram_callback_url=mini_receiver.url) as server:
        _, answer = await _send_after_accept(server, mini=True)
    sent = mini_receiver.events[-1]
    assert isinstance(sent, SubscribeSentEvent)
    assert sent.to_user == DEFAULT_MINI_ORIGINAL_ID
    assert sent.items[0].msgid == answer["msgid"]


@pytest.mark.parametrize(
    ("touser", "code", "status"),
    [
        ("blocked_1", 43101, "failed:user block"),
        ("sysfail_1", -1, "failed: system failed"),
        ("freqlimit_1", 43117, "failed:freq limit"),
    ],
)
async def test_a_failing_test_openid_is_accepted_then_reported_failed(
    official_receiver: Receiver, touser: str, code: int, status: str
):
    async with SandboxServer(callback_url=official_receiver.url) as server:
        _, answer = await _send_after_accept(server, mini=False, touser=touser)
    assert answer["errcode"] == 0
    [item] = official_receiver.events[-1].items
    assert (item.error_code, item.error_status) == (code, status)


async def test_safe_mode_sent_event_is_encrypted(official_receiver: Receiver):
    async with SandboxServer(callback_url=official_receiver.url, callback_mode="safe") as server:
        await _send_after_accept(server, mini=False)
    assert all(query["encrypt_type"] == "aes" for query in official_receiver.queries)
    assert isinstance(official_receiver.events[-1], SubscribeSentEvent)


async def test_a_popup_event_lists_each_template_with_its_answer_and_scene(
    official_receiver: Receiver,
):
    async with (
        SandboxServer(callback_url=official_receiver.url) as server,
        aiohttp.ClientSession() as session,
        SandboxControl(server.base_url) as control,
    ):
        wechat = WeChatCalls(session, server.base_url)
        token = await wechat.token()
        ids = [await wechat.add_subscribe_template(token) for _ in range(2)]
        answer = await control.popup(DEFAULT_APPID, "oAnn", ids, "reject", popup_scene=2)
        await control.wait_for_callbacks()
    assert answer["pushed"] is True
    [event] = official_receiver.events
    assert isinstance(event, SubscribePopupEvent)
    assert [(i.template_id, i.status, i.popup_scene) for i in event.items] == [
        (ids[0], "reject", 2),
        (ids[1], "reject", 2),
    ]


async def test_turning_a_template_off_pushes_a_change_event(official_receiver: Receiver):
    async with (
        SandboxServer(callback_url=official_receiver.url) as server,
        aiohttp.ClientSession() as session,
        SandboxControl(server.base_url) as control,
    ):
        wechat = WeChatCalls(session, server.base_url)
        template_id = await wechat.add_subscribe_template(await wechat.token())
        await control.unsubscribe(DEFAULT_APPID, "oAnn", template_id)
        await control.wait_for_callbacks()
    [event] = official_receiver.events
    assert isinstance(event, SubscribeChangeEvent)
    assert [(i.template_id, i.status) for i in event.items] == [(template_id, "reject")]


async def test_a_refused_send_pushes_no_sent_event(official_receiver: Receiver):
    async with (
        SandboxServer(callback_url=official_receiver.url) as server,
        aiohttp.ClientSession() as session,
        SandboxControl(server.base_url) as control,
    ):
        wechat = WeChatCalls(session, server.base_url)
        token = await wechat.token()
        template_id = await wechat.add_subscribe_template(token)
        body = subscribe_message("oAnn", template_id)
        assert (await wechat.post(BIZSEND, body, access_token=token))["errcode"] == 43101
        await control.wait_for_callbacks()
    assert official_receiver.queries == []


async def test_json_sent_event_has_list_as_an_object_of_strings(mini_receiver: Receiver):
    server = SandboxServer(
        miniprogram_callback_url=mini_receiver.url, miniprogram_callback_format="json"
    )
    async with server:
        template_id, answer = await _send_after_accept(server, mini=True)
    assert mini_receiver.content_types == ["application/json", "application/json"]
    sent = mini_receiver.json_documents[-1]
    assert sent["Event"] == "subscribe_msg_sent_event"
    assert (sent["ToUserName"], sent["FromUserName"]) == (DEFAULT_MINI_ORIGINAL_ID, "oAnn")
    assert isinstance(sent["CreateTime"], str) and sent["CreateTime"].isdigit()
    assert sent["List"] == {
        "TemplateId": template_id,
        "MsgID": str(answer["msgid"]),
        "ErrorCode": "0",
        "ErrorStatus": "success",
    }
    event = mini_receiver.events[-1]
    assert isinstance(event, SubscribeSentEvent)
    assert event.items[0].msgid == answer["msgid"]


async def test_json_popup_for_two_templates_has_list_as_an_array(mini_receiver: Receiver):
    server = SandboxServer(
        miniprogram_callback_url=mini_receiver.url, miniprogram_callback_format="json"
    )
    async with (
        server,
        aiohttp.ClientSession() as session,
        SandboxControl(server.base_url) as control,
    ):
        wechat = WeChatCalls(session, server.base_url)
        token = await wechat.mini_token()
        ids = [await wechat.add_subscribe_template(token) for _ in range(2)]
        await control.popup(DEFAULT_MINI_APPID, "oAnn", ids)
        await control.wait_for_callbacks()
    [popup] = mini_receiver.json_documents
    assert popup["Event"] == "subscribe_msg_popup_event"
    assert popup["List"] == [
        {"TemplateId": ids[0], "SubscribeStatusString": "accept", "PopupScene": "0"},
        {"TemplateId": ids[1], "SubscribeStatusString": "accept", "PopupScene": "0"},
    ]
    [event] = mini_receiver.events
    assert isinstance(event, SubscribePopupEvent)
    assert [item.template_id for item in event.items if item.accepted] == ids


async def test_json_safe_mode_seals_the_document_with_the_aes_key(mini_receiver: Receiver):
    server = SandboxServer(
        miniprogram_callback_url=mini_receiver.url,
        miniprogram_callback_format="json",
        callback_mode="safe",
    )
    async with server:
        await _send_after_accept(server, mini=True)
    assert all(query["encrypt_type"] == "aes" for query in mini_receiver.queries)
    assert mini_receiver.json_documents[-1]["Event"] == "subscribe_msg_sent_event"
    assert isinstance(mini_receiver.events[-1], SubscribeSentEvent)
