"""Which path answers what: WeChat's endpoints, the transport faults in front of the
three send paths (template/send, subscribe/bizsend, subscribe/send), and the JSON
control endpoints under /sandbox/.

`Router.dispatch` is what every HTTP request goes through, so it does one
partition and one dict lookup before the endpoint runs.

Control endpoints beyond the inbox, stats, faults, reset and clock:
`POST /sandbox/tokens/foreign-refresh {appid, endpoint: token|stable_token}` plays
another system fetching the account's token; `POST /sandbox/subscribe/popup {appid,
openid, template_id | template_ids, action: accept|reject, type?: one_time|long_term,
popup_scene?}` and `POST /sandbox/subscribe/change {appid, openid, template_id}` play
the user; `GET /sandbox/subscribe/grants?appid=&openid=` shows the grant ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from wxgate.sandbox.answers import error_body
from wxgate.sandbox.callbacks import CallbackDispatcher
from wxgate.sandbox.clock import OffsetClock
from wxgate.sandbox.config import DEFAULT_APPID
from wxgate.sandbox.errors import ControlRequestError
from wxgate.sandbox.faults import FaultKind
from wxgate.sandbox.http import (
    ABORT,
    HTML_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    Delayed,
    Hang,
    Reply,
    Response,
)
from wxgate.sandbox.inbox import DEFAULT_LIMIT, MAX_LIMIT
from wxgate.sandbox.stalls import LoopStalls
from wxgate.sandbox.subscribe import SubscribeDesk
from wxgate.sandbox.wechat import FOREIGN_CLASSIC, SimulatedWeChat
from wxgate.wechat.kinds import MessageKind

MAX_RATE_WINDOW_S = 86_400.0
HANG_S = 60.0  # a hung request is held this long, then its connection is closed
REQUIRE_POST = 43002

BAD_GATEWAY = Response(
    b"502 Bad Gateway",
    HTML_TYPE,
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
)
NOT_FOUND = Response(b"404 Not Found", TEXT_TYPE, b"not found\n")
METHOD_NOT_ALLOWED = Response(b"405 Method Not Allowed", TEXT_TYPE, b"method not allowed\n")
_TOKEN_PARAM = b"access_token="

Handler = Callable[[bytes, bytes, bytes], Reply]  # (method, query, body) -> reply
Send = Callable[[str | None, bytes, float], bytes]  # (token, body, in flight for s) -> answer


def _params(query: bytes) -> dict[str, str]:
    return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))


def access_token(query: bytes) -> str | None:
    """The `access_token` query parameter (fast when it is the only one)."""
    if query.startswith(_TOKEN_PARAM) and b"&" not in query and b"%" not in query:
        return query[len(_TOKEN_PARAM) :].decode("latin-1")
    return _params(query).get("access_token")


def _bad_request(message: str) -> Response:
    return Response(b"400 Bad Request", JSON_TYPE, orjson.dumps({"error": message}))


def _json_request(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise ControlRequestError("the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise ControlRequestError("the body must be a JSON object")
    return value


def _whole_number(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ControlRequestError(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _business(endpoint: Callable[[str | None, bytes], bytes], *, post: bool) -> Handler:
    """A WeChat business API: ?access_token= in the query, JSON in the body."""

    def handler(method: bytes, query: bytes, body: bytes) -> Reply:
        if post and method != b"POST":
            return error_body(REQUIRE_POST)
        return endpoint(access_token(query), body)

    return handler


def _library(
    endpoint: Callable[[str | None, dict[str, str], bytes], bytes], *, post: bool
) -> Handler:
    """A template-library API: ?access_token= and parameters in the query, a body to POST."""

    def handler(method: bytes, query: bytes, body: bytes) -> Reply:
        if post and method != b"POST":
            return error_body(REQUIRE_POST)
        params = _params(query)
        return endpoint(params.get("access_token"), params, body)

    return handler


def _control(endpoint: Callable[[bytes, dict[str, str], bytes], Any], *methods: bytes) -> Handler:
    """A control endpoint: JSON in, JSON out, 400 with a message for bad input."""

    def handler(method: bytes, query: bytes, body: bytes) -> Reply:
        if method not in methods:
            return METHOD_NOT_ALLOWED
        try:
            return orjson.dumps(endpoint(method, _params(query), body))
        except ControlRequestError as exc:
            return _bad_request(str(exc))

    return handler


def _message_kind(raw: str | None) -> MessageKind | None:
    if raw is None:
        return None
    if raw not in tuple(MessageKind):
        raise ControlRequestError(f"kind must be one of {', '.join(MessageKind)}")
    return MessageKind(raw)


class Router:
    """Maps a request to the simulated WeChat or to a control endpoint."""

    def __init__(
        self,
        wechat: SimulatedWeChat,
        subscribe: SubscribeDesk,
        callbacks: CallbackDispatcher,
        clock: OffsetClock,
        stalls: LoopStalls,
    ) -> None:
        self._wechat = wechat
        self._subscribe = subscribe
        self._callbacks = callbacks
        self._clock = clock
        self._stalls = stalls
        templates = b"/cgi-bin/template/"
        newtmpl = b"/wxaapi/newtmpl/"
        self._routes: dict[bytes, Handler] = {
            b"/cgi-bin/message/template/send": self._template_send,
            b"/cgi-bin/message/subscribe/bizsend": self._send_path(subscribe.bizsend),
            b"/cgi-bin/message/subscribe/send": self._send_path(subscribe.send),
            b"/cgi-bin/token": lambda _method, query, _body: wechat.token(_params(query)),
            b"/cgi-bin/stable_token": self._stable_token,
            templates + b"api_set_industry": _business(wechat.set_industry, post=True),
            templates + b"get_industry": _business(wechat.get_industry, post=False),
            templates + b"api_add_template": _business(wechat.add_template, post=True),
            templates + b"get_all_private_template": _business(wechat.all_templates, post=False),
            templates + b"del_private_template": _business(wechat.delete_template, post=True),
            newtmpl + b"getcategory": _library(subscribe.get_category, post=False),
            newtmpl + b"getpubtemplatetitles": _library(subscribe.get_titles, post=False),
            newtmpl + b"getpubtemplatekeywords": _library(subscribe.get_keywords, post=False),
            newtmpl + b"addtemplate": _library(subscribe.add_template, post=True),
            newtmpl + b"gettemplate": _library(subscribe.get_templates, post=False),
            newtmpl + b"deltemplate": _library(subscribe.delete_template, post=True),
            b"/sandbox/messages": _control(self._messages, b"GET"),
            b"/sandbox/stats": _control(self._stats, b"GET"),
            b"/sandbox/send-rate": _control(self._send_rate, b"GET"),
            b"/sandbox/faults": _control(self._faults, b"GET", b"POST"),
            b"/sandbox/reset": _control(self._reset, b"POST"),
            b"/sandbox/clock": _control(self._clock_endpoint, b"GET", b"POST"),
            b"/sandbox/tokens/foreign-refresh": _control(self._foreign_refresh, b"POST"),
            b"/sandbox/subscribe/popup": _control(self._popup, b"POST"),
            b"/sandbox/subscribe/change": _control(self._change, b"POST"),
            b"/sandbox/subscribe/grants": _control(self._grants, b"GET"),
        }

    def dispatch(self, method: bytes, target: bytes, body: bytes) -> Reply:
        path, _, query = target.partition(b"?")
        handler = self._routes.get(path)
        if handler is None:
            return NOT_FOUND
        return handler(method, query, body)

    # -- WeChat -------------------------------------------------------------------------

    def _stable_token(self, method: bytes, _query: bytes, body: bytes) -> Reply:
        if method != b"POST":
            return error_body(REQUIRE_POST)
        return self._wechat.stable_token(body)

    def _template_send(self, method: bytes, query: bytes, body: bytes) -> Reply:
        # The benchmarks' hot path: no closure, no extra argument, one attribute test.
        if self._wechat.faults.disturbs_transport:
            return self._disturbed_send(method, query, body, self._template_send_in_flight)
        if method != b"POST":
            return error_body(REQUIRE_POST)
        return self._wechat.template_send(access_token(query), body)

    def _template_send_in_flight(
        self, token: str | None, body: bytes, _in_flight_s: float
    ) -> bytes:
        return self._wechat.template_send(token, body)

    def _send_path(self, send: Send) -> Handler:
        def handler(method: bytes, query: bytes, body: bytes) -> Reply:
            if self._wechat.faults.disturbs_transport:
                return self._disturbed_send(method, query, body, send)
            if method != b"POST":
                return error_body(REQUIRE_POST)
            return send(access_token(query), body, 0.0)

        return handler

    def _disturbed_send(self, method: bytes, query: bytes, body: bytes, send: Send) -> Reply:
        """A send with transport faults drawn first: 502, a hang (before or after the send
        is carried out), a reset, latency (the time the send stays in flight)."""
        wechat = self._wechat
        kind = wechat.dice.transport(wechat.faults)
        if kind is not None:
            wechat.stats.faults[kind.value] += 1
        if kind is FaultKind.HANG:
            return Hang(HANG_S)
        if kind is FaultKind.RESET:
            return ABORT
        latency_s = wechat.faults.latency_ms / 1000.0
        reply: bytes | Response
        if kind is FaultKind.HTTP_502:
            reply = BAD_GATEWAY
        elif method != b"POST":
            reply = error_body(REQUIRE_POST)
        else:
            reply = send(access_token(query), body, latency_s)
        if kind is FaultKind.HANG_AFTER_SEND:
            return Hang(HANG_S)
        if latency_s > 0:
            wechat.stats.faults[FaultKind.LATENCY.value] += 1
            return Delayed(latency_s, reply)
        return reply

    # -- control ------------------------------------------------------------------------

    def _messages(self, _method: bytes, params: dict[str, str], _body: bytes) -> dict[str, Any]:
        limit = _whole_number(params, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
        offset = _whole_number(params, "offset", 0, 0, 2**62)
        total, items = self._wechat.inbox.query(
            appid=params.get("appid"),
            touser=params.get("touser"),
            client_msg_id=params.get("client_msg_id"),
            kind=_message_kind(params.get("kind")),
            limit=limit,
            offset=offset,
        )
        return {"total": total, "items": [item.to_json() for item in items]}

    def _stats(self, _method: bytes, _params: dict[str, str], _body: bytes) -> dict[str, Any]:
        return self._wechat.stats.to_json(
            inbox=len(self._wechat.inbox), callbacks_pending=self._callbacks.pending
        )

    def _send_rate(self, _method: bytes, params: dict[str, str], _body: bytes) -> dict[str, Any]:
        """Per account: sends so far and the busiest `window_s` (default 1 s); and the
        stalls of the sandbox's own loop, which may have bunched those arrivals."""
        raw = params.get("window_s", "1")
        try:
            window_s = float(raw)
        except ValueError:
            window_s = math.nan
        if not 0 < window_s <= MAX_RATE_WINDOW_S:
            raise ControlRequestError(
                f"window_s must be a number of seconds in (0, {MAX_RATE_WINDOW_S}]"
            )
        arrivals = self._wechat.arrivals
        wanted = params.get("appid")
        appids = arrivals.appids() if wanted is None else [wanted]
        return {
            "window_s": window_s,
            "accounts": {
                appid: {
                    "sends": arrivals.count(appid),
                    "busiest": arrivals.busiest(appid, window_s).to_json(),
                }
                for appid in appids
            },
            "loop_stalls": self._stalls.to_json(),
        }

    def _faults(self, method: bytes, _params: dict[str, str], body: bytes) -> dict[str, Any]:
        if method == b"POST":
            self._wechat.set_faults(_json_request(body))
        return self._wechat.faults.to_json()

    def _reset(self, _method: bytes, _params: dict[str, str], _body: bytes) -> dict[str, Any]:
        self._callbacks.clear()
        self._wechat.reset()
        self._stalls.clear()
        return {"ok": True}

    def _clock_endpoint(
        self, method: bytes, _params: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        if method == b"POST":
            advance = _json_request(body).get("advance_s")
            number = isinstance(advance, int | float) and not isinstance(advance, bool)
            if not number or not 0 <= advance < math.inf:
                raise ControlRequestError("advance_s must be a finite number of seconds >= 0")
            self._clock.advance(float(advance))
        return {"now": self._clock.now(), "offset_s": self._clock.offset}

    def _foreign_refresh(
        self, _method: bytes, _params: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        request = _json_request(body)
        return self._wechat.foreign_refresh(
            request.get("appid", DEFAULT_APPID), request.get("endpoint", FOREIGN_CLASSIC)
        )

    def _popup(self, _method: bytes, _params: dict[str, str], body: bytes) -> dict[str, Any]:
        return self._subscribe.popup(_json_request(body))

    def _change(self, _method: bytes, _params: dict[str, str], body: bytes) -> dict[str, Any]:
        return self._subscribe.change(_json_request(body))

    def _grants(self, _method: bytes, params: dict[str, str], _body: bytes) -> dict[str, Any]:
        return self._subscribe.grants(params)
