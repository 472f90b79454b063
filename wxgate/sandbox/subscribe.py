"""Subscribe messages at the simulated WeChat (docs/wechat-protocol.md §4): an official
account's `subscribe/bizsend`, a mini program's `subscribe/send`, their template
library under `/wxaapi/newtmpl/`, and the user's side, played by control calls.

A send is answered, in this order: 41001/40014/40001/42001 for the token; a token of
the other kind of account 48001 on bizsend (WxJava #2014) and 45103 on subscribe/send
(§6); 44002/47001 for the body; injected errcodes; 40037 without a template the
account added (or `bad_…`), 40003 without `touser`; 47003 for `miniprogram_state` or
`lang` outside their values; 41030 for a mini-program `page` starting `bad_`; the test
openids of template sends (40003, 43004, 43101); 47003 `data.<key>.value invalid` for
a template key without a value or where `typed_value_problem` (enum values included)
finds a problem; 43108 while a send to the same openid and template is still being
answered (it takes as long as the `latency_ms` fault); 43101 without a grant;
45009/45011 for the `daily_quota`/`minute_limit` faults; -1 twice for `busy_…`.

An accepted send spends a one-time grant (long-term grants stay), answers a msgid on
subscribe/send and none on bizsend (§4.1), and is followed by a
`subscribe_msg_sent_event`: ErrorCode 0 and `success`, or for `blocked_…` 43101 and
`failed:user block`, for `sysfail_…` -1 and `failed: system failed`, for `freqlimit_…`
43117 and `failed:freq limit` (WeChat documents only the success values; these
failures are the sandbox's). `popup` plays the user
answering a subscribe popup (accept or reject; one-time or long-term, as the
template's type allows) and `change` the user turning a template off in the
settings; each updates the grant ledger and pushes its event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from wxgate.sandbox.answers import OK_BODY, Answer, sent_body
from wxgate.sandbox.errors import ControlRequestError
from wxgate.sandbox.inbox import Received
from wxgate.sandbox.subscribe_templates import SubscribeTemplate, categories, keywords, titles
from wxgate.sandbox.wechat import (
    API_UNAUTHORIZED,
    ARGUMENT_INVALID,
    BAD_TEMPLATE,
    DAILY_QUOTA,
    DATA_FORMAT_ERROR,
    INVALID_OPENID,
    INVALID_TEMPLATE_ID,
    MINUTE_QUOTA,
    STATUS_FREQ_LIMIT,
    STATUS_SUCCESS,
    STATUS_SYSTEM_FAILED,
    STATUS_USER_BLOCK,
    AccountState,
    EventPush,
    SimulatedWeChat,
    answer_busy_openid,
    json_object,
    refuse_test_openid,
)
from wxgate.wechat.callback import (
    CallbackEvent,
    SubscribeChangeEvent,
    SubscribeChangeItem,
    SubscribePopupEvent,
    SubscribePopupItem,
    SubscribeSentEvent,
    SubscribeSentItem,
)
from wxgate.wechat.errors import SYSTEM_BUSY
from wxgate.wechat.kinds import AccountKind, MessageKind
from wxgate.wechat.subscribe import LANGS, MINIPROGRAM_STATES
from wxgate.wechat.template import typed_value_problem

API_UNSUPPORTED = 45103
USER_REFUSED = 43101
CONCURRENT_SENDS = 43108
TOO_FREQUENT = 43117
INVALID_PAGE = 41030

# What a token of the other kind of account is answered, by the path it called.
WRONG_KIND: dict[MessageKind, int] = {
    MessageKind.SUBSCRIBE: API_UNAUTHORIZED,
    MessageKind.MINIPROGRAM: API_UNSUPPORTED,
}
BAD_PAGE = "bad_"

# Test openids whose sends are accepted and then reported failed: (ErrorCode, ErrorStatus).
SENT_FAILURES: dict[str, tuple[int, str]] = {
    "blocked_": (USER_REFUSED, STATUS_USER_BLOCK),
    "sysfail_": (SYSTEM_BUSY, STATUS_SYSTEM_FAILED),
    "freqlimit_": (TOO_FREQUENT, STATUS_FREQ_LIMIT),
}

ACCEPT, REJECT = "accept", "reject"
ONE_TIME_GRANT, LONG_TERM_GRANT = "one_time", "long_term"
# PopupScene: 0 in a mini program, 1 on an H5 page, 2 in an article (push.html).
DEFAULT_POPUP_SCENE = {AccountKind.MINIPROGRAM: 0, AccountKind.OFFICIAL_ACCOUNT: 1}
IN_FLIGHT_KEPT = 4096


class SubscribeDesk:
    """The subscribe endpoints of a `SimulatedWeChat`, on its accounts, clock and counters."""

    def __init__(self, wechat: SimulatedWeChat) -> None:
        self._wechat = wechat

    # -- sends ---------------------------------------------------------------------------

    def bizsend(self, token: str | None, body: bytes, busy_for_s: float = 0.0) -> bytes:
        """POST /cgi-bin/message/subscribe/bizsend (§4.1); `busy_for_s`: how long the
        send stays in flight (its answer's delay)."""
        return self._send(MessageKind.SUBSCRIBE, token, body, busy_for_s)

    def send(self, token: str | None, body: bytes, busy_for_s: float = 0.0) -> bytes:
        """POST /cgi-bin/message/subscribe/send (§4.2)."""
        return self._send(MessageKind.MINIPROGRAM, token, body, busy_for_s)

    def _send(self, kind: MessageKind, token: str | None, body: bytes, busy_for_s: float) -> bytes:
        sends = self._wechat.stats.sends_by_kind[kind]
        try:
            answer = self._carry_out(kind, token, body, busy_for_s)
        except Answer as refused:
            sends[refused.errcode] += 1
            return refused.body()
        sends[0] += 1
        return answer

    def _carry_out(
        self, kind: MessageKind, token: str | None, body: bytes, busy_for_s: float
    ) -> bytes:
        wechat = self._wechat
        state, now = wechat.authorised(token, None)
        if state.account.kind is not kind.account:
            raise Answer(WRONG_KIND[kind])
        wechat.arrivals.record(state.account.appid, now)
        message = json_object(body)
        if wechat.faults.errcode_table:
            wechat.injected_errcode()
        touser, template = _addressed(state, kind, message)
        _check_data(template, message.get("data"), kind)
        key = (touser, template.template_id)
        if state.in_flight.get(key, now) > now:
            raise Answer(CONCURRENT_SENDS)
        if not state.grants.allows(touser, template.template_id):
            raise Answer(USER_REFUSED)
        faults = wechat.faults
        if state.subscribe_today.full(now, faults.daily_quota):
            raise Answer(DAILY_QUOTA)
        if state.subscribe_this_minute.full(now, faults.minute_limit):
            raise Answer(MINUTE_QUOTA)
        answer_busy_openid(state, touser)
        return self._accept(state, kind, now, key, body, busy_for_s)

    def _accept(
        self,
        state: AccountState,
        kind: MessageKind,
        now: float,
        key: tuple[str, str],
        body: bytes,
        busy_for_s: float,
    ) -> bytes:
        wechat = self._wechat
        touser, template_id = key
        state.subscribe_today.count += 1
        state.subscribe_this_minute.count += 1
        state.grants.use(touser, template_id)
        if busy_for_s > 0:
            _mark_in_flight(state, key, now, now + busy_for_s)
        msgid = wechat.next_msgid()
        code, status = _sent_result(touser)
        appid = state.account.appid
        wechat.inbox.append(
            Received(appid, touser, template_id, None, msgid, body, now, status, kind)
        )
        item = SubscribeSentItem(template_id, msgid, code, status)
        event = SubscribeSentEvent(state.account.original_id, touser, int(now), (item,))
        wechat.push(EventPush(state.account, event))
        return sent_body(msgid) if kind is MessageKind.MINIPROGRAM else OK_BODY

    # -- the template library (/wxaapi/newtmpl/) -----------------------------------------

    def get_category(self, token: str | None, _params: Mapping[str, str], _body: bytes) -> bytes:
        return self._library(token, lambda _state: {"data": categories()})

    def get_titles(self, token: str | None, params: Mapping[str, str], _body: bytes) -> bytes:
        return self._library(token, lambda _state: titles(params))

    def get_keywords(self, token: str | None, params: Mapping[str, str], _body: bytes) -> bytes:
        return self._library(token, lambda _state: keywords(params))

    def add_template(self, token: str | None, _params: Mapping[str, str], body: bytes) -> bytes:
        return self._library(
            token, lambda state: {"priTmplId": state.subscribe_templates.add(body)}
        )

    def get_templates(self, token: str | None, _params: Mapping[str, str], _body: bytes) -> bytes:
        return self._library(token, lambda state: {"data": state.subscribe_templates.listing()})

    def delete_template(self, token: str | None, _params: Mapping[str, str], body: bytes) -> bytes:
        return self._library(token, lambda state: state.subscribe_templates.delete(body))

    def _library(
        self, token: str | None, act: Callable[[AccountState], dict[str, Any] | None]
    ) -> bytes:
        try:
            state, _now = self._wechat.authorised(token, None)
            result = act(state)
        except Answer as answer:
            return answer.body()
        if result is None:
            return OK_BODY
        return orjson.dumps({"errcode": 0, "errmsg": "ok", **result})

    # -- the user's side (control) -------------------------------------------------------

    def popup(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The user answers a subscribe popup for one to three templates; the grant ledger
        changes and a subscribe_msg_popup_event is pushed."""
        state, openid, templates = self._user_action(request)
        action = request.get("action")
        if action not in (ACCEPT, REJECT):
            raise ControlRequestError(f"action must be {ACCEPT} or {REJECT}")
        scene = request.get("popup_scene", DEFAULT_POPUP_SCENE[state.account.kind])
        if type(scene) is not int or scene not in (0, 1, 2):
            raise ControlRequestError("popup_scene must be 0, 1 or 2")
        long_terms = [_long_term(request.get("type"), template) for template in templates]
        for template, long_term in zip(templates, long_terms, strict=True):
            if action == ACCEPT:
                state.grants.accept(openid, template.template_id, long_term=long_term)
            else:
                state.grants.reject(openid, template.template_id)
        items = tuple(SubscribePopupItem(t.template_id, action, scene) for t in templates)
        event = SubscribePopupEvent(state.account.original_id, openid, self._now(), items)
        return self._user_event(state, event, templates)

    def change(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The user turns templates off in the settings (WeChat pushes only that change):
        their grants are cleared and a subscribe_msg_change_event is pushed."""
        state, openid, templates = self._user_action(request)
        if request.get("action", REJECT) != REJECT:
            raise ControlRequestError(f"action must be {REJECT}: WeChat pushes no other change")
        for template in templates:
            state.grants.reject(openid, template.template_id)
        items = tuple(SubscribeChangeItem(t.template_id, REJECT) for t in templates)
        event = SubscribeChangeEvent(state.account.original_id, openid, self._now(), items)
        return self._user_event(state, event, templates)

    def grants(self, params: Mapping[str, str]) -> dict[str, Any]:
        state = self._wechat.account(params.get("appid"))
        return {"appid": state.account.appid, "grants": state.grants.to_json(params.get("openid"))}

    def _user_action(
        self, request: Mapping[str, Any]
    ) -> tuple[AccountState, str, list[SubscribeTemplate]]:
        state = self._wechat.account(request.get("appid"))
        openid = request.get("openid")
        if not isinstance(openid, str) or not openid:
            raise ControlRequestError("openid must be a non-empty string")
        ids = request.get("template_ids", [request.get("template_id")])
        if not isinstance(ids, list) or not 1 <= len(ids) <= 3:
            raise ControlRequestError("template_ids must list one to three template ids")
        templates = []
        for template_id in ids:
            template = None
            if isinstance(template_id, str):
                template = state.subscribe_templates.get(template_id)
            if template is None:
                raise ControlRequestError(
                    f"template_id {template_id!r} is not a subscribe template of "
                    f"{state.account.appid} (add it with /wxaapi/newtmpl/addtemplate)"
                )
            templates.append(template)
        return state, openid, templates

    def _now(self) -> int:
        return int(self._wechat.clock.now())

    def _user_event(
        self, state: AccountState, event: CallbackEvent, templates: list[SubscribeTemplate]
    ) -> dict[str, Any]:
        """Push the user's event; answer the grants it left."""
        self._wechat.push(EventPush(state.account, event))
        openid, grants = event.from_user, state.grants
        return {
            "appid": state.account.appid,
            "openid": openid,
            "grants": [
                {"template_id": t.template_id, **grants.grant(openid, t.template_id).to_json()}
                for t in templates
            ],
            "pushed": state.account.callback_url is not None,
        }


def _addressed(
    state: AccountState, kind: MessageKind, message: dict[str, Any]
) -> tuple[str, SubscribeTemplate]:
    """The recipient and the template of a send, once the fields around them hold."""
    touser, template_id = message.get("touser"), message.get("template_id")
    if type(template_id) is not str or not template_id:
        raise Answer(INVALID_TEMPLATE_ID)
    if type(touser) is not str or not touser:
        raise Answer(INVALID_OPENID)
    template = state.subscribe_templates.get(template_id)
    if template is None or template_id.startswith(BAD_TEMPLATE):
        raise Answer(INVALID_TEMPLATE_ID)
    page = message.get("page")
    if page is not None and type(page) is not str:
        raise Answer(DATA_FORMAT_ERROR)
    if kind is MessageKind.MINIPROGRAM:
        for name, allowed in (("miniprogram_state", MINIPROGRAM_STATES), ("lang", LANGS)):
            value = message.get(name)
            if value is not None and value not in allowed:
                raise Answer(ARGUMENT_INVALID, f" {name} invalid")
        if page is not None and page.startswith(BAD_PAGE):
            raise Answer(INVALID_PAGE)
    elif message.get("miniprogram") is not None and type(message["miniprogram"]) is not dict:
        raise Answer(DATA_FORMAT_ERROR)
    refuse_test_openid(touser)
    return touser, template


def _check_data(template: SubscribeTemplate, data: Any, kind: MessageKind) -> None:
    """47003 for a key of the template without a string value, or where the gateway's own
    `typed_value_problem` finds one for `kind` (typed keys are always strict for
    subscribe messages; an enum key takes only the template's values)."""
    if type(data) is not dict:
        raise Answer(DATA_FORMAT_ERROR)
    for keyword in template.keywords:
        item = data.get(keyword.key)
        value = item.get("value") if type(item) is dict else None
        allowed = keyword.enum_values or None
        wrong = (
            type(value) is not str
            or typed_value_problem(keyword.key, value, kind=kind, allowed=allowed) is not None
        )
        if wrong:
            raise Answer(ARGUMENT_INVALID, f" data.{keyword.key}.value invalid")


def _sent_result(touser: str) -> tuple[int, str]:
    for prefix, result in SENT_FAILURES.items():
        if touser.startswith(prefix):
            return result
    return 0, STATUS_SUCCESS


def _mark_in_flight(state: AccountState, key: tuple[str, str], now: float, until: float) -> None:
    in_flight = state.in_flight
    if len(in_flight) >= IN_FLIGHT_KEPT:
        for ended in [k for k, end in in_flight.items() if end <= now]:
            del in_flight[ended]
    in_flight[key] = until


def _long_term(wanted: Any, template: SubscribeTemplate) -> bool:
    """Whether an accept grants long-term: what the template's type allows, and `type`
    (`one_time` or `long_term`) must agree with it when given."""
    long_term = template.long_term
    if wanted is None:
        return long_term
    if wanted not in (ONE_TIME_GRANT, LONG_TERM_GRANT):
        raise ControlRequestError(f"type must be {ONE_TIME_GRANT} or {LONG_TERM_GRANT}")
    if (wanted == LONG_TERM_GRANT) != long_term:
        kind = LONG_TERM_GRANT if long_term else ONE_TIME_GRANT
        raise ControlRequestError(f"type: template {template.template_id} is {kind}")
    return long_term
