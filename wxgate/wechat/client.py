"""Speaking HTTP to WeChat: the shared connection pool, the token endpoints and one account's API.

`WeChatHttp` owns the process's single aiohttp session and turns every failure
to get a usable answer into `TransportError`, saying whether the request could
have reached WeChat. `TokenFetcher` calls the two token endpoints. `AccountClient`
sends template and subscribe messages and manages templates for one app, with the
one rule of token errors: invalidate that token, take a fresh one, resend once.
Texts built here name paths only, never a query string, so no token or AppSecret
can leak through an error message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from yarl import URL

from wxgate.observability import get_logger
from wxgate.wechat import subscribe_library as library
from wxgate.wechat.errors import (
    Category,
    Endpoint,
    TokenRejectedTwiceError,
    TransportError,
    WeChatError,
    classify,
    error_for,
    is_duplicate_accept,
    is_token_superseded,
)
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.token import FetchedToken, TokenManager

if TYPE_CHECKING:
    from wxgate.wechat.subscribe import SubscribeMessage
    from wxgate.wechat.template import TemplateMessage

TOKEN_PATH = "/cgi-bin/token"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/template/send"
BIZSEND_PATH = "/cgi-bin/message/subscribe/bizsend"  # an official account's, §4.1
SUBSCRIBE_SEND_PATH = "/cgi-bin/message/subscribe/send"  # a mini program's, §4.2
SET_INDUSTRY_PATH = "/cgi-bin/template/api_set_industry"
GET_INDUSTRY_PATH = "/cgi-bin/template/get_industry"
ADD_TEMPLATE_PATH = "/cgi-bin/template/api_add_template"
LIST_TEMPLATES_PATH = "/cgi-bin/template/get_all_private_template"
DELETE_TEMPLATE_PATH = "/cgi-bin/template/del_private_template"
GRANT_TYPE = "client_credential"

_JSON_HEADERS = {"Content-Type": "application/json"}
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
_SUBSCRIBE_PATHS = {
    MessageKind.SUBSCRIBE: BIZSEND_PATH,
    MessageKind.MINIPROGRAM: SUBSCRIBE_SEND_PATH,
}
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
        url: str | URL,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        form: Sequence[tuple[str, str]] | None = None,
        endpoint: Endpoint = Endpoint.API,
    ) -> dict[str, Any]:
        """WeChat's JSON answer as a dict (int64s exact); TransportError when there is none.
        The body is `json`, or `form` url-encoded (pairs, so a key may repeat)."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        where = f"{method} {url.path if isinstance(url, URL) else urlsplit(url).path}"
        data, headers = _body(json, form)
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=headers
            ) as response:
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            # `from None`: aiohttp's own texts may quote the URL, query string included.
            raise TransportError(
                f"{where}: {_describe(exc)}", endpoint=endpoint, request_sent=_was_sent(exc)
            ) from None
        # From here on WeChat (or a proxy before it) has answered: the request went out.
        if status != 200:
            raise TransportError(f"{where}: HTTP {status}", endpoint=endpoint, request_sent=True)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise TransportError(
                f"{where}: answer is not JSON ({len(body)} bytes)",
                endpoint=endpoint,
                request_sent=True,
            ) from None
        if not isinstance(answer, dict):
            raise TransportError(
                f"{where}: answer is not a JSON object", endpoint=endpoint, request_sent=True
            )
        return answer


def _body(
    json: dict[str, Any] | None, form: Sequence[tuple[str, str]] | None
) -> tuple[bytes | None, dict[str, str] | None]:
    if json is not None:
        return orjson.dumps(json), _JSON_HEADERS
    if form is not None:
        return urlencode(form).encode("ascii"), _FORM_HEADERS
    return None, None


def _was_sent(exc: BaseException) -> bool | None:
    """Whether a failed request could have reached WeChat (see TransportError)."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return False  # refused, unresolvable or not connected in time: nothing was written
    if isinstance(
        exc,
        aiohttp.SocketTimeoutError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientResponseError,
    ):
        return True  # written, then no (usable) answer: the outcome is unknown
    return None  # a reset or a total timeout: it does not say when it happened


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
        return TransportError(
            f"{where}: errcode is not an integer", endpoint=endpoint, request_sent=True
        )
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
            f"{where}: answer has no access_token and expires_in",
            endpoint=Endpoint.TOKEN_FETCH,
            request_sent=True,
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
    """One app's WeChat API: template and subscribe sends, template management and the
    subscribe template library."""

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
        # The URLs of the current token, built once each: yarl building one with the
        # token as its query cost ~6 us per send (measured), a dict lookup costs 0.1.
        self._urls: dict[str, URL] = {}
        self._urls_token = ""

    async def send_template(
        self, message: TemplateMessage, *, pace: Pace | None = None
    ) -> SendResult:
        """Send one template message; every WeChat, transport or token outcome is returned.

        `pace`, when given, is awaited before each request (see `Pace`)."""
        return await self.send_template_body(message.to_wechat(), pace=pace)

    async def send_template_body(
        self, body: dict[str, Any], *, pace: Pace | None = None
    ) -> SendResult:
        """`send_template` for a template/send body as it is stored (`to_wechat`'s form,
        checked when it was accepted, client_msg_id included): sent as it is, so the
        worker does not rebuild a `TemplateMessage` per send."""
        try:
            answer = await self._call("POST", SEND_PATH, json=body, pace=pace)
        except WeChatError as error:
            return error
        if is_duplicate_accept(answer.get("errcode", 0)):
            return SendOk(None, duplicate=True)
        msgid = answer.get("msgid")
        return SendOk(msgid if isinstance(msgid, int) else None)

    async def send_subscribe(
        self, message: SubscribeMessage, kind: MessageKind, *, pace: Pace | None = None
    ) -> SendResult:
        """Send one subscribe message of `kind`: bizsend for an official account's
        subscribe notification, subscribe/send for a mini program's subscribe message.

        No de-duplication id exists for these (§4): a TransportError whose
        `request_sent` is not False leaves the outcome unknown, and resending may send
        twice, or spend a one-time grant. bizsend answers no msgid (SendOk(None));
        subscribe/send was seen answering one."""
        return await self.send_subscribe_body(message.to_wechat(), kind, pace=pace)

    async def send_subscribe_body(
        self, body: dict[str, Any], kind: MessageKind, *, pace: Pace | None = None
    ) -> SendResult:
        """`send_subscribe` for a body of `kind` as it is stored (`to_wechat`'s form,
        checked when it was accepted), sent as it is."""
        path = _SUBSCRIBE_PATHS.get(kind)
        if path is None:
            raise ValueError(f"{kind} is not a subscribe kind")
        try:
            answer = await self._call("POST", path, json=body, pace=pace)
        except WeChatError as error:
            return error
        msgid = answer.get("msgid")
        return SendOk(msgid if isinstance(msgid, int) and not isinstance(msgid, bool) else None)

    async def set_industry(self, industry_id1: str | int, industry_id2: str | int) -> None:
        body = {"industry_id1": str(industry_id1), "industry_id2": str(industry_id2)}
        await self._call("POST", SET_INDUSTRY_PATH, json=body)

    async def get_industry(self) -> Industries:
        answer = await self._call("GET", GET_INDUSTRY_PATH)
        return Industries(
            primary=_industry(answer.get("primary_industry")),
            secondary=_industry(answer.get("secondary_industry")),
        )

    async def add_template(self, short_id: str, keyword_names: Sequence[str]) -> str:
        """Add a library template to the account with the keywords chosen by name; its
        template_id. WeChat requires keyword_name_list and answers 40246 when it is empty
        or names an unknown keyword (review row 8)."""
        if not keyword_names:
            raise ValueError("keyword_names must name at least one keyword (40246 otherwise)")
        body = {"template_id_short": short_id, "keyword_name_list": list(keyword_names)}
        answer = await self._call("POST", ADD_TEMPLATE_PATH, json=body)
        return _answered_id(answer, "template_id", f"POST {ADD_TEMPLATE_PATH}")

    async def list_templates(self) -> list[TemplateInfo]:
        answer = await self._call("GET", LIST_TEMPLATES_PATH)
        listed = answer.get("template_list") or []
        return [_template_info(item) for item in listed if isinstance(item, dict)]

    async def delete_template(self, template_id: str) -> None:
        await self._call("POST", DELETE_TEMPLATE_PATH, json={"template_id": template_id})

    # -- the subscribe template library (/wxaapi/newtmpl/*, §4.1) ----------------------

    async def get_category(self) -> list[library.Category]:
        """The account's service categories, whose ids list library titles."""
        return library.categories(await self._call("GET", library.CATEGORY_PATH))

    async def get_pub_template_titles(
        self, ids: Sequence[int], *, start: int = 0, limit: int = library.MAX_TITLES_PER_PAGE
    ) -> library.PubTemplateTitles:
        """One page of library templates of the categories `ids`. WeChat requires ids
        (200018 without them; wechatpy leaves them out)."""
        if not ids:
            raise ValueError("ids must name at least one category (200018 otherwise)")
        if not 1 <= limit <= library.MAX_TITLES_PER_PAGE:
            raise ValueError(f"limit must be 1 to {library.MAX_TITLES_PER_PAGE}")
        query = {"ids": ",".join(str(i) for i in ids), "start": str(start), "limit": str(limit)}
        return library.pub_titles(await self._call("GET", library.PUB_TITLES_PATH, query=query))

    async def get_pub_template_keywords(self, tid: int) -> list[library.PubTemplateKeyword]:
        """The keywords of library template `tid`, each with its rule (its type)."""
        query = {"tid": str(tid)}
        return library.pub_keywords(await self._call("GET", library.PUB_KEYWORDS_PATH, query=query))

    async def add_subscribe_template(
        self, tid: int, kid_list: Sequence[int], scene_desc: str = ""
    ) -> str:
        """Combine keywords of library template `tid` into a private template; its
        priTmplId. Sent form-encoded: the doc says JSON is not supported, and a
        community thread saw "Unsupported Media Type" for it."""
        kids = list(kid_list)
        problem = library.kid_list_problem(tid, kids)
        if problem is not None:
            raise ValueError(problem)
        if len(scene_desc) > library.MAX_SCENE_DESC_CHARS:
            raise ValueError(f"scene_desc takes at most {library.MAX_SCENE_DESC_CHARS} characters")
        form = [("tid", str(tid)), *(("kidList", str(kid)) for kid in kids)]
        if scene_desc:
            form.append(("sceneDesc", scene_desc))
        answer = await self._call("POST", library.ADD_PATH, form=form)
        return _answered_id(answer, "priTmplId", f"POST {library.ADD_PATH}")

    async def get_subscribe_templates(self) -> list[library.SubscribeTemplate]:
        """The account's private subscribe templates, with the keys each content names."""
        return library.templates(await self._call("GET", library.LIST_PATH))

    async def delete_subscribe_template(self, template_id: str) -> None:
        """Delete private template `template_id` (a priTmplId); form-encoded like add."""
        await self._call("POST", library.DELETE_PATH, form=[("priTmplId", template_id)])

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        form: Sequence[tuple[str, str]] | None = None,
        query: dict[str, str] | None = None,
        pace: Pace | None = None,
    ) -> dict[str, Any]:
        """One API call with the token rule: on a TOKEN answer, invalidate that token, take a
        fresh one and send once more; a second TOKEN answer in a row is CONFIG."""
        request = _Request(method, path, json, form, query)
        token = await self._paced_token(pace)
        answer = await self._request(request, token)
        error = _error_in(answer, Endpoint.API, f"{method} {path}")
        if error is None:
            return answer
        if error.category is not Category.TOKEN:
            raise error
        log.debug("token rejected, resending once", path=path, errcode=error.errcode)
        await self._tokens.invalidate(token, superseded=is_token_superseded(error.errcode))
        self._emit(ClientEvent.TOKEN_RESEND)
        token = await self._paced_token(pace)
        answer = await self._request(request, token)
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

    async def _request(self, request: _Request, token: str) -> dict[str, Any]:
        self._emit(ClientEvent.REQUEST)
        if request.query:
            url: str | URL = self._base + request.path
            params: dict[str, str] | None = {**request.query, "access_token": token}
        else:
            url, params = self._url(request.path, token), None
        return await self._http.request_json(
            request.method, url, params=params, json=request.json, form=request.form
        )

    def _url(self, path: str, token: str) -> URL:
        """`path` with `?access_token=<token>`, kept for the token's lifetime."""
        if token != self._urls_token:
            self._urls, self._urls_token = {}, token
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base + path).extend_query(access_token=token)
        return url

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


@dataclass(frozen=True, slots=True)
class _Request:
    """One business API request, sent again as it was after a TOKEN answer."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    form: Sequence[tuple[str, str]] | None = None
    query: dict[str, str] | None = None


def _answered_id(answer: dict[str, Any], name: str, where: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise TransportError(f"{where}: answer has no {name}", request_sent=True)
    return value


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
