"""Speaking HTTP to WeChat: the shared connection pool, the token endpoints and one account's API.

`WeChatHttp` owns the process's single aiohttp session and turns every failure
to get a usable answer into `TransportError`. `TokenFetcher` calls the two
token endpoints. `AccountClient` sends template messages and manages templates
for one app, with the one rule of token errors: invalidate that token, take a
fresh one, resend once. Texts built here name paths only, never a query string,
so no token or AppSecret can leak through an error message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from wxgate.observability import get_logger
from wxgate.wechat.errors import (
    Category,
    Endpoint,
    TokenRejectedTwiceError,
    TransportError,
    WeChatError,
    classify,
    error_for,
    is_duplicate_accept,
)
from wxgate.wechat.token import FetchedToken, TokenManager

if TYPE_CHECKING:
    from wxgate.wechat.template import TemplateMessage

TOKEN_PATH = "/cgi-bin/token"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/template/send"
SET_INDUSTRY_PATH = "/cgi-bin/template/api_set_industry"
GET_INDUSTRY_PATH = "/cgi-bin/template/get_industry"
ADD_TEMPLATE_PATH = "/cgi-bin/template/api_add_template"
LIST_TEMPLATES_PATH = "/cgi-bin/template/get_all_private_template"
DELETE_TEMPLATE_PATH = "/cgi-bin/template/del_private_template"
GRANT_TYPE = "client_credential"

_JSON_HEADERS = {"Content-Type": "application/json"}
log = get_logger(__name__)


class WeChatHttp:
    """The process's one HTTP session to WeChat (keep-alive pool, bounded timeouts)."""

    def __init__(
        self, pool_size: int = 100, connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0
    ) -> None:
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout_s + read_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> WeChatHttp:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        endpoint: Endpoint = Endpoint.API,
    ) -> dict[str, Any]:
        """WeChat's JSON answer as a dict (int64s exact); TransportError when there is none."""
        await self.start()
        assert self._session is not None
        where = f"{method} {urlsplit(url).path}"
        data = orjson.dumps(json) if json is not None else None
        headers = _JSON_HEADERS if data is not None else None
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=headers
            ) as response:
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            # `from None`: aiohttp's own texts may quote the URL, query string included.
            raise TransportError(f"{where}: {_describe(exc)}", endpoint=endpoint) from None
        if status != 200:
            raise TransportError(f"{where}: HTTP {status}", endpoint=endpoint)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise TransportError(
                f"{where}: answer is not JSON ({len(body)} bytes)", endpoint=endpoint
            ) from None
        if not isinstance(answer, dict):
            raise TransportError(f"{where}: answer is not a JSON object", endpoint=endpoint)
        return answer


def _describe(exc: BaseException) -> str:
    """What went wrong, in words that cannot carry a URL."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "read timed out"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection error: {exc.strerror}"
    return type(exc).__name__


def _error_in(answer: dict[str, Any], endpoint: Endpoint, where: str) -> WeChatError | None:
    """The error an answer carries, or None when its errcode (0 if absent) means success."""
    code = answer.get("errcode", 0)
    if not isinstance(code, int) or isinstance(code, bool):
        return TransportError(f"{where}: errcode is not an integer", endpoint=endpoint)
    if classify(code, endpoint) is Category.OK:
        return None
    return error_for(code, str(answer.get("errmsg", "")), endpoint)


class TokenFetcher:
    """The two token endpoints of one WeChat base URL (it satisfies token.TokenSource)."""

    def __init__(self, http: WeChatHttp, api_base: str) -> None:
        self._http = http
        self._base = api_base.rstrip("/")

    async def classic_token(self, appid: str, secret: str) -> FetchedToken:
        """GET /cgi-bin/token: a new token each call (the previous one lives 5 more minutes)."""
        params = {"grant_type": GRANT_TYPE, "appid": appid, "secret": secret}
        answer = await self._http.request_json(
            "GET", self._base + TOKEN_PATH, params=params, endpoint=Endpoint.TOKEN_FETCH
        )
        return _fetched(answer, f"GET {TOKEN_PATH}")

    async def stable_token(
        self, appid: str, secret: str, *, force_refresh: bool = False
    ) -> FetchedToken:
        """POST /cgi-bin/stable_token: the shared current token, or a new one when forced."""
        body = {
            "grant_type": GRANT_TYPE,
            "appid": appid,
            "secret": secret,
            "force_refresh": force_refresh,
        }
        answer = await self._http.request_json(
            "POST", self._base + STABLE_TOKEN_PATH, json=body, endpoint=Endpoint.TOKEN_FETCH
        )
        return _fetched(answer, f"POST {STABLE_TOKEN_PATH}")


def _fetched(answer: dict[str, Any], where: str) -> FetchedToken:
    error = _error_in(answer, Endpoint.TOKEN_FETCH, where)
    if error is not None:
        raise error
    token, expires_in = answer.get("access_token"), answer.get("expires_in")
    if not isinstance(token, str) or not token or not isinstance(expires_in, int):
        raise TransportError(
            f"{where}: answer has no access_token and expires_in", endpoint=Endpoint.TOKEN_FETCH
        )
    return FetchedToken(token, expires_in)


@dataclass(frozen=True, slots=True)
class SendOk:
    """WeChat accepted the message; `duplicate` when it already had it (40241, no msgid)."""

    msgid: int | None
    duplicate: bool = False


SendResult = SendOk | WeChatError

# Awaited right before each request of a send goes out, the resend after a TOKEN
# answer included, once the token is in hand: where a caller waits for its send
# budget, so that nothing (a token fetch, a refresh) stands between the permit and
# the request. It raises to stop the send (the worker's `Withheld`); whatever it
# raises propagates out of send_template unchanged.
Pace = Callable[[], Awaitable[None]]


class ClientEvent(StrEnum):
    """What `AccountClient` reports to its `on_event` hook (for metrics)."""

    REQUEST = "request"  # one business API call sent, resends included
    TOKEN_RESEND = "token_resend"  # a token was rejected; the call goes out once more


@dataclass(frozen=True, slots=True)
class Industry:
    first_class: str
    second_class: str


@dataclass(frozen=True, slots=True)
class Industries:
    primary: Industry
    secondary: Industry


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """One template added to the account (get_all_private_template)."""

    template_id: str
    title: str = ""
    primary_industry: str = ""
    deputy_industry: str = ""
    content: str = ""
    example: str = ""


class AccountClient:
    """One app's WeChat API: template sends and template management."""

    def __init__(
        self,
        http: WeChatHttp,
        tokens: TokenManager,
        api_base: str,
        *,
        on_event: Callable[[ClientEvent], None] | None = None,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._base = api_base.rstrip("/")
        self._on_event = on_event

    async def send_template(
        self, message: TemplateMessage, *, pace: Pace | None = None
    ) -> SendResult:
        """Send one template message; every WeChat, transport or token outcome is returned.

        `pace`, when given, is awaited before each request (see `Pace`)."""
        try:
            answer = await self._call("POST", SEND_PATH, json=message.to_wechat(), pace=pace)
        except WeChatError as error:
            return error
        if is_duplicate_accept(answer.get("errcode", 0)):
            return SendOk(None, duplicate=True)
        msgid = answer.get("msgid")
        return SendOk(msgid if isinstance(msgid, int) else None)

    async def set_industry(self, industry_id1: str | int, industry_id2: str | int) -> None:
        body = {"industry_id1": str(industry_id1), "industry_id2": str(industry_id2)}
        await self._call("POST", SET_INDUSTRY_PATH, json=body)

    async def get_industry(self) -> Industries:
        answer = await self._call("GET", GET_INDUSTRY_PATH)
        return Industries(
            primary=_industry(answer.get("primary_industry")),
            secondary=_industry(answer.get("secondary_industry")),
        )

    async def add_template(self, short_id: str, keyword_names: list[str] | None = None) -> str:
        """Add a library template to the account; its template_id."""
        body: dict[str, Any] = {"template_id_short": short_id}
        if keyword_names is not None:
            body["keyword_name_list"] = keyword_names
        answer = await self._call("POST", ADD_TEMPLATE_PATH, json=body)
        template_id = answer.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            raise TransportError(f"POST {ADD_TEMPLATE_PATH}: answer has no template_id")
        return template_id

    async def list_templates(self) -> list[TemplateInfo]:
        answer = await self._call("GET", LIST_TEMPLATES_PATH)
        listed = answer.get("template_list") or []
        return [_template_info(item) for item in listed if isinstance(item, dict)]

    async def delete_template(self, template_id: str) -> None:
        await self._call("POST", DELETE_TEMPLATE_PATH, json={"template_id": template_id})

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        pace: Pace | None = None,
    ) -> dict[str, Any]:
        """One API call with the token rule: on a TOKEN answer, invalidate that token, take a
        fresh one and send once more; a second TOKEN answer in a row is CONFIG."""
        token = await self._paced_token(pace)
        answer = await self._request(method, path, token, json)
        error = _error_in(answer, Endpoint.API, f"{method} {path}")
        if error is None:
            return answer
        if error.category is not Category.TOKEN:
            raise error
        log.debug("token rejected, resending once", path=path, errcode=error.errcode)
        await self._tokens.invalidate(token)
        self._emit(ClientEvent.TOKEN_RESEND)
        token = await self._paced_token(pace)
        answer = await self._request(method, path, token, json)
        error = _error_in(answer, Endpoint.API, f"{method} {path}")
        if error is None:
            return answer
        if error.category is Category.TOKEN:
            raise TokenRejectedTwiceError(error.errcode, error.errmsg, Category.CONFIG)
        raise error

    async def _paced_token(self, pace: Pace | None) -> str:
        """The token for the next request, after `pace`. Any fetch happens before pace, and
        the token is read again after it (from the cache): one that another send found
        rejected while this one waited for its permit is not used."""
        token = await self._tokens.get()
        if pace is None:
            return token
        await pace()
        return await self._tokens.get()

    async def _request(
        self, method: str, path: str, token: str, json: dict[str, Any] | None
    ) -> dict[str, Any]:
        self._emit(ClientEvent.REQUEST)
        return await self._http.request_json(
            method, self._base + path, params={"access_token": token}, json=json
        )

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


def _industry(raw: object) -> Industry:
    fields = raw if isinstance(raw, dict) else {}
    return Industry(str(fields.get("first_class", "")), str(fields.get("second_class", "")))


def _template_info(item: dict[str, Any]) -> TemplateInfo:
    return TemplateInfo(
        template_id=str(item.get("template_id", "")),
        title=str(item.get("title", "")),
        primary_industry=str(item.get("primary_industry", "")),
        deputy_industry=str(item.get("deputy_industry", "")),
        content=str(item.get("content", "")),
        example=str(item.get("example", "")),
    )
