"""Delivery policy: what the worker does with one WeChat answer, and when it tries again.

Pure functions of (answer, attempts so far, settings, time, randomness): no I/O, no
clock of their own. The worker performs what `decide` answers. Answers are mapped by
the catalogue's Category through one table; raw errcodes stay in wxgate/wechat/errors.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from wxgate.config import DeliverySettings
from wxgate.wechat.client import SendOk, SendResult
from wxgate.wechat.errors import (
    Category,
    TransportError,
    WeChatError,
    acted_on_as,
    is_per_user_quota,
)

BEIJING_UTC_OFFSET_S = 8 * 3600  # China Standard Time, no daylight saving
DAY_S = 24 * 3600

CONFIG_ACTION = "fix the app's config, then replay its dead letters"

# 2**64 seconds is beyond any cap; bounding the exponent keeps the float finite.
_MAX_BACKOFF_EXPONENT = 64


class Action(StrEnum):
    """What the worker does with a message after one send."""

    SENT = "sent"  # settle sent (msgid None for a duplicate WeChat already had)
    RETRY = (
        "retry"  # back to the queue until next_attempt_at; `counted` says if it spent an attempt
    )
    FAILED = "failed"  # permanent for this message
    DEAD = "dead"  # retries exhausted
    QUOTA_PAUSE = "quota_pause"  # release uncounted and pause the app until next_attempt_at
    CONFIG = "config"  # dead, and pause the app until an operator resumes it
    UNKNOWN = "unknown"  # sent without an answer and not safe to resend: settle unknown


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    msgid: int | None = None
    next_attempt_at: float | None = None  # RETRY and QUOTA_PAUSE (the pause ends then too)
    counted: bool = True  # RETRY only: False releases the message without spending an attempt
    note: str = ""


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: a uniform wait in [0, min(cap, base * 2**attempt)]."""
    exponent = min(max(attempt, 0), _MAX_BACKOFF_EXPONENT)
    return rng.uniform(0.0, min(cap, base * 2.0**exponent))


def next_quota_reset(now: float) -> float:
    """The next 00:00 in Beijing time after `now` (epoch seconds), when daily quotas reset."""
    beijing_day = math.floor((now + BEIJING_UTC_OFFSET_S) / DAY_S)
    return (beijing_day + 1) * DAY_S - BEIJING_UTC_OFFSET_S


def attempts_exhausted(attempts: int, settings: DeliverySettings) -> bool:
    """True when a leased message has no attempt left (lease expiries spend attempts too)."""
    return attempts >= settings.max_attempts


@dataclass(frozen=True, slots=True)
class _Context:
    attempts_before: int
    settings: DeliverySettings
    now: float
    rng: random.Random


def _retry_or_dead(err: WeChatError, ctx: _Context) -> Decision:
    attempt = ctx.attempts_before + 1
    if attempt >= ctx.settings.max_attempts:
        return Decision(Action.DEAD, note=f"gave up after {attempt} attempts")
    s = ctx.settings
    delay = backoff_delay(ctx.attempts_before, s.backoff_base_s, s.backoff_cap_s, ctx.rng)
    delay = max(delay, err.retry_after_s)
    return Decision(Action.RETRY, next_attempt_at=ctx.now + delay, note=f"attempt {attempt}")


def _quota(err: WeChatError, ctx: _Context) -> Decision:
    reset = next_quota_reset(ctx.now)
    if is_per_user_quota(err.errcode):
        return Decision(
            Action.RETRY, next_attempt_at=reset, counted=False, note="this user's quota"
        )
    return Decision(Action.QUOTA_PAUSE, next_attempt_at=reset, note="daily quota used up")


def _failed(_err: WeChatError, _ctx: _Context) -> Decision:
    return Decision(Action.FAILED)


def _config(_err: WeChatError, _ctx: _Context) -> Decision:
    return Decision(Action.CONFIG, note=CONFIG_ACTION)


_HANDLERS: dict[Category, Callable[[WeChatError, _Context], Decision]] = {
    Category.TRANSIENT: _retry_or_dead,
    # The client already resent once with a fresh token and reports a second TOKEN answer
    # as CONFIG; a TOKEN answer that still gets here is retried later like a busy WeChat.
    Category.TOKEN: _retry_or_dead,
    Category.QUOTA: _quota,
    Category.RECIPIENT: _failed,
    Category.REQUEST: _failed,
    Category.CONFIG: _config,
}


UNKNOWN_NOTE = "no answer after the request went out; not resent (no client_msg_id)"


def decide(
    result: SendResult,
    attempts_before: int,
    settings: DeliverySettings,
    now: float,
    rng: random.Random,
    *,
    resend_safe: bool = True,
) -> Decision:
    """The action for one send's result; `attempts_before` excludes this send.

    `resend_safe` is False for kinds without a de-duplication id (subscribe kinds): a
    transport failure that may have reached WeChat is then UNKNOWN instead of a retry,
    since a resend could notify the user twice (docs/subscribe.md)."""
    if isinstance(result, SendOk):
        note = "duplicate: WeChat already had it" if result.duplicate else ""
        return Decision(Action.SENT, msgid=result.msgid, note=note)
    if not resend_safe and isinstance(result, TransportError) and result.request_sent is not False:
        return Decision(Action.UNKNOWN, note=UNKNOWN_NOTE)
    handler = _HANDLERS[acted_on_as(result.category)]
    return handler(result, _Context(attempts_before, settings, now, rng))
