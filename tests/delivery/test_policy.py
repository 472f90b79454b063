"""The delivery policy: backoff, the daily quota reset, and one decision per category."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime

import pytest

from wxgate.config import DeliverySettings
from wxgate.delivery.policy import (
    Action,
    attempts_exhausted,
    backoff_delay,
    decide,
    next_quota_reset,
)
from wxgate.wechat.client import SendOk
from wxgate.wechat.errors import (
    Endpoint,
    TokenRejectedTwiceError,
    TransportError,
    error_for,
)

NOW = 1_700_000_000.0
SETTINGS = DeliverySettings(max_attempts=5, backoff_base_s=1.0, backoff_cap_s=300.0)


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# -- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 8, 20])
def test_backoff_stays_within_zero_and_the_capped_exponential(attempt: int) -> None:
    rng = random.Random(7)
    bound = min(300.0, 1.0 * 2**attempt)
    delays = [backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(2000)]
    assert min(delays) >= 0.0
    assert max(delays) <= bound


def test_backoff_is_full_jitter_spread_over_the_whole_range() -> None:
    rng = random.Random(11)
    delays = [backoff_delay(4, 1.0, 300.0, rng) for _ in range(5000)]  # bound 16 s
    assert min(delays) < 0.5
    assert max(delays) > 15.5
    assert statistics.mean(delays) == pytest.approx(8.0, rel=0.05)


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(n, 0.5, 60.0, random.Random(3)) for n in range(6)]
    again = [backoff_delay(n, 0.5, 60.0, random.Random(3)) for n in range(6)]
    assert first == again


def test_backoff_of_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    delay = backoff_delay(10_000, 1.0, 300.0, random.Random(1))
    assert 0.0 <= delay <= 300.0


# -- the daily quota reset ---------------------------------------------------------------------


def test_quota_resets_at_the_next_midnight_in_beijing() -> None:
    # 2024-03-01 10:00 UTC is 18:00 in Beijing; the reset is 2024-03-02 00:00 +08:00.
    assert next_quota_reset(_utc(2024, 3, 1, 10, 0)) == _utc(2024, 3, 1, 16, 0)


def test_one_second_before_beijing_midnight_the_reset_is_one_second_away() -> None:
    assert next_quota_reset(_utc(2024, 3, 1, 15, 59, 59)) == _utc(2024, 3, 1, 16, 0)


def test_at_beijing_midnight_exactly_the_reset_is_the_next_day() -> None:
    assert next_quota_reset(_utc(2024, 3, 1, 16, 0)) == _utc(2024, 3, 2, 16, 0)


def test_just_after_utc_midnight_beijing_is_already_past_its_own_midnight() -> None:
    # 00:30 UTC is 08:30 in Beijing: the reset is that day's 16:00 UTC, not the previous one.
    assert next_quota_reset(_utc(2024, 3, 2, 0, 30)) == _utc(2024, 3, 2, 16, 0)


# -- decide() ------------------------------------------------------------------------------------


def _decide(result: object, attempts_before: int = 0) -> object:
    return decide(result, attempts_before, SETTINGS, NOW, random.Random(5))  # type: ignore[arg-type]


def test_ok_is_sent_with_its_msgid() -> None:
    decision = _decide(SendOk(2**62 + 1))
    assert decision.action is Action.SENT
    assert decision.msgid == 2**62 + 1


def test_duplicate_40241_is_sent_without_a_msgid() -> None:
    decision = _decide(SendOk(None, duplicate=True))
    assert decision.action is Action.SENT
    assert decision.msgid is None


def test_transient_is_retried_on_the_backoff_schedule_and_counted() -> None:
    decision = _decide(error_for(-1, "system error"), attempts_before=2)
    assert decision.action is Action.RETRY
    assert decision.counted
    assert NOW <= decision.next_attempt_at <= NOW + 4.0  # min(cap, 1 * 2**2)


def test_transport_failure_is_retried_like_transient() -> None:
    decision = _decide(TransportError("POST /cgi-bin/message/template/send: HTTP 502"))
    assert decision.action is Action.RETRY


def test_minute_limit_45011_waits_at_least_a_minute() -> None:
    decision = _decide(error_for(45011, "api minute-quota reach limit"))
    assert decision.action is Action.RETRY
    assert decision.next_attempt_at >= NOW + 60.0


def test_too_frequent_for_this_user_43117_waits_long() -> None:
    decision = _decide(error_for(43117, "too frequently"))
    assert decision.next_attempt_at >= NOW + 600.0


def test_unknown_errcode_is_retried_like_transient() -> None:
    decision = _decide(error_for(99_999, "something new"))
    assert decision.action is Action.RETRY
    assert decision.counted


def test_transient_on_the_last_attempt_is_dead() -> None:
    decision = _decide(error_for(-1, "system error"), attempts_before=SETTINGS.max_attempts - 1)
    assert decision.action is Action.DEAD


def test_transient_before_the_last_attempt_is_still_a_retry() -> None:
    decision = _decide(error_for(-1, "system error"), attempts_before=SETTINGS.max_attempts - 2)
    assert decision.action is Action.RETRY


def test_daily_quota_pauses_the_app_until_the_reset_without_counting() -> None:
    decision = _decide(error_for(45009, "reach max api daily quota limit"), attempts_before=3)
    assert decision.action is Action.QUOTA_PAUSE
    assert decision.next_attempt_at == next_quota_reset(NOW)


def test_a_quota_of_one_user_retries_that_message_at_the_reset_without_pausing() -> None:
    decision = _decide(error_for(45047, "out of response count limit"))
    assert decision.action is Action.RETRY
    assert not decision.counted
    assert decision.next_attempt_at == next_quota_reset(NOW)


@pytest.mark.parametrize("errcode", [40003, 43004, 43019, 43101, 46004, 48002, 50005])
def test_recipient_errors_fail_the_message(errcode: int) -> None:
    assert _decide(error_for(errcode, "recipient")).action is Action.FAILED


@pytest.mark.parametrize("errcode", [40037, 47003, 40165, 45002, 40249])
def test_request_errors_fail_the_message(errcode: int) -> None:
    assert _decide(error_for(errcode, "request")).action is Action.FAILED


@pytest.mark.parametrize("errcode", [48001, 50002, 89503])
def test_config_errors_on_a_send_are_config(errcode: int) -> None:
    assert _decide(error_for(errcode, "config")).action is Action.CONFIG


def test_wrong_secret_on_a_token_fetch_is_config() -> None:
    error = error_for(40125, "invalid appsecret", Endpoint.TOKEN_FETCH)
    assert _decide(error).action is Action.CONFIG


def test_a_second_token_error_in_a_row_is_config() -> None:
    error = TokenRejectedTwiceError(40001, "invalid credential")
    assert _decide(error).action is Action.CONFIG


def test_a_stray_token_error_is_retried_not_failed() -> None:
    decision = _decide(error_for(42001, "access_token expired"))
    assert decision.action is Action.RETRY


def test_decide_reads_no_clock_of_its_own() -> None:
    error = error_for(-1, "system error")
    a = decide(error, 0, SETTINGS, 100.0, random.Random(9))
    b = decide(error, 0, SETTINGS, 100.0, random.Random(9))
    assert a == b


def test_attempts_exhausted_at_max_attempts() -> None:
    assert not attempts_exhausted(SETTINGS.max_attempts - 1, SETTINGS)
    assert attempts_exhausted(SETTINGS.max_attempts, SETTINGS)
