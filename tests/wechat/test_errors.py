"""The error catalogue against docs/wechat-protocol.md §6 and the protocol review's list (b),
and the exception hierarchy."""

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
    errcode_label,
    error_for,
    is_duplicate_accept,
    is_per_recipient,
    is_per_user_quota,
    is_token_superseded,
    lookup,
    retry_after_s,
    revokes_grant,
)

C = Category

# wechat-api.md §6, copied (the doc is not in the repository): code -> the category a
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
    40241: (C.OK, "The message is duplicate in 60 seconds"),  # DESIGN.md: treat it as sent
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

# The protocol review's list (b) and the subscribe work (issues 12-13): code -> category
# and errmsg (None where the text was not captured or is ours).
LIST_B: dict[int, tuple[Category, str | None]] = {
    40246: (C.REQUEST, "keyword name invalid"),
    40250: (C.REQUEST, None),
    40251: (C.QUOTA, None),
    40252: (C.TRANSIENT, None),
    43003: (C.CONFIG, "require https"),
    43108: (C.TRANSIENT, None),
    45012: (C.REQUEST, "template size out of limit"),
    45013: (C.REQUEST, "too many template args"),
    45014: (C.REQUEST, "template message size out of limit"),
    45026: (C.CONFIG, "template num exceeds limit"),
    45027: (C.CONFIG, "template conflict with industry"),
    45051: (C.REQUEST, "template msg use invalid link"),
    45082: (C.REQUEST, "need icp license for the url domain"),
    45103: (C.CONFIG, "This API has been unsupported"),
    47002: (C.REQUEST, None),
    48011: (C.REQUEST, "disabled template id"),
    61024: (C.CONFIG, None),
    200011: (C.CONFIG, None),
    200012: (C.CONFIG, None),
    200013: (C.REQUEST, None),
    200014: (C.REQUEST, "missing parameter tid"),  # seen in a community thread
    200016: (C.REQUEST, None),
    200017: (C.REQUEST, None),
    200018: (C.REQUEST, None),
    200019: (C.REQUEST, None),
    200020: (C.REQUEST, None),
    200021: (C.REQUEST, None),
}
ROWS = SECTION_6 | LIST_B

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


def test_catalogue_has_exactly_the_codes_of_section_6_and_list_b() -> None:
    assert set(CATALOGUE) == set(ROWS)


@pytest.mark.parametrize(("code", "category"), [(c, cat) for c, (cat, _) in ROWS.items()])
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
    ("code", "observed"), [(c, msg) for c, (_, msg) in ROWS.items() if msg is not None]
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


@pytest.mark.parametrize("code", [43117, 43108, 45047])
def test_errors_about_one_recipient_are_marked_so_the_breaker_ignores_them(code: int) -> None:
    assert is_per_recipient(code)
    assert error_for(code, CATALOGUE[code].errmsg).per_recipient


@pytest.mark.parametrize("code", [-1, 45011, 45009, 40001, 43101, 77777, None])
def test_errors_about_the_account_or_wechat_are_not_per_recipient(code: int | None) -> None:
    assert not is_per_recipient(code)


def test_only_the_per_recipient_quota_is_a_per_user_quota() -> None:
    assert is_per_user_quota(45047)
    assert not is_per_user_quota(43117)  # per recipient, but TRANSIENT
    assert not is_per_user_quota(45009)


def test_43101_revokes_a_subscribe_grant_and_no_other_code_does() -> None:
    assert [code for code in CATALOGUE if revokes_grant(code)] == [43101]
    assert not revokes_grant(None)


def test_only_40001_says_the_token_was_superseded() -> None:
    assert is_token_superseded(40001)
    assert not any(is_token_superseded(code) for code in (40014, 42001, 41001, None))


@pytest.mark.parametrize(
    "code", [40166, 40241, 40249, 40250, 40251, 40252, 43108, 43116, 43117, 45103]
)
def test_rows_resting_on_one_source_are_marked_unverified_with_their_source(code: int) -> None:
    info = CATALOGUE[code]
    assert not info.verified
    assert info.source


def test_every_row_beyond_section_6_names_its_source() -> None:
    assert all(CATALOGUE[code].source for code in LIST_B)


def test_40252_content_under_review_waits_long() -> None:
    assert retry_after_s(40252) >= 1800


def test_errcode_label_is_the_code_for_catalogue_codes_and_other_otherwise() -> None:
    assert errcode_label(45009) == "45009"
    assert errcode_label(200018) == "200018"
    assert errcode_label(77777) == "other"
    assert errcode_label(None) == "none"
    assert errcode_label(None, fallback="transport") == "transport"


def test_transport_error_tells_whether_the_request_could_have_reached_wechat() -> None:
    assert TransportError("read timed out").request_sent is None
    assert TransportError("cannot connect", request_sent=False).request_sent is False
    assert TransportError("read timed out", request_sent=True).request_sent is True
