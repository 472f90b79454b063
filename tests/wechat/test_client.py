"""WeChatHttp and AccountClient against the sandbox over real HTTP: transport failures,
exact int64 msgids, duplicate accepts, the one-refresh-one-resend token rule, template
management, and no secret or token in any error text or log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web

from tests.conftest import free_port
from wxgate.config import TokenMode
from wxgate.observability import configure_logging
from wxgate.wechat.client import (
    AccountClient,
    ClientEvent,
    SendOk,
    TemplateInfo,
    TokenFetcher,
    WeChatHttp,
)
from wxgate.wechat.errors import (
    Category,
    ConfigError,
    Endpoint,
    RecipientError,
    RequestError,
    TokenRejectedTwiceError,
    TransportError,
)
from wxgate.wechat.template import DataItem, TemplateMessage
from wxgate.wechat.token import FetchedToken, TokenManager
from wxgate.wechat.tokenstore import MemoryTokenStore

APP = "default"
APPID = "wxsandbox000000001"
SECRET = "sandbox-secret"


@pytest.fixture
async def http() -> AsyncIterator[WeChatHttp]:
    async with WeChatHttp(read_timeout_s=0.5) as client:
        yield client


class Account:
    """An AccountClient on the sandbox, with what it reported."""

    def __init__(
        self, http: WeChatHttp, base_url: str, mode: TokenMode = "stable", secret: str = SECRET
    ) -> None:
        self.events: list[ClientEvent] = []
        self.fetches: list[tuple[str, str]] = []
        self.store = MemoryTokenStore()
        self.tokens = TokenManager(
            APP,
            APPID,
            secret,
            self.store,
            TokenFetcher(http, base_url),
            mode=mode,
            on_fetch=lambda *report: self.fetches.append(report),
        )
        self.client = AccountClient(http, self.tokens, base_url, on_event=self.events.append)


@pytest.fixture
def account(http: WeChatHttp, sandbox: Any) -> Account:
    return Account(http, sandbox.base_url)


def message(touser: str = "oUSER0001", client_msg_id: str | None = "msg-0001") -> TemplateMessage:
    return TemplateMessage(
        touser=touser,
        template_id="tmpl-order-shipped",
        data={"thing1": DataItem("Your order shipped"), "time2": DataItem("2024-06-01 10:00")},
        client_msg_id=client_msg_id,
    )


async def test_a_send_returns_the_msgid_exactly_even_above_2_to_the_53(
    account: Account, sandbox_control: Any
) -> None:
    result = await account.client.send_template(message())
    assert isinstance(result, SendOk) and not result.duplicate
    [delivered] = await sandbox_control.messages()
    assert result.msgid == delivered["msgid"]
    assert isinstance(result.msgid, int) and result.msgid > 2**53
    assert delivered["client_msg_id"] == "msg-0001"


async def test_a_stored_body_is_sent_as_it_is_and_its_msgid_read_exactly(
    account: Account, sandbox_control: Any
) -> None:
    stored = {
        **message(client_msg_id="01KSTORED").to_wechat(),
        "url": "https://example.com/o/1",
        "miniprogram": {"appid": "wxmini0001", "pagepath": "pages/o?id=1"},
    }
    result = await account.client.send_template_body(stored)
    assert isinstance(result, SendOk) and isinstance(result.msgid, int) and result.msgid > 2**53
    [delivered] = await sandbox_control.messages()
    assert result.msgid == delivered["msgid"]
    sent = {name: delivered[name] for name in ("touser", "client_msg_id", "url", "miniprogram")}
    assert sent == {name: stored[name] for name in sent}
    assert delivered["data"] == stored["data"]


async def test_a_duplicate_in_60_seconds_is_an_accept_without_msgid(
    account: Account, sandbox_control: Any
) -> None:
    await account.tokens.get()
    await sandbox_control.set_faults(errcode_rates={"40241": 1.0})
    assert await account.client.send_template(message()) == SendOk(None, duplicate=True)


async def test_a_recipient_error_is_returned_typed(account: Account) -> None:
    result = await account.client.send_template(message(touser="invalid_user"))
    assert isinstance(result, RecipientError)
    assert result.errcode == 40003 and result.category is Category.RECIPIENT


@pytest.mark.parametrize("fault", ["http_502_rate", "reset_rate", "hang_rate"])
async def test_transport_faults_are_returned_as_transport_errors(
    account: Account, sandbox_control: Any, fault: str
) -> None:
    token = await account.tokens.get()
    await sandbox_control.set_faults(**{fault: 1.0})
    result = await account.client.send_template(message())
    assert isinstance(result, TransportError)
    assert result.category is Category.TRANSIENT and result.endpoint is Endpoint.API
    assert result.errcode is None
    assert result.request_sent is True  # written, then no usable answer: outcome unknown
    assert "/cgi-bin/message/template/send" in str(result)
    assert token not in str(result)


async def test_an_unreachable_wechat_is_a_transport_error_of_the_token_fetch(
    http: WeChatHttp,
) -> None:
    account = Account(http, f"http://127.0.0.1:{free_port()}")
    result = await account.client.send_template(message())
    assert isinstance(result, TransportError)
    assert result.endpoint is Endpoint.TOKEN_FETCH
    assert result.request_sent is False
    assert "cannot connect" in str(result)
    assert SECRET not in str(result)


@pytest.fixture
async def odd_server() -> AsyncIterator[str]:
    """A real HTTP server answering what WeChat never should: HTML, a JSON array."""

    async def html(_request: web.Request) -> web.Response:
        return web.Response(text="<html>502 proxy error</html>", content_type="text/html")

    async def array(_request: web.Request) -> web.Response:
        return web.Response(body=b"[1, 2]", content_type="application/json")

    app = web.Application()
    app.router.add_get("/html", html)
    app.router.add_get("/array", array)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("path", "said"), [("/html", "not JSON"), ("/array", "not a JSON object")])
async def test_an_answer_that_is_not_a_json_object_is_a_transport_error(
    http: WeChatHttp, odd_server: str, path: str, said: str
) -> None:
    with pytest.raises(TransportError) as error:
        await http.request_json("GET", odd_server + path, params={"access_token": "90_SECRETTOK"})
    assert said in str(error.value)
    assert "90_SECRETTOK" not in str(error.value)


async def test_a_token_rotated_by_another_party_is_recovered_by_one_refresh_and_one_resend(
    http: WeChatHttp, sandbox: Any, sandbox_control: Any
) -> None:
    account = Account(http, sandbox.base_url, mode="classic")
    await account.tokens.get()
    await TokenFetcher(http, sandbox.base_url).classic_token(APPID, SECRET)  # another system
    await sandbox_control.advance_clock(301)  # past the 5-minute overlap: ours answers 40001

    result = await account.client.send_template(message())

    assert isinstance(result, SendOk) and result.msgid is not None
    assert len(await sandbox_control.messages()) == 1
    assert account.fetches == [("token", "ok"), ("token", "ok")]
    assert account.events.count(ClientEvent.TOKEN_RESEND) == 1
    assert account.events.count(ClientEvent.REQUEST) == 2
    stats = await sandbox_control.stats()
    assert stats["token_fetches"]["token"] == 3  # ours twice, the other party's once


async def test_pace_is_awaited_after_the_token_and_before_each_request_the_resend_too(
    http: WeChatHttp, sandbox: Any, sandbox_control: Any
) -> None:
    account = Account(http, sandbox.base_url, mode="classic")
    seen: list[tuple[int, int]] = []  # (token fetches, sends WeChat had) at each pace

    async def pace() -> None:
        stats = await sandbox_control.stats()
        seen.append((len(account.fetches), stats["sends_total"]))

    assert isinstance(await account.client.send_template(message("oA", "1"), pace=pace), SendOk)
    await TokenFetcher(http, sandbox.base_url).classic_token(APPID, SECRET)  # another system
    await sandbox_control.advance_clock(301)  # ours now answers 40001
    assert isinstance(await account.client.send_template(message("oB", "2"), pace=pace), SendOk)

    # first send: after the fetch, before any request; second: before the request that
    # got 40001, and before the resend, after the refresh
    assert seen == [(1, 0), (1, 1), (2, 2)]


async def test_a_pace_that_raises_stops_the_send_before_any_request(
    http: WeChatHttp, sandbox: Any, sandbox_control: Any
) -> None:
    account = Account(http, sandbox.base_url)

    async def no_budget() -> None:
        raise LookupError("no budget")

    with pytest.raises(LookupError):
        await account.client.send_template(message(), pace=no_budget)
    assert (await sandbox_control.stats())["sends_total"] == 0
    assert account.events == []


class ForcingParty:
    """The real fetcher, while another system force-refreshes the stable token right after
    every fetch of ours (30 s apart on the sandbox clock, as WeChat requires)."""

    def __init__(self, inner: TokenFetcher, control: Any) -> None:
        self.inner = inner
        self.control = control

    async def classic_token(self, appid: str, secret: str) -> FetchedToken:
        raise AssertionError("stable mode only")

    async def stable_token(
        self, appid: str, secret: str, *, force_refresh: bool = False
    ) -> FetchedToken:
        fetched = await self.inner.stable_token(appid, secret, force_refresh=force_refresh)
        await self.control.advance_clock(31)
        await self.inner.stable_token(appid, secret, force_refresh=True)
        return fetched


async def test_a_second_token_error_in_a_row_is_config(
    http: WeChatHttp, sandbox: Any, sandbox_control: Any
) -> None:
    fetcher = ForcingParty(TokenFetcher(http, sandbox.base_url), sandbox_control)
    tokens = TokenManager(APP, APPID, SECRET, MemoryTokenStore(), fetcher)
    events: list[ClientEvent] = []
    client = AccountClient(http, tokens, sandbox.base_url, on_event=events.append)

    result = await client.send_template(message())

    assert isinstance(result, TokenRejectedTwiceError)
    assert result.category is Category.CONFIG and result.errcode == 40001
    assert events == [ClientEvent.REQUEST, ClientEvent.TOKEN_RESEND, ClientEvent.REQUEST]
    assert await sandbox_control.messages() == []


async def test_a_failed_token_fetch_is_returned_by_send(
    http: WeChatHttp, sandbox: Any, sandbox_control: Any
) -> None:
    account = Account(http, sandbox.base_url, secret="wrong-secret-5678")
    result = await account.client.send_template(message())
    assert isinstance(result, ConfigError)
    assert result.errcode == 40125 and result.endpoint is Endpoint.TOKEN_FETCH
    assert account.events == []  # nothing was sent without a token


async def test_templates_are_added_listed_and_deleted(account: Account) -> None:
    await account.client.set_industry(1, 4)
    industries = await account.client.get_industry()
    assert industries.primary.first_class == "IT科技"
    assert industries.secondary.second_class == "电子技术"
    template_id = await account.client.add_template("TM00015", ["订单号", "发货时间"])
    listed = await account.client.list_templates()
    assert [info.template_id for info in listed] == [template_id]
    assert isinstance(listed[0], TemplateInfo) and listed[0].title
    await account.client.delete_template(template_id)
    assert await account.client.list_templates() == []


async def test_adding_a_template_without_keyword_names_is_refused_before_any_request(
    account: Account,
) -> None:
    # WeChat requires keyword_name_list and answers 40246 without it (review row 8).
    with pytest.raises(ValueError, match="40246"):
        await account.client.add_template("TM00015", [])
    assert account.events == []


async def test_management_errors_are_raised(account: Account) -> None:
    with pytest.raises(RequestError) as error:
        await account.client.delete_template("no-such-template")
    assert error.value.errcode == 40037


async def test_management_follows_the_token_rule_too(
    account: Account, sandbox_control: Any
) -> None:
    await account.tokens.get()
    await sandbox_control.set_faults(expire_tokens=True)  # 42001 for every token issued so far
    assert await account.client.list_templates() == []
    assert account.events == [ClientEvent.REQUEST, ClientEvent.TOKEN_RESEND, ClientEvent.REQUEST]


@pytest.fixture
def debug_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    saved_structlog = structlog.get_config()
    configure_logging("DEBUG", "json")
    try:
        yield capfd
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        # What the suite had (not structlog's defaults, which print past the standard
        # library and so past every later test's log handlers).
        structlog.configure(**saved_structlog)


async def test_no_error_text_or_log_line_holds_the_secret_or_a_token(
    http: WeChatHttp,
    sandbox: Any,
    sandbox_control: Any,
    debug_logs: pytest.CaptureFixture[str],
) -> None:
    texts: list[str] = []
    wrong = Account(http, sandbox.base_url, secret="wrong-secret-9012")
    texts.append(str(await wrong.client.send_template(message())))
    account = Account(http, sandbox.base_url, mode="classic")
    first = await account.tokens.get()
    await TokenFetcher(http, sandbox.base_url).classic_token(APPID, SECRET)
    await sandbox_control.advance_clock(301)
    texts.append(repr(await account.client.send_template(message())))
    second = await account.tokens.get()
    await sandbox_control.set_faults(http_502_rate=1.0)
    texts.append(str(await account.client.send_template(message(client_msg_id="msg-2"))))
    texts.append(repr(await account.tokens.current()))
    logged = debug_logs.readouterr()
    assert "token rejected" in logged.err  # the debug line of the resend was captured
    for text in [*texts, logged.out, logged.err]:
        for secret in (SECRET, "wrong-secret-9012", first, second):
            assert secret not in text
