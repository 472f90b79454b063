"""What WeChat can answer, and what each answer means for a gateway.

This module owns the error catalogue (every code of docs/wechat-protocol.md §6 and
of the protocol review's list (b), with its observed English errmsg, its Chinese
meaning, one category and where the row comes from) and the one exception hierarchy
of the WeChat layer. Code elsewhere acts on categories and on the questions asked
here (`is_per_recipient`, `revokes_grant`, ...); no other module compares raw errcodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    """What a caller should do with an answer (DESIGN.md, "the classification")."""

    OK = "OK"
    TOKEN = "TOKEN"
    TRANSIENT = "TRANSIENT"
    QUOTA = "QUOTA"
    RECIPIENT = "RECIPIENT"
    REQUEST = "REQUEST"
    CONFIG = "CONFIG"
    UNKNOWN = "UNKNOWN"


class Endpoint(StrEnum):
    """Where an answer came from; a few codes mean different things on each."""

    TOKEN_FETCH = "token_fetch"  # /cgi-bin/token and /cgi-bin/stable_token
    API = "api"  # every business API called with ?access_token=


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One catalogue entry."""

    code: int
    errmsg: str  # the English text WeChat returns ("" where none was captured)
    meaning: str  # the official Chinese description, with an English gloss
    category: Category  # on a business API call
    on_token_fetch: Category | None = None  # when the token endpoints mean something else
    retry_after_s: float = 0.0  # the least a retry should wait (45011: the next minute)
    # About one recipient, not the account: kept out of the app's circuit breaker and
    # pauses (43117, 43108, 45047).
    per_recipient: bool = False
    # For subscribe kinds the user's grant for this template is gone (none was given, or
    # a one-time grant was used): a grant ledger clears it (43101).
    revokes_grant: bool = False
    # False where the row rests on one source or its meaning is inferred (protocol review
    # list (b)); such rows are the first to check against a real account.
    verified: bool = True
    source: str = ""  # where the row comes from, beyond docs/wechat-protocol.md §6
    note: str = ""

    def category_for(self, endpoint: Endpoint) -> Category:
        if endpoint is Endpoint.TOKEN_FETCH and self.on_token_fetch is not None:
            return self.on_token_fetch
        return self.category


_C = Category
# WxJava's WxMpErrorMsgEnum, which copies WeChat's global return-code table.
_GLOBAL_TABLE = "global return-code table (WxJava WxMpErrorMsgEnum)"
# The subscribe template library (wxaapi/newtmpl/*): its errcode table in the
# mini-program doc of addTemplate, and WxJava's WxMaErrorMsgEnum.
_NEWTMPL = "subscribeMessage.addTemplate doc; WxJava WxMaErrorMsgEnum"
_REVIEW = "docs/wechat-protocol.md §6 (protocol review list (b))"

_NEWTMPL_ENTRIES: tuple[ErrorInfo, ...] = tuple(
    ErrorInfo(code, errmsg, meaning, category, source=_NEWTMPL)
    for code, errmsg, meaning, category in (
        (
            200011,
            "This account has been banned and cannot be operated",
            "此账号已被封禁，无法操作 / the account is banned",
            _C.CONFIG,
        ),
        (
            200012,
            "The number of private templates has reached the maximum limit",
            "个人模板数已达上限 / the account holds its maximum of subscribe templates",
            _C.CONFIG,
        ),
        (
            200013,
            "This template has been banned and cannot be selected",
            "此模版已被封禁，无法选用 / this library template is banned",
            _C.REQUEST,
        ),
        (200014, "missing parameter tid", "模版 tid 参数错误 / bad or missing tid", _C.REQUEST),
        (200016, "invalid start", "start 参数错误 / bad start", _C.REQUEST),
        (200017, "invalid limit", "limit 参数错误 / bad limit (at most 30)", _C.REQUEST),
        (200018, "missing category ids", "类目 ids 缺失 / ids missing", _C.REQUEST),
        (200019, "invalid category ids", "类目 ids 不合法 / bad ids", _C.REQUEST),
        (200020, "invalid kidList", "关键词列表 kidList 参数错误 / bad kidList", _C.REQUEST),
        (
            200021,
            "invalid sceneDesc",
            "场景描述 sceneDesc 参数错误 / bad sceneDesc (at most 15 characters)",
            _C.REQUEST,
        ),
    )
)

_ENTRIES: tuple[ErrorInfo, ...] = (
    ErrorInfo(-1, "system error", "系统繁忙，稍候再试 / system busy", _C.TRANSIENT),
    ErrorInfo(0, "ok", "请求成功 / success", _C.OK),
    ErrorInfo(
        40001,
        "invalid credential, access_token is invalid or not latest",
        "获取 access_token 时 AppSecret 错误，或者 access_token 无效 / bad secret or token",
        _C.TOKEN,
        on_token_fetch=_C.CONFIG,
    ),
    ErrorInfo(
        40002,
        "invalid grant_type",
        "不合法的凭证类型 / grant_type must be client_credential",
        _C.CONFIG,
    ),
    ErrorInfo(
        40003,
        "invalid openid",
        "不合法的 OpenID（未关注或属于其他公众号）/ invalid openid",
        _C.RECIPIENT,
        note="if every send fails with it, the openids belong to another app (CONFIG)",
    ),
    ErrorInfo(40013, "invalid appid", "不合法的 AppID / invalid appid", _C.CONFIG),
    ErrorInfo(40014, "invalid access_token", "不合法的 access_token / invalid token", _C.TOKEN),
    ErrorInfo(
        40033,
        "invalid charset. please check your request, if include \\uxxxx will create fail!",
        "不合法的请求字符，不能包含 \\uxxxx 格式的字符 / illegal characters in the request",
        _C.REQUEST,
    ),
    ErrorInfo(
        40036,
        "invalid template_id size",
        "不合法的 template_id 长度 / bad template_id length",
        _C.REQUEST,
    ),
    ErrorInfo(
        40037,
        "invalid template_id",
        "不合法的 template_id（已删除或属于其他公众号）/ unknown template_id",
        _C.REQUEST,
        note="if every send fails with it, the template belongs to another app (CONFIG)",
    ),
    ErrorInfo(40039, "invalid url size", "不合法的 URL 长度 / bad url length", _C.REQUEST),
    ErrorInfo(40048, "invalid url domain", "不合法的 URL 域名 / bad url domain", _C.REQUEST),
    ErrorInfo(40125, "invalid appsecret", "无效的 appsecret / invalid AppSecret", _C.CONFIG),
    ErrorInfo(
        40164,
        "invalid ip, not in whitelist",
        "调用接口的 IP 地址不在白名单中 / caller IP not whitelisted",
        _C.CONFIG,
    ),
    ErrorInfo(
        40165,
        "invalid weapp pagepath",
        "不合法的小程序页面路径 / invalid miniprogram.pagepath",
        _C.REQUEST,
    ),
    ErrorInfo(
        40166,
        "invalid weapp appid",
        "不合法的小程序 AppID（未关联）/ invalid or unlinked miniprogram.appid",
        _C.REQUEST,
        verified=False,
        source="WxJava open enum only",
    ),
    ErrorInfo(
        40241,
        "The message is duplicate in 60 seconds",
        "60 秒内重复消息 / WeChat already has this message",
        _C.OK,
        verified=False,
        source="one community report (Feb 2025)",
        note="WeChat already accepted it: settle as sent without a msgid, never retry",
    ),
    ErrorInfo(40243, "AppSecret is frozen", "AppSecret 已被冻结 / AppSecret frozen", _C.CONFIG),
    ErrorInfo(
        40249,
        "this template msg has been blocked for illegal content",
        "模板消息因违规内容被拦截 / blocked for illegal content",
        _C.REQUEST,
        verified=False,
        source="one community report (2023)",
    ),
    ErrorInfo(
        40246,
        "keyword name invalid",
        "关键词名称不合法（keyword_name_list 为空或含未知关键词）/ bad keyword_name_list",
        _C.REQUEST,
        source="https://developers.weixin.qq.com/doc/service/api/notify/template/api_addtemplate",
    ),
    ErrorInfo(
        40250,
        "content is not standard",
        "内容不规范（如空值）/ content breaks the rules, e.g. an empty value",
        _C.REQUEST,
        verified=False,
        source="a third-party copy of the global return-code table",
    ),
    ErrorInfo(
        40251,
        "reach max quota limit for violation",
        "因违规被降低的下发额度已用完 / quota lowered for violations is used up",
        _C.QUOTA,
        verified=False,
        source="a third-party copy of the global return-code table",
    ),
    ErrorInfo(
        40252,
        "content is under review",
        "内容审核中，请稍后再试 / content under review, try much later",
        _C.TRANSIENT,
        retry_after_s=3600.0,
        verified=False,
        source="a third-party copy of the global return-code table",
    ),
    ErrorInfo(
        41001,
        "access_token missing",
        "缺少 access_token 参数 / access_token missing",
        _C.TOKEN,
        note="a client bug if it repeats",
    ),
    ErrorInfo(41002, "appid missing", "缺少 appid 参数 / appid missing", _C.CONFIG),
    ErrorInfo(41004, "appsecret missing", "缺少 secret 参数 / secret missing", _C.CONFIG),
    ErrorInfo(
        41028,
        "invalid form id",
        "form_id 不正确或者过期 / bad form_id (retired mini-program template messages only)",
        _C.REQUEST,
        note="not returned by official-account template or subscribe sends",
    ),
    ErrorInfo(
        41030,
        "invalid page",
        "page 路径不正确 / page not in the released mini program",
        _C.REQUEST,
    ),
    ErrorInfo(42001, "access_token expired", "access_token 超时 / token expired", _C.TOKEN),
    ErrorInfo(43002, "require POST method", "需要 POST 请求 / POST required", _C.REQUEST),
    ErrorInfo(
        43003,
        "require https",
        "需要 HTTPS 请求 / plain HTTP used (check api_base)",
        _C.CONFIG,
        source="channels commErrCode; WxJava enums",
    ),
    ErrorInfo(
        43004, "require subscribe", "需要接收者关注 / recipient does not follow", _C.RECIPIENT
    ),
    ErrorInfo(
        43019,
        "require remove blacklist",
        "需要将接收者从黑名单中移除 / recipient is in the account's blacklist",
        _C.RECIPIENT,
    ),
    ErrorInfo(
        43100,
        "change template too frequently",
        "修改模板所属行业太频繁 / template or industry changed too often",
        _C.CONFIG,
    ),
    ErrorInfo(
        43101,
        "user refuse to accept the msg",
        "用户拒绝接受消息，如果用户之前曾经订阅过，则表示用户取消了订阅关系 / user refused",
        _C.RECIPIENT,
        revokes_grant=True,
        note="subscribe kinds: no grant for this template, or a one-time grant already used",
    ),
    ErrorInfo(
        43108,
        "concurrent calls to the same openid",
        "对同一 OpenID 的并发调用 / concurrent sends to the same user",
        _C.TRANSIENT,
        retry_after_s=5.0,
        per_recipient=True,
        verified=False,
        source=_REVIEW,
        note="subscribe sends; retry this message alone, a little later",
    ),
    ErrorInfo(
        43116,
        "This template_id is banned",
        "该模板因滥用被封禁 / template banned",
        _C.REQUEST,
        verified=False,
        source="one community report (2024)",
        note="every send with this template fails the same way",
    ),
    ErrorInfo(
        43117,
        "Sending messages to this openid too frequently,please try later",
        "对该用户发送过于频繁 / too many messages to this user",
        _C.TRANSIENT,
        retry_after_s=600.0,
        per_recipient=True,
        verified=False,
        source="one community report (2024)",
    ),
    ErrorInfo(44002, "empty post data", "POST 的数据包为空 / empty body", _C.REQUEST),
    ErrorInfo(
        45002, "content size out of limit", "消息内容超过限制 / content too long", _C.REQUEST
    ),
    ErrorInfo(
        45009,
        "reach max api daily quota limit",
        "接口调用超过（日）限制 / daily API quota reached",
        _C.QUOTA,
    ),
    ErrorInfo(
        45011,
        "api minute-quota reach limit, must slower, retry next minute",
        "API 调用太频繁，请稍候再试 / per-minute limit reached",
        _C.TRANSIENT,
        retry_after_s=60.0,
    ),
    ErrorInfo(
        45012,
        "template size out of limit",
        "模板大小超过限制 / template too large",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45013,
        "too many template args",
        "模板参数过多 / too many template arguments",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45014,
        "template message size out of limit",
        "模板消息大小超过限制 / template message too large",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45026,
        "template num exceeds limit",
        "模板数量超过上限（25 个）/ the account holds its maximum of templates",
        _C.CONFIG,
        source=_GLOBAL_TABLE + "; Template_Message_Interface.html",
    ),
    ErrorInfo(
        45027,
        "template conflict with industry",
        "模板与所选行业冲突 / template conflicts with the account's industry",
        _C.CONFIG,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45047,
        "out of response count limit",
        "客服接口下行条数超过上限 / customer-service reply limit for this user",
        _C.QUOTA,
        per_recipient=True,
        note="per user, and a customer-service code; not expected from template sends",
    ),
    ErrorInfo(
        45051,
        "template msg use invalid link",
        "模板消息使用了不合法的链接 / invalid link in a template message",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45082,
        "need icp license for the url domain",
        "链接域名需要 ICP 备案 / the url's domain needs an ICP licence",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        45103,
        "This API has been unsupported",
        "该接口不支持此账号类型 / API not supported: a token of the other account kind",
        _C.CONFIG,
        verified=False,
        source="WxJava enum; the meaning (wrong account kind's token) from " + _REVIEW,
        note="bizsend called with a mini program's token, or the reverse",
    ),
    ErrorInfo(46004, "user not exist", "不存在的用户 / no such user", _C.RECIPIENT),
    ErrorInfo(47001, "data format error", "解析 JSON/XML 内容错误 / malformed body", _C.REQUEST),
    ErrorInfo(
        47002,
        "data format error, do NOT use json unicode encode (\\uxxxx\\uxxxx), "
        "please use utf8 encoded text!",
        "JSON 中不能使用 \\uxxxx 转义，请用 UTF-8 文本 / \\u escapes in the JSON body",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(
        47003,
        "argument invalid!",
        "模板参数不准确，可能为空或者不满足规则 / a template value breaks its rule",
        _C.REQUEST,
    ),
    ErrorInfo(
        48001,
        "api unauthorized",
        "api 功能未授权，请确认公众号已获得该接口 / API not authorised for this account",
        _C.CONFIG,
        note="also a token of the other account kind (bizsend with a mini program's token)",
    ),
    ErrorInfo(
        48002,
        "api block",
        "粉丝拒收消息（粉丝在公众号选项中，关闭了“接收消息”）/ user turned messages off",
        _C.RECIPIENT,
    ),
    ErrorInfo(
        48004,
        "api forbidden for irregularities, view detail on mp.weixin.qq.com",
        "api 接口被封禁 / API banned for this account",
        _C.CONFIG,
    ),
    ErrorInfo(
        48011,
        "disabled template id",
        "模板已被停用 / the template is disabled",
        _C.REQUEST,
        source=_GLOBAL_TABLE,
    ),
    ErrorInfo(50001, "user unauthorized", "用户未授权该 api / API not authorised", _C.CONFIG),
    ErrorInfo(
        50002,
        "user limited",
        "用户受限，可能是违规后接口被封禁（此处的用户指公众号）/ the account is limited",
        _C.CONFIG,
    ),
    ErrorInfo(
        50004,
        "user not allow to use accesstoken, maybe for punishment",
        "禁止使用 token 接口 / the account may not use tokens",
        _C.CONFIG,
    ),
    ErrorInfo(50005, "user unsubscribed", "用户未关注公众号 / user does not follow", _C.RECIPIENT),
    ErrorInfo(
        61004,
        "access clientip is not registered",
        "当前 IP 未登记到白名单 / caller IP not registered",
        _C.CONFIG,
    ),
    ErrorInfo(
        61007,
        "api is unauthorized to component",
        "接口未授权给第三方平台 / API not authorised to the third-party platform",
        _C.CONFIG,
    ),
    ErrorInfo(
        61023,
        "refresh_token is invalid",
        "refresh_token 无效 / authorizer refresh token invalid (third-party platforms)",
        _C.CONFIG,
    ),
    ErrorInfo(
        61024,
        "must use api(api_component_token) to get token for component acct",
        "第三方平台账号须用 api_component_token 获取 token / a component account's token",
        _C.CONFIG,
        source="WxJava open enum; the global return-code table",
    ),
    ErrorInfo(
        89501,
        "ip confirmation pending",
        "此 IP 正在等待管理员确认，请联系管理员 / IP confirmation pending",
        _C.CONFIG,
    ),
    ErrorInfo(
        89503,
        "this call needs the administrator's confirmation",
        "此次调用需要管理员确认，请耐心等候 / the account admin must confirm this caller",
        _C.CONFIG,
    ),
    ErrorInfo(
        89506,
        "ip refused by the administrator, retry after 24 hours",
        "该 IP 调用被管理员拒绝，24 小时内不可再调用 / IP refused for 24 h",
        _C.CONFIG,
    ),
    ErrorInfo(
        89507,
        "ip refused by the administrator, retry after 1 hour",
        "该 IP 调用被管理员拒绝，1 小时内不可再调用 / IP refused for 1 h",
        _C.CONFIG,
    ),
    *_NEWTMPL_ENTRIES,
)

CATALOGUE: dict[int, ErrorInfo] = {entry.code: entry for entry in _ENTRIES}

OK = 0
SYSTEM_BUSY = -1
_NOT_LATEST = 40001


def lookup(errcode: int) -> ErrorInfo | None:
    """The catalogue entry of a code, or None if WeChat answered something new."""
    return CATALOGUE.get(errcode)


def classify(errcode: int, endpoint: Endpoint = Endpoint.API) -> Category:
    """The category of an errcode; codes not in the catalogue are UNKNOWN."""
    info = CATALOGUE.get(errcode)
    if info is None:
        return Category.UNKNOWN
    return info.category_for(endpoint)


def acted_on_as(category: Category) -> Category:
    """UNKNOWN answers are retried like TRANSIENT ones; every other category stands."""
    return Category.TRANSIENT if category is Category.UNKNOWN else category


def is_duplicate_accept(errcode: int) -> bool:
    """40241: WeChat already holds this message, so it counts as sent without a msgid."""
    return errcode == 40241


def is_per_user_quota(errcode: int | None) -> bool:
    """A QUOTA answer about one recipient (45047): retry that message, don't pause the app."""
    info = CATALOGUE.get(errcode) if errcode is not None else None
    return info is not None and info.per_recipient and info.category is Category.QUOTA


def is_per_recipient(errcode: int | None) -> bool:
    """An answer about one recipient, not the account (43117, 43108, 45047): it says
    nothing of WeChat's health, so it stays out of the app's circuit breaker."""
    info = CATALOGUE.get(errcode) if errcode is not None else None
    return info.per_recipient if info else False


def revokes_grant(errcode: int | None) -> bool:
    """For subscribe kinds: the user holds no grant for this template any more (43101)."""
    info = CATALOGUE.get(errcode) if errcode is not None else None
    return info.revokes_grant if info else False


def is_token_superseded(errcode: int | None) -> bool:
    """40001 on an API call: the token is "not latest", a newer one was minted (by us,
    or by another system fetching for the same appid, docs/wechat-protocol.md §1.1)."""
    return errcode == _NOT_LATEST


def errcode_label(errcode: int | None, fallback: str = "none") -> str:
    """A bounded metric label for an errcode: catalogue codes as themselves, others "other"."""
    if errcode is None:
        return fallback
    return str(errcode) if errcode in CATALOGUE else "other"


def retry_after_s(errcode: int | None) -> float:
    """The least a retry of this answer should wait (0 when the backoff alone decides)."""
    info = CATALOGUE.get(errcode) if errcode is not None else None
    return info.retry_after_s if info else 0.0


# ---------------------------------------------------------------------------
# The exception hierarchy, general to specific. Every exception carries what
# WeChat said (errcode, errmsg with its " rid:" suffix kept) and a category.


class WeChatError(Exception):
    """Anything a WeChat call can end with other than success."""

    category: Category = Category.UNKNOWN

    def __init__(
        self,
        errcode: int | None,
        errmsg: str,
        category: Category | None = None,
        *,
        endpoint: Endpoint = Endpoint.API,
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.endpoint = endpoint
        if category is not None:
            self.category = category
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = "no errcode" if self.errcode is None else f"errcode {self.errcode}"
        return f"{code} ({self.category}): {self.errmsg}"

    @property
    def retry_after_s(self) -> float:
        return retry_after_s(self.errcode)

    @property
    def per_recipient(self) -> bool:
        return is_per_recipient(self.errcode)


class TransientError(WeChatError):
    """Worth retrying later: WeChat was busy or a limit per minute was reached."""

    category = Category.TRANSIENT


class TransportError(TransientError):
    """No usable WeChat answer: timeout, reset, HTTP 5xx or a body that is not JSON.

    `request_sent` says whether the request could have reached WeChat: False when it
    provably never left (connection refused, DNS, connect timeout), so resending cannot
    double-send; True when it was written (read timeout, reset after writing, an answer
    we cannot use), so the outcome is unknown; None when the failure does not tell.
    Kinds without `client_msg_id` (subscribe sends) may be resent blindly only on False.
    """

    def __init__(
        self, errmsg: str, *, endpoint: Endpoint = Endpoint.API, request_sent: bool | None = None
    ) -> None:
        self.request_sent = request_sent
        super().__init__(None, errmsg, endpoint=endpoint)


class UnknownError(TransientError):
    """An errcode the catalogue does not know; retried like a transient one."""

    category = Category.UNKNOWN


class TokenError(WeChatError):
    """The access_token was rejected: invalidate it, fetch a fresh one, resend once."""

    category = Category.TOKEN


class QuotaError(WeChatError):
    """A daily quota is used up: pause the app until it resets."""

    category = Category.QUOTA


class PermanentError(WeChatError):
    """Retrying the same request cannot help."""


class RecipientError(PermanentError):
    """This user cannot receive the message (unknown, unfollowed, refused, blocked)."""

    category = Category.RECIPIENT


class RequestError(PermanentError):
    """The request itself is wrong (template, data, url, miniprogram)."""

    category = Category.REQUEST


class ConfigError(PermanentError):
    """The account is misconfigured or barred; an operator must act."""

    category = Category.CONFIG


class TokenRejectedTwiceError(ConfigError):
    """A freshly fetched token was rejected too: someone else keeps rotating it, or the
    appid and secret do not belong together."""


_BY_CATEGORY: dict[Category, type[WeChatError]] = {
    Category.TRANSIENT: TransientError,
    Category.UNKNOWN: UnknownError,
    Category.TOKEN: TokenError,
    Category.QUOTA: QuotaError,
    Category.RECIPIENT: RecipientError,
    Category.REQUEST: RequestError,
    Category.CONFIG: ConfigError,
}


def error_for(errcode: int, errmsg: str, endpoint: Endpoint = Endpoint.API) -> WeChatError:
    """The exception for a non-zero errcode answered by `endpoint` (not raised here)."""
    category = classify(errcode, endpoint)
    if category is Category.OK:
        raise ValueError(f"errcode {errcode} is not an error")
    return _BY_CATEGORY[category](errcode, errmsg, category, endpoint=endpoint)


# ---------------------------------------------------------------------------
# Callback rejections: requests on our callback URL that we refuse to believe.
# Their own tree beside WeChatError, since no WeChat answer is involved. Each
# carries a short machine `reason` (a bounded set, fit for a metric label);
# messages never hold the token, the AES key or any decrypted plaintext.


class CallbackRejected(Exception):
    """A callback request the gateway refuses; `reason` says why in one word."""

    reason: str = "rejected"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(f"callback rejected ({self.reason}): {detail}")


class CallbackSignatureError(CallbackRejected):
    """`signature` or `msg_signature` does not match the shared callback token."""

    reason = "signature"


class CallbackDecryptError(CallbackRejected):
    """The AES envelope is absent where required, or is not one we can open."""

    reason = "decrypt"


class CallbackAppIdError(CallbackRejected):
    """The envelope opened but was sealed for another appid."""

    reason = "appid"


class CallbackMalformedError(CallbackRejected):
    """The XML is unsafe or unparsable, or a field is missing or garbled."""

    reason = "xml"


class UnparseableEvent(CallbackMalformedError):
    """A callback whose signature holds (and, in safe mode, whose envelope opened) but
    whose event cannot be read. WeChat did send it, so refusing it only makes WeChat
    retry and alarm: answer `success` and log it. `detail` names the field."""

    reason = "unparseable"
