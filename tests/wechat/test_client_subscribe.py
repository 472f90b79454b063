"""AccountClient's subscribe sends and subscribe template library over real HTTP.

The sandbox on this branch has no bizsend, subscribe/send or /wxaapi/newtmpl routes
yet, so these tests run against `SubscribeImitation`: a tiny aiohttp server in this
file that answers those paths the way docs/wechat-protocol.md §4 and the protocol
review's part (c) say WeChat does (bizsend without a msgid, 200018 without ids, 415
for a JSON addtemplate), plus the stable_token endpoint, rotating its token on demand.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from wxgate.wechat.client import AccountClient, ClientEvent, SendOk, TokenFetcher, WeChatHttp
from wxgate.wechat.errors import RecipientError, RequestError, TransportError
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.subscribe import parse_subscribe
from wxgate.wechat.subscribe_library import Category, PubTemplateKeyword, PubTemplateTitle
from wxgate.wechat.template_content import TemplateKey
from wxgate.wechat.token import TokenManager
from wxgate.wechat.tokenstore import MemoryTokenStore

RID = " rid: 6486c0be-1a245810-70697600"
MINI_MSGID = 1988810812324364291  # above 2**53, as observed
CONTENT = "房间:{{enum_string2.DATA}}\n预约时间:{{date1.DATA}}\n备注:{{thing3.DATA}}"


def _error(errcode: int, errmsg: str) -> web.Response:
    return web.json_response({"errcode": errcode, "errmsg": errmsg + RID})


class SubscribeImitation:
    """WeChat's subscribe endpoints as documented, for one account, in memory."""

    def __init__(self) -> None:
        self.serial = itertools.count(1)
        self.token = "imitation-token-1"
        self.sends: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[str] = []
        self.templates: dict[str, dict[str, Any]] = {}
        self.forms: list[list[tuple[str, str]]] = []

    def rotate_token(self) -> None:
        """Another system force-refreshes: the current token is retired at once."""
        self.token = f"imitation-token-{next(self.serial) + 1}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        app.router.add_post("/cgi-bin/message/subscribe/bizsend", self._bizsend)
        app.router.add_post("/cgi-bin/message/subscribe/send", self._send)
        base = "/wxaapi/newtmpl/"
        app.router.add_get(base + "getcategory", self._categories)
        app.router.add_get(base + "getpubtemplatetitles", self._titles)
        app.router.add_get(base + "getpubtemplatekeywords", self._keywords)
        app.router.add_post(base + "addtemplate", self._add)
        app.router.add_get(base + "gettemplate", self._list)
        app.router.add_post(base + "deltemplate", self._delete)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.path != "/cgi-bin/stable_token" and request.query.get("access_token") != (
            self.token
        ):
            return _error(40001, "invalid credential, access_token is invalid or not latest")
        return await handler(request)

    async def _stable_token(self, _request: web.Request) -> web.Response:
        return web.json_response({"access_token": self.token, "expires_in": 7200})

    async def _bizsend(self, request: web.Request) -> web.Response:
        return await self._accept(request, "bizsend", {})  # no msgid (review part (c))

    async def _send(self, request: web.Request) -> web.Response:
        return await self._accept(request, "send", {"msgid": MINI_MSGID})

    async def _accept(self, request: web.Request, path: str, extra: dict[str, Any]) -> web.Response:
        body = await request.json()
        if body["touser"].startswith("refused_"):
            return _error(43101, "user refuse to accept the msg")
        self.sends.append((path, body))
        return web.json_response({"errcode": 0, "errmsg": "ok", **extra})

    async def _categories(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"errcode": 0, "errmsg": "ok", "data": [{"id": 616, "name": "公交"}]}
        )

    async def _titles(self, request: web.Request) -> web.Response:
        if not request.query.get("ids"):
            return _error(200018, "missing category ids")
        if int(request.query.get("limit", "30")) > 30:
            return _error(200017, "invalid limit")
        item = {"tid": 99, "title": "付款成功通知", "type": 2, "categoryId": "616"}
        return web.json_response({"errcode": 0, "errmsg": "ok", "count": 55, "data": [item]})

    async def _keywords(self, request: web.Request) -> web.Response:
        if request.query.get("tid") != "99":
            return _error(200014, "missing parameter tid")
        data = [
            {"kid": 1, "name": "物品名称", "example": "名称", "rule": "thing"},
            {"kid": 2, "name": "预约时间", "example": "2019年10月1日", "rule": "date"},
        ]
        return web.json_response({"errcode": 0, "errmsg": "ok", "count": 2, "data": data})

    async def _add(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return web.Response(status=415, text="Unsupported Media Type")
        form = list((await request.post()).items())
        self.forms.append([(key, str(value)) for key, value in form])
        template_id = f"priTmpl-{next(self.serial)}"
        self.templates[template_id] = {
            "priTmplId": template_id,
            "title": "预约成功通知",
            "content": CONTENT,
            "example": "房间:客厅",
            "type": 2,
            "keywordEnumValueList": [
                {"keywordCode": "enum_string2.DATA", "enumValueList": ["客厅", "保姆房"]}
            ],
        }
        return web.json_response({"errcode": 0, "errmsg": "ok", "priTmplId": template_id})

    async def _list(self, _request: web.Request) -> web.Response:
        data = list(self.templates.values())
        return web.json_response({"errcode": 0, "errmsg": "ok", "data": data})

    async def _delete(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            return web.Response(status=415, text="Unsupported Media Type")
        template_id = str((await request.post()).get("priTmplId", ""))
        if self.templates.pop(template_id, None) is None:
            return _error(200014, "missing parameter tid")
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@pytest.fixture
async def imitation() -> AsyncIterator[tuple[SubscribeImitation, str]]:
    wechat = SubscribeImitation()
    runner = web.AppRunner(wechat.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield wechat, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[WeChatHttp]:
    async with WeChatHttp(read_timeout_s=2.0) as client:
        yield client


class Client:
    def __init__(self, http: WeChatHttp, base_url: str) -> None:
        self.events: list[ClientEvent] = []
        self.foreign: list[str] = []
        tokens = TokenManager(
            "mini",
            "wxmini000000000001",
            "imitation-secret",
            MemoryTokenStore(),
            TokenFetcher(http, base_url),
            on_foreign_refresh=self.foreign.append,
        )
        self.api = AccountClient(http, tokens, base_url, on_event=self.events.append)


@pytest.fixture
def client(http: WeChatHttp, imitation: tuple[SubscribeImitation, str]) -> Client:
    return Client(http, imitation[1])


def message(kind: MessageKind, touser: str = "oUSER0001") -> Any:
    body = {
        "touser": touser,
        "template_id": "priTmpl-1",
        "data": {"thing1": {"value": "订单已发货"}, "date2": {"value": "2024-06-01"}},
    }
    extra = {"page": "https://example.com/o/1"} if kind is MessageKind.SUBSCRIBE else {}
    return parse_subscribe(body | extra, kind)[0]


async def test_bizsend_posts_the_body_and_returns_an_accept_without_msgid(
    client: Client, imitation: tuple[SubscribeImitation, str]
) -> None:
    sent = message(MessageKind.SUBSCRIBE)
    assert await client.api.send_subscribe(sent, MessageKind.SUBSCRIBE) == SendOk(None)
    assert imitation[0].sends == [("bizsend", sent.to_wechat())]


async def test_subscribe_send_returns_the_msgid_exactly(
    client: Client, imitation: tuple[SubscribeImitation, str]
) -> None:
    sent = message(MessageKind.MINIPROGRAM)
    result = await client.api.send_subscribe(sent, MessageKind.MINIPROGRAM)
    assert result == SendOk(MINI_MSGID)
    assert imitation[0].sends == [("send", sent.to_wechat())]


async def test_a_refused_recipient_is_returned_as_a_recipient_error_that_revokes_the_grant(
    client: Client,
) -> None:
    result = await client.api.send_subscribe(
        message(MessageKind.MINIPROGRAM, "refused_user"), MessageKind.MINIPROGRAM
    )
    assert isinstance(result, RecipientError) and result.errcode == 43101


async def test_a_subscribe_send_follows_the_token_rule_and_sees_the_foreign_refresh(
    client: Client, imitation: tuple[SubscribeImitation, str]
) -> None:
    wechat, _ = imitation
    await client.api.get_category()
    wechat.rotate_token()  # another system force-refreshed the shared token
    client.events.clear()
    result = await client.api.send_subscribe(
        message(MessageKind.MINIPROGRAM), MessageKind.MINIPROGRAM
    )
    assert result == SendOk(MINI_MSGID)
    assert client.events == [ClientEvent.REQUEST, ClientEvent.TOKEN_RESEND, ClientEvent.REQUEST]
    assert client.foreign == ["mini"]


async def test_a_template_message_kind_is_not_sent_as_a_subscribe_message(client: Client) -> None:
    with pytest.raises(ValueError, match="not a subscribe kind"):
        await client.api.send_subscribe(message(MessageKind.MINIPROGRAM), MessageKind.TEMPLATE)
    assert client.events == []


async def test_a_send_to_a_closed_port_was_never_sent_so_a_resend_is_safe(
    http: WeChatHttp,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransportError) as failed:
        await http.request_json("POST", unreachable + "/cgi-bin/message/subscribe/send", json={})
    assert failed.value.request_sent is False


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that reads a request and then neither answers nor closes."""

    async def hold(reader: Any, writer: Any) -> None:
        await reader.read(1024)
        await reader.read()  # until the client gives up and closes

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_a_send_that_timed_out_reading_was_sent_so_its_outcome_is_unknown(
    silent_server: str,
) -> None:
    async with WeChatHttp(read_timeout_s=0.3) as http:
        with pytest.raises(TransportError) as failed:
            await http.request_json(
                "POST", silent_server + "/cgi-bin/message/subscribe/send", json={}
            )
    assert failed.value.request_sent is True
    assert "read timed out" in str(failed.value)


# ---------------------------------------------------------------------------
# The subscribe template library


async def test_categories_titles_and_keywords_are_read(client: Client) -> None:
    assert await client.api.get_category() == [Category(616, "公交")]
    titles = await client.api.get_pub_template_titles([616], start=0, limit=30)
    assert titles.count == 55
    assert titles.titles == [PubTemplateTitle(99, "付款成功通知", 2, 616)]
    keywords = await client.api.get_pub_template_keywords(99)
    assert keywords[1] == PubTemplateKeyword(2, "预约时间", "2019年10月1日", "date")


async def test_titles_need_category_ids_before_any_request(client: Client) -> None:
    with pytest.raises(ValueError, match="200018"):
        await client.api.get_pub_template_titles([])
    with pytest.raises(ValueError, match="limit"):
        await client.api.get_pub_template_titles([616], limit=31)
    assert client.events == []


async def test_a_library_error_is_raised_typed(client: Client) -> None:
    with pytest.raises(RequestError) as failed:
        await client.api.get_pub_template_keywords(12345)
    assert failed.value.errcode == 200014


async def test_a_template_is_added_form_encoded_listed_with_its_keys_and_deleted(
    client: Client, imitation: tuple[SubscribeImitation, str]
) -> None:
    template_id = await client.api.add_subscribe_template(99, [1, 2], "预约提醒")
    assert imitation[0].forms == [
        [("tid", "99"), ("kidList", "1"), ("kidList", "2"), ("sceneDesc", "预约提醒")]
    ]
    [listed] = await client.api.get_subscribe_templates()
    assert (listed.template_id, listed.one_time) == (template_id, True)
    assert listed.keys == (
        TemplateKey("enum_string2", "enum_string", ("客厅", "保姆房")),
        TemplateKey("date1", "date"),
        TemplateKey("thing3", "thing"),
    )
    await client.api.delete_subscribe_template(template_id)
    assert await client.api.get_subscribe_templates() == []


@pytest.mark.parametrize(
    ("tid", "kids", "words"),
    [(99, [1], "2 to 5"), (99, [1, 2, 3, 4, 5, 6], "2 to 5"), (10_000_001, [1, 2], "empty")],
)
async def test_a_kid_list_wechat_would_refuse_is_refused_before_any_request(
    client: Client, tid: int, kids: list[int], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        await client.api.add_subscribe_template(tid, kids)
    assert client.events == []


async def test_a_new_one_time_template_takes_an_empty_kid_list(
    client: Client, imitation: tuple[SubscribeImitation, str]
) -> None:
    await client.api.add_subscribe_template(10_000_001, [])
    assert imitation[0].forms == [[("tid", "10000001")]]


@pytest.mark.parametrize("kind", [MessageKind.SUBSCRIBE, MessageKind.MINIPROGRAM])
async def test_a_stored_body_is_sent_as_it_is_for_each_subscribe_kind(
    client: Client, imitation: tuple[SubscribeImitation, str], kind: MessageKind
) -> None:
    stored = message(kind).to_wechat()  # what intake stores
    result = await client.api.send_subscribe_body(stored, kind)
    assert result == SendOk(MINI_MSGID if kind is MessageKind.MINIPROGRAM else None)
    path = "bizsend" if kind is MessageKind.SUBSCRIBE else "send"
    assert imitation[0].sends == [(path, stored)]
