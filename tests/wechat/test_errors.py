"""The error catalogue against docs/wechat-protocol.md §6, and the exception hierarchy."""

from __future__ import annotations

import re

import pytest

from wxgate.wechat.errors import (
    CATALOGUE,
    Category,
    ConfigError,
    Endpoint,
    PermanentError,
    QuotaError,
    RecipientError,
    RequestError,
    TokenError,
    TokenRejectedTwiceError,
    TransientError,
    TransportError,
    UnknownError,
    WeChatError,
    acted_on_as,
    classify,
    error_for,
    is_duplicate_accept,
    lookup,
    retry_after_s,
)

C = Category

# docs/wechat-protocol.md §6, copied here: code -> the category a
# business API answer gets, and the English errmsg WeChat was seen returning (a regex
# where the observed text carries an IP or a key; None where none was captured).
SECTION_6: dict[int, tuple[Category, str | None]] = {
    -1: (C.TRANSIENT, "system error"),
    0: (C.OK, "ok"),
    40001: (C.TOKEN, "invalid credential, access_token is invalid or not latest"),
    40002: (C.CONFIG, "invalid grant_type"),
    40003: (C.RECIPIENT, "invalid openid"),
    40013: (C.CONFIG, "invalid appid"),
    40014: (C.TOKEN, "invalid access_token"),
    40033: (C.REQUEST, None),
    40036: (C.REQUEST, "invalid template_id size"),
    40037: (C.REQUEST, "invalid template_id"),
    40039: (C.REQUEST, "invalid url size"),
    40048: (C.REQUEST, "invalid url domain"),
    40125: (C.CONFIG, "invalid appsecret"),
    40164: (C.CONFIG, r"invalid ip.*not in whitelist"),
    40165: (C.REQUEST, "invalid weapp pagepath"),
    40166: (C.REQUEST, "invalid weapp appid"),
    40243: (C.CONFIG, None),
    40241: (C.OK, "The message is duplicate in 60 seconds"),  # docs/design.md, "Classification"
    40249: (C.REQUEST, "this template msg has been blocked for illegal content"),
    41001: (C.TOKEN, "access_token missing"),
    41002: (C.CONFIG, "appid missing"),
    41004: (C.CONFIG, "appsecret missing"),
    41028: (C.REQUEST, "invalid form id"),  # §6: not returned by OA sends; a bad request if so
    41030: (C.REQUEST, None),
    42001: (C.TOKEN, "access_token expired"),
    43002: (C.REQUEST, "require POST method"),
    43004: (C.RECIPIENT, "require subscribe"),
    43019: (C.RECIPIENT, None),
    43100: (C.CONFIG, "change template too frequently"),
    43101: (C.RECIPIENT, "user refuse to accept the msg"),
    43116: (C.REQUEST, "This template_id is banned"),
    43117: (C.TRANSIENT, "Sending messages to this openid too frequently,please try later"),
    44002: (C.REQUEST, "empty post data"),
    45002: (C.REQUEST, "content size out of limit"),
    45009: (C.QUOTA, "reach max api daily quota limit"),
    45011: (C.TRANSIENT, "api minute-quota reach limit, must slower, retry next minute"),
    45047: (C.QUOTA, "out of response count limit"),
    46004: (C.RECIPIENT, None),
    47001: (C.REQUEST, "data format error"),
    47003: (C.REQUEST, r"argument invalid!.*"),
    48001: (C.CONFIG, "api unauthorized"),
    48002: (C.RECIPIENT, None),
    48004: (C.CONFIG, "api forbidden for irregularities, view detail on mp.weixin.qq.com"),
    50001: (C.CONFIG, "user unauthorized"),
    50002: (C.CONFIG, "user limited"),
    50004: (C.CONFIG, "user not allow to use accesstoken, maybe for punishment"),
    50005: (C.RECIPIENT, None),
    61004: (C.CONFIG, "access clientip is not registered"),
    61007: (C.CONFIG, "api is unauthorized to component"),
    61023: (C.CONFIG, "refresh_token is invalid"),
    89501: (C.CONFIG, None),
    89503: (C.CONFIG, None),
    89506: (C.CONFIG, None),
    89507: (C.CONFIG, None),
}

CLASS_OF: dict[Category, type[WeChatError]] = {
    C.TRANSIENT: TransientError,
    C.UNKNOWN: UnknownError,
    C.TOKEN: TokenError,
    C.QUOTA: QuotaError,
    C.RECIPIENT: RecipientError,
    C.REQUEST: RequestError,
    C.CONFIG: ConfigError,
}
HAN = re.compile(r"[\u4e00-\u9fff]")
RID = " rid: 6486c0be-1a245810-70697600"


def test_catalogue_has_exactly_the_codes_of_section_6() -> None:
    assert set(CATALOGUE) == set(SECTION_6)


@pytest.mark.parametrize(("code", "category"), [(c, cat) for c, (cat, _) in SECTION_6.items()])
def test_code_is_classified_as_section_6_says(code: int, category: Category) -> None:
    assert classify(code) is category


def test_40001_is_a_token_error_on_an_api_call() -> None:
    assert classify(40001, Endpoint.API) is C.TOKEN


def test_40001_is_a_config_error_on_a_token_fetch() -> None:
    assert classify(40001, Endpoint.TOKEN_FETCH) is C.CONFIG


@pytest.mark.parametrize("code", [40125, 40013, 40164, 61004, 40243, 89503])
def test_credential_and_ip_codes_on_a_token_fetch_are_config(code: int) -> None:
    assert classify(code, Endpoint.TOKEN_FETCH) is C.CONFIG


def test_40241_duplicate_counts_as_accepted() -> None:
    assert classify(40241) is C.OK
    assert is_duplicate_accept(40241)
    assert not is_duplicate_accept(0)


@pytest.mark.parametrize("code", [12345, 40000, 99999, -2])
def test_code_not_in_the_catalogue_is_unknown_and_acted_on_as_transient(code: int) -> None:
    assert lookup(code) is None
    assert classify(code) is C.UNKNOWN
    assert acted_on_as(classify(code)) is C.TRANSIENT


@pytest.mark.parametrize("category", [c for c in Category if c is not C.UNKNOWN])
def test_known_categories_are_acted_on_as_themselves(category: Category) -> None:
    assert acted_on_as(category) is category


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_entry_has_a_chinese_meaning(code: int) -> None:
    assert HAN.search(CATALOGUE[code].meaning)


@pytest.mark.parametrize(
    ("code", "observed"), [(c, msg) for c, (_, msg) in SECTION_6.items() if msg is not None]
)
def test_errmsg_is_the_text_wechat_was_seen_returning(code: int, observed: str) -> None:
    errmsg = CATALOGUE[code].errmsg
    assert errmsg == observed or re.fullmatch(observed, errmsg)


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_entry_has_an_errmsg_for_the_sandbox_to_answer(code: int) -> None:
    assert CATALOGUE[code].errmsg.strip()


@pytest.mark.parametrize("code", [c for c in CATALOGUE if classify(c) is not C.OK])
def test_error_for_returns_the_exception_of_the_category(code: int) -> None:
    exc = error_for(code, CATALOGUE[code].errmsg + RID)
    assert type(exc) is CLASS_OF[classify(code)]
    assert exc.category is classify(code)
    assert exc.errcode == code


def test_error_for_keeps_errmsg_with_its_rid_suffix_exactly() -> None:
    errmsg = "invalid openid" + RID
    exc = error_for(40003, errmsg)
    assert exc.errmsg == errmsg
    assert errmsg in str(exc)
    assert "40003" in str(exc)


def test_error_for_a_token_fetch_uses_the_token_fetch_meaning() -> None:
    exc = error_for(40001, "invalid credential" + RID, Endpoint.TOKEN_FETCH)
    assert isinstance(exc, ConfigError)
    assert exc.endpoint is Endpoint.TOKEN_FETCH


def test_error_for_an_unknown_code_is_an_unknown_error_retried_as_transient() -> None:
    exc = error_for(77777, "something new" + RID)
    assert isinstance(exc, UnknownError)
    assert isinstance(exc, TransientError)
    assert exc.category is C.UNKNOWN
    assert exc.errcode == 77777


@pytest.mark.parametrize("code", [0, 40241])
def test_error_for_refuses_an_answer_that_is_not_an_error(code: int) -> None:
    with pytest.raises(ValueError, match=str(code)):
        error_for(code, "ok")


@pytest.mark.parametrize(
    ("specific", "general"),
    [
        (TransientError, WeChatError),
        (TokenError, WeChatError),
        (QuotaError, WeChatError),
        (PermanentError, WeChatError),
        (TransportError, TransientError),
        (UnknownError, TransientError),
        (RecipientError, PermanentError),
        (RequestError, PermanentError),
        (ConfigError, PermanentError),
        (TokenRejectedTwiceError, ConfigError),
    ],
)
def test_exceptions_go_from_general_to_specific(
    specific: type[WeChatError], general: type[WeChatError]
) -> None:
    assert issubclass(specific, general)


@pytest.mark.parametrize("cls", [TokenError, QuotaError, TransientError])
def test_retryable_errors_are_not_permanent(cls: type[WeChatError]) -> None:
    assert not issubclass(cls, PermanentError)


def test_transport_error_has_no_errcode_and_is_transient() -> None:
    exc = TransportError("timeout after 5.0 s")
    assert exc.errcode is None
    assert exc.category is C.TRANSIENT
    assert "no errcode" in str(exc)


def test_token_rejected_twice_is_config_with_the_second_answers_code() -> None:
    exc = TokenRejectedTwiceError(40001, "invalid credential" + RID, C.CONFIG)
    assert exc.category is C.CONFIG
    assert exc.errcode == 40001


def test_45011_waits_for_the_next_minute() -> None:
    assert retry_after_s(45011) >= 60
    assert error_for(45011, "api minute-quota reach limit").retry_after_s >= 60


def test_codes_without_a_minimum_wait_leave_it_to_the_backoff() -> None:
    assert retry_after_s(-1) == 0
    assert retry_after_s(None) == 0
    assert retry_after_s(77777) == 0


def test_43117_backs_off_for_minutes_not_seconds() -> None:
    assert retry_after_s(43117) >= 60
