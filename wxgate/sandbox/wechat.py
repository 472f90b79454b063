"""The simulated WeChat: the endpoints' rules, per account, with nothing of HTTP in them.

Each endpoint takes what the request carried and returns the JSON body WeChat
would answer (errors as `Answer`s rendered with a `rid:`). Time comes from the
injected clock; accepted sends go to the inbox and, when the account has a
callback URL, to `report` for a TEMPLATESENDJOBFINISH. The send path is the
hot one: dict lookups and one `orjson.loads`, nothing else per request.
Subscribe messages are `subscribe.SubscribeDesk`'s, which works on the same state.

Accounts have a kind: a mini program's token is refused by template/send and the
template-message management calls with 48001 (docs/wechat-protocol.md §6: "wrong token type").
`foreign_refresh` plays another system fetching the account's token.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from wxgate.sandbox.answers import OK_BODY, Answer, error_body, sent_body
from wxgate.sandbox.clock import OffsetClock
from wxgate.sandbox.config import SandboxAccount
from wxgate.sandbox.errors import ControlRequestError
from wxgate.sandbox.faults import DUPLICATE_40241, FaultDice, FaultSettings, errcode_fault_name
from wxgate.sandbox.grants import GrantLedger
from wxgate.sandbox.inbox import Inbox, Received
from wxgate.sandbox.limits import (
    BUSY_FAILURES,
    CLASSIC_TOKEN_PER_DAY,
    DEDUPE_WINDOW_S,
    STABLE_TOKEN_PER_DAY,
    STABLE_TOKEN_PER_MINUTE,
    WindowCounter,
    per_day,
    per_minute,
)
from wxgate.sandbox.rate import SendArrivals
from wxgate.sandbox.stats import STABLE_TOKEN, STABLE_TOKEN_FORCE, TOKEN, SandboxStats
from wxgate.sandbox.subscribe_templates import SubscribeTemplates
from wxgate.sandbox.templates import TemplateLibrary
from wxgate.sandbox.tokens import AccountTokens, TokenRegistry
from wxgate.wechat.callback import CallbackEvent
from wxgate.wechat.errors import SYSTEM_BUSY
from wxgate.wechat.kinds import AccountKind
from wxgate.wechat.template import typed_value_problem

GRANT_TYPE = "client_credential"

# Status values of TEMPLATESENDJOBFINISH (docs/wechat-protocol.md §5.5).
STATUS_SUCCESS = "success"
STATUS_USER_BLOCK = "failed:user block"
STATUS_SYSTEM_FAILED = "failed: system failed"
STATUS_FREQ_LIMIT = "failed:freq limit"  # observed in 2024: too many to this user

# Test openids and template ids (docs/design.md, "Sandbox"): prefix -> errcode.
REFUSING_OPENIDS: dict[str, int] = {"invalid_": 40003, "unfollowed_": 43004, "refused_": 43101}
REPORTING_OPENIDS: dict[str, str] = {
    "blocked_": STATUS_USER_BLOCK,
    "sysfail_": STATUS_SYSTEM_FAILED,
    "freqlimit_": STATUS_FREQ_LIMIT,
}
BUSY_OPENID = "busy_"
BAD_TEMPLATE = "bad_"
_TEST_OPENIDS = (*REFUSING_OPENIDS, *REPORTING_OPENIDS, BUSY_OPENID)

# The errcodes this module answers with, by what they mean here.
INVALID_OPENID = 40003
INVALID_TEMPLATE_ID = 40037
EMPTY_POST_DATA = 44002
DATA_FORMAT_ERROR = 47001
ARGUMENT_INVALID = 47003
DAILY_QUOTA = 45009
MINUTE_QUOTA = 45011
INVALID_GRANT_TYPE = 40002
APPID_MISSING = 41002
SECRET_MISSING = 41004
INVALID_APPID = 40013
BAD_SECRET_CLASSIC = 40001  # what /cgi-bin/token answers for a wrong secret
BAD_SECRET_STABLE = 40125  # what /cgi-bin/stable_token answers for one
API_UNAUTHORIZED = 48001
DUPLICATE_MESSAGE = 40241

# Who fetched a token, as `foreign_refresh` plays it.
FOREIGN_CLASSIC = "token"  # another system calls /cgi-bin/token
FOREIGN_STABLE_FORCE = "stable_token"  # another system calls stable_token force_refresh
FOREIGN_ENDPOINTS = (FOREIGN_CLASSIC, FOREIGN_STABLE_FORCE)

MSGID_BASE = 2**60  # msgids are int64 above 2^53, as WeChat's are
VALID_PAIRS_KEPT = 65_536


class Report(NamedTuple):
    """A TEMPLATESENDJOBFINISH to deliver for an accepted send."""

    account: SandboxAccount
    touser: str
    msgid: int
    status: str
    create_time: int


class EventPush(NamedTuple):
    """Another event to push to the account's callback URL (a subscribe event)."""

    account: SandboxAccount
    event: CallbackEvent


Push = Report | EventPush  # what the callback URL of an account is sent


@dataclass(slots=True)
class AccountState:
    """Everything the simulated WeChat remembers about one account."""

    account: SandboxAccount
    tokens: AccountTokens = field(default_factory=AccountTokens)
    templates: TemplateLibrary = field(default_factory=TemplateLibrary)
    subscribe_templates: SubscribeTemplates = field(default_factory=SubscribeTemplates)
    grants: GrantLedger = field(default_factory=GrantLedger)
    sends_today: WindowCounter = field(default_factory=per_day)
    sends_this_minute: WindowCounter = field(default_factory=per_minute)
    subscribe_today: WindowCounter = field(default_factory=per_day)
    subscribe_this_minute: WindowCounter = field(default_factory=per_minute)
    # (touser, template_id) -> when the subscribe send to them ends (43108 until then).
    in_flight: dict[tuple[str, str], float] = field(default_factory=dict)
    classic_today: WindowCounter = field(default_factory=per_day)
    stable_today: WindowCounter = field(default_factory=per_day)
    stable_this_minute: WindowCounter = field(default_factory=per_minute)
    # (touser, client_msg_id) -> (msgid, accepted at), oldest first.
    recent: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    busy_answers: dict[str, int] = field(default_factory=dict)

    def forget_old_sends(self, now: float) -> None:
        """Drop de-dupe entries older than the window (they are kept in acceptance order)."""
        recent = self.recent
        horizon = now - DEDUPE_WINDOW_S
        while recent:
            key = next(iter(recent))
            if recent[key][1] > horizon:
                return
            del recent[key]


def json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise Answer(EMPTY_POST_DATA)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Answer(DATA_FORMAT_ERROR) from None
    if type(value) is not dict:
        raise Answer(DATA_FORMAT_ERROR)
    return value


def _check_data(data: dict[str, Any], valid: set[tuple[str, str]]) -> None:
    """47003 `argument invalid! data.<key>.value invalid` where WeChat would say it.

    `valid` remembers pairs already checked: measured at 2.5 us of a ~14 us send for
    four typed keys without it, 0.7 us with it (senders repeat most values)."""
    for key, item in data.items():
        value = item.get("value") if type(item) is dict else None
        if type(value) is not str:
            raise Answer(ARGUMENT_INVALID, f" data.{key}.value invalid")
        pair = (key, value)
        if pair in valid:
            continue
        if typed_value_problem(key, value) is not None:
            raise Answer(ARGUMENT_INVALID, f" data.{key}.value invalid")
        if len(valid) >= VALID_PAIRS_KEPT:
            valid.clear()
        valid.add(pair)


def refuse_test_openid(touser: str) -> None:
    """Answer the errcode of an openid that cannot receive messages (40003, 43004, 43101)."""
    for prefix, errcode in REFUSING_OPENIDS.items():
        if touser.startswith(prefix):
            raise Answer(errcode)


def _test_openid_status(state: AccountState, touser: str) -> str:
    """The Status a test openid's report carries; `busy_` ones are answered -1 at first."""
    for prefix, status in REPORTING_OPENIDS.items():
        if touser.startswith(prefix):
            return status
    answer_busy_openid(state, touser)
    return STATUS_SUCCESS


def answer_busy_openid(state: AccountState, touser: str) -> None:
    """-1 for the first sends to a `busy_` openid (BUSY_FAILURES of them), then nothing."""
    if touser.startswith(BUSY_OPENID):
        answered = state.busy_answers.get(touser, 0)
        if answered < BUSY_FAILURES:
            state.busy_answers[touser] = answered + 1
            raise Answer(SYSTEM_BUSY)


class SimulatedWeChat:
    """WeChat's token, send and template-management endpoints for some accounts."""

    def __init__(
        self,
        accounts: list[SandboxAccount],
        *,
        clock: OffsetClock,
        token_ttl_s: float,
        report: Callable[[Push], None] | None = None,
        dice: FaultDice | None = None,
    ) -> None:
        self._configured = list(accounts)
        self.clock = clock
        self._report = report
        self.dice = dice if dice is not None else FaultDice()
        self._token_ttl_s = token_ttl_s
        self._msgids = MSGID_BASE + random.getrandbits(48)
        self._sends_until_prune = 0
        self._valid_pairs: set[tuple[str, str]] = set()
        self.stats = SandboxStats()
        self.inbox = Inbox()
        self.arrivals = SendArrivals()
        self.faults = FaultSettings()
        self.reset()

    def reset(self) -> None:
        """Forget everything but the accounts: tokens, inbox, stats, faults, counters, clock."""
        self.accounts = {a.appid: AccountState(a) for a in self._configured}
        self.tokens = TokenRegistry(self._token_ttl_s)
        self.inbox.clear()
        self.arrivals.clear()
        self.stats.clear()
        self.faults = FaultSettings()
        self.clock.reset()

    def set_faults(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Merge `changes` into the fault settings (FaultConfigError when invalid)."""
        self.faults, expire = self.faults.merge(changes)
        if expire:
            self.tokens.expire_all(self.clock.now())
        return self.faults

    def account(self, appid: str | None) -> AccountState:
        """The state of a configured account (ControlRequestError naming the appid if none)."""
        state = self.accounts.get(appid) if isinstance(appid, str) else None
        if state is None:
            raise ControlRequestError(f"appid {appid!r} is not an account of this sandbox")
        return state

    def push(self, push: Push) -> None:
        """Hand a push to callback delivery when the account has a callback URL."""
        if self._report is not None and push.account.callback_url is not None:
            self._report(push)

    def next_msgid(self) -> int:
        self._msgids += 1
        return self._msgids

    # -- access tokens ------------------------------------------------------------------

    def token(self, params: Mapping[str, str]) -> bytes:
        """GET /cgi-bin/token: a new token on every call (§1.1)."""
        self.stats.token_fetches[TOKEN] += 1
        try:
            state = self._credentials(params, BAD_SECRET_CLASSIC)
            now = self.clock.now()
            if not state.classic_today.hit(now, CLASSIC_TOKEN_PER_DAY):
                raise Answer(DAILY_QUOTA)
            token, ttl = self.tokens.fetch_classic(state.account.appid, state.tokens, now)
        except Answer as answer:
            return answer.body()
        return orjson.dumps({"access_token": token, "expires_in": ttl})

    def stable_token(self, body: bytes) -> bytes:
        """POST /cgi-bin/stable_token: the shared current token, rotated when due (§1.2).
        A body that is not a JSON object holds no appid: 41002, as WeChat answers it (the
        protocol review's row 14)."""
        try:
            request = json_object(body)
        except Answer:
            self.stats.token_fetches[STABLE_TOKEN] += 1
            return error_body(APPID_MISSING)
        force = request.get("force_refresh", False)
        self.stats.token_fetches[STABLE_TOKEN_FORCE if force is True else STABLE_TOKEN] += 1
        try:
            if not isinstance(force, bool):
                raise Answer(DATA_FORMAT_ERROR)
            state = self._credentials(request, BAD_SECRET_STABLE)
            now = self.clock.now()
            if not state.stable_today.hit(now, STABLE_TOKEN_PER_DAY):
                raise Answer(DAILY_QUOTA)
            if not state.stable_this_minute.hit(now, STABLE_TOKEN_PER_MINUTE):
                raise Answer(MINUTE_QUOTA)
            appid = state.account.appid
            token, ttl = self.tokens.fetch_stable(appid, state.tokens, now, force)
        except Answer as answer:
            return answer.body()
        return orjson.dumps({"access_token": token, "expires_in": ttl})

    def _credentials(self, params: Mapping[str, Any], bad_secret: int) -> AccountState:
        if self.faults.token_error_rate and self.dice.token_error(self.faults):
            self.stats.faults[errcode_fault_name(SYSTEM_BUSY)] += 1
            raise Answer(SYSTEM_BUSY)
        if params.get("grant_type") != GRANT_TYPE:
            raise Answer(INVALID_GRANT_TYPE)
        appid, secret = params.get("appid"), params.get("secret")
        if not appid or not isinstance(appid, str):
            raise Answer(APPID_MISSING)
        if not secret or not isinstance(secret, str):
            raise Answer(SECRET_MISSING)
        state = self.accounts.get(appid)
        if state is None:
            raise Answer(INVALID_APPID)
        if not hmac.compare_digest(secret.encode(), state.account.secret.encode()):
            raise Answer(bad_secret)
        return state

    def authorised(
        self, token: str | None, kind: AccountKind | None = AccountKind.OFFICIAL_ACCOUNT
    ) -> tuple[AccountState, float]:
        """The account behind a token and the time now; an Answer for a token that is not
        good (41001, 40014, 40001, 42001) or not of `kind` (48001; None takes any)."""
        now = self.clock.now()
        state = self.accounts[self.tokens.check(token, now).appid]
        if kind is not None and state.account.kind is not kind:
            raise Answer(API_UNAUTHORIZED)
        return state, now

    def foreign_refresh(self, appid: str | None, endpoint: str) -> dict[str, Any]:
        """Play another system fetching this account's token: a classic /cgi-bin/token call
        (the token it replaces works 300 s more, then 40001) or a stable_token force_refresh
        (the stable token it replaces fails at once; none happens within 30 s of the last,
        or past 20 a day, §1.2). Not counted as a token fetch of the gateway's."""
        state = self.account(appid)
        if endpoint not in FOREIGN_ENDPOINTS:
            raise ControlRequestError(f"endpoint must be one of {', '.join(FOREIGN_ENDPOINTS)}")
        now, tokens = self.clock.now(), state.tokens
        if endpoint == FOREIGN_CLASSIC:
            before = tokens.classic
            self.tokens.fetch_classic(state.account.appid, tokens, now)
            replaced = before is not None
        else:
            before = tokens.stable
            self.tokens.fetch_stable(state.account.appid, tokens, now, force=True)
            replaced = before is not None and tokens.stable != before
        self.stats.foreign_token_refreshes += 1
        return {"appid": state.account.appid, "endpoint": endpoint, "replaced": replaced}

    # -- template/send ------------------------------------------------------------------

    def template_send(self, token: str | None, body: bytes) -> bytes:
        """POST /cgi-bin/message/template/send (§2, §9 item 4)."""
        try:
            accepted = self._send(token, body)
        except Answer as answer:
            self.stats.sends[answer.errcode] += 1
            return answer.body()
        self.stats.sends[0] += 1
        return accepted

    def _send(self, token: str | None, body: bytes) -> bytes:
        state, now = self.authorised(token)
        self.arrivals.record(state.account.appid, now)
        message = json_object(body)
        if self.faults.errcode_table:
            self.injected_errcode()
        touser = message.get("touser")
        template_id = message.get("template_id")
        data = message.get("data")
        if type(template_id) is not str or not template_id:
            raise Answer(INVALID_TEMPLATE_ID)
        if type(touser) is not str or not touser:
            raise Answer(INVALID_OPENID)
        if type(data) is not dict:
            raise Answer(DATA_FORMAT_ERROR)
        client_msg_id = message.get("client_msg_id")
        if client_msg_id is not None and type(client_msg_id) is not str:
            raise Answer(DATA_FORMAT_ERROR)
        if template_id.startswith(BAD_TEMPLATE) or template_id in state.templates.deleted:
            raise Answer(INVALID_TEMPLATE_ID)
        test_openid = touser.startswith(_TEST_OPENIDS)
        if test_openid:
            refuse_test_openid(touser)
        _check_data(data, self._valid_pairs)
        if client_msg_id:
            seen = state.recent.get((touser, client_msg_id))
            if seen is not None and now - seen[1] < DEDUPE_WINDOW_S:
                self.stats.duplicates_absorbed += 1
                if self.faults.duplicate_answer == DUPLICATE_40241:
                    raise Answer(DUPLICATE_MESSAGE)
                return sent_body(seen[0])
        status = _test_openid_status(state, touser) if test_openid else STATUS_SUCCESS
        return self._accept(state, now, touser, template_id, client_msg_id, status, body)

    def injected_errcode(self) -> None:
        errcode = self.dice.errcode(self.faults)
        if errcode is not None:
            self.stats.faults[errcode_fault_name(errcode)] += 1
            raise Answer(errcode)

    def _accept(
        self,
        state: AccountState,
        now: float,
        touser: str,
        template_id: str,
        client_msg_id: str | None,
        status: str,
        body: bytes,
    ) -> bytes:
        faults = self.faults
        if state.sends_today.full(now, faults.daily_quota):
            raise Answer(DAILY_QUOTA)
        if state.sends_this_minute.full(now, faults.minute_limit):
            raise Answer(MINUTE_QUOTA)
        state.sends_today.count += 1
        state.sends_this_minute.count += 1
        self._msgids += 1
        msgid = self._msgids
        account = state.account
        self.inbox.append(
            Received(account.appid, touser, template_id, client_msg_id, msgid, body, now, status)
        )
        if client_msg_id:
            self._remember(state, now, (touser, client_msg_id), msgid)
        if self._report is not None and account.callback_url is not None:
            # One unverified report: MsgID 0 when the send carried a client_msg_id.
            reported = 0 if client_msg_id and faults.report_zero_msgid else msgid
            self._report(Report(account, touser, reported, status, int(now)))
        return sent_body(msgid)

    def _remember(self, state: AccountState, now: float, key: tuple[str, str], msgid: int) -> None:
        recent = state.recent
        recent.pop(key, None)  # re-inserted at the end, so the dict stays oldest-first
        recent[key] = (msgid, now)
        self._sends_until_prune -= 1
        if self._sends_until_prune <= 0:
            self._sends_until_prune = 4096
            state.forget_old_sends(now)

    # -- template management (§3) -------------------------------------------------------

    def set_industry(self, token: str | None, body: bytes) -> bytes:
        return self._manage(token, lambda s, now: s.set_industry(json_object(body), now))

    def get_industry(self, token: str | None, _body: bytes = b"") -> bytes:
        return self._manage(token, lambda s, _now: s.get_industry())

    def add_template(self, token: str | None, body: bytes) -> bytes:
        return self._manage(
            token, lambda s, _now: {"template_id": s.add(json_object(body))}, with_ok=True
        )

    def all_templates(self, token: str | None, _body: bytes = b"") -> bytes:
        return self._manage(token, lambda s, _now: {"template_list": s.all_templates()})

    def delete_template(self, token: str | None, body: bytes) -> bytes:
        return self._manage(token, lambda s, _now: s.delete(json_object(body)))

    def _manage(
        self,
        token: str | None,
        act: Callable[[TemplateLibrary, float], dict[str, Any] | None],
        *,
        with_ok: bool = False,
    ) -> bytes:
        try:
            state, now = self.authorised(token)
            result = act(state.templates, now)
        except Answer as answer:
            return answer.body()
        if result is None:
            return OK_BODY
        return orjson.dumps({"errcode": 0, "errmsg": "ok", **result} if with_ok else result)
