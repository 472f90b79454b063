"""What WeChat can answer, and what each answer means for a gateway.

This module owns the error catalogue (every code of docs/wechat-protocol.md §6 with its
observed English errmsg, its Chinese meaning and one category) and the one
exception hierarchy of the WeChat layer. Code elsewhere acts on categories;
no other module compares raw errcode numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    """What a caller should do with an answer (docs/design.md, "Classification")."""

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
    per_user: bool = False  # a QUOTA that belongs to one recipient, not the whole account
    note: str = ""

    def category_for(self, endpoint: Endpoint) -> Category:
        if endpoint is Endpoint.TOKEN_FETCH and self.on_token_fetch is not None:
            return self.on_token_fetch
        return self.category


# The signal for "this token is no longer good": TOKEN on a send, CONFIG on a fetch
# (there it means the AppSecret is wrong).
_C = Category
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
    ),
    ErrorInfo(
        40241,
        "The message is duplicate in 60 seconds",
        "60 秒内重复消息 / WeChat already has this message",
        _C.OK,
        note="WeChat already accepted it: settle as sent without a msgid, never retry",
    ),
    ErrorInfo(40243, "AppSecret is frozen", "AppSecret 已被冻结 / AppSecret frozen", _C.CONFIG),
    ErrorInfo(
        40249,
        "this template msg has been blocked for illegal content",
        "模板消息因违规内容被拦截 / blocked for illegal content",
        _C.REQUEST,
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
    ),
    ErrorInfo(
        43116,
        "This template_id is banned",
        "该模板因滥用被封禁 / template banned",
        _C.REQUEST,
        note="every send with this template fails the same way",
    ),
    ErrorInfo(
        43117,
        "Sending messages to this openid too frequently,please try later",
        "对该用户发送过于频繁 / too many messages to this user",
        _C.TRANSIENT,
        retry_after_s=600.0,
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
        45047,
        "out of response count limit",
        "客服接口下行条数超过上限 / customer-service reply limit for this user",
        _C.QUOTA,
        per_user=True,
        note="per user, and a customer-service code; not expected from template sends",
    ),
    ErrorInfo(46004, "user not exist", "不存在的用户 / no such user", _C.RECIPIENT),
    ErrorInfo(47001, "data format error", "解析 JSON/XML 内容错误 / malformed body", _C.REQUEST),
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
)

CATALOGUE: dict[int, ErrorInfo] = {entry.code: entry for entry in _ENTRIES}

OK = 0
SYSTEM_BUSY = -1


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
    return info.per_user if info else False


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


class TransientError(WeChatError):
    """Worth retrying later: WeChat was busy or a limit per minute was reached."""

    category = Category.TRANSIENT


class TransportError(TransientError):
    """No usable WeChat answer: timeout, reset, HTTP 5xx or a body that is not JSON."""

    def __init__(self, errmsg: str, *, endpoint: Endpoint = Endpoint.API) -> None:
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


def errcode_label(errcode: int | None, fallback: str = "none") -> str:
    """A bounded metric label for an errcode: catalogue codes as themselves, others
    as "other" (an errcode from WeChat is not a bounded set; the catalogue is)."""
    if errcode is None:
        return fallback
    return str(errcode) if errcode in CATALOGUE else "other"
