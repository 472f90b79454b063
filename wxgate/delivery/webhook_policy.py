"""What a webhook post's answer means, and when to try again: pure functions.

Any 2xx is delivered. Anything else (another status, a timeout, a refused
connection) is tried again after a delay that doubles from `backoff_base_s` up to
`backoff_cap_s`, for `retry_for_s` after the event was written; the attempt that
would go past that makes the event dead (kept, and replayable).
"""

from __future__ import annotations

from dataclasses import dataclass

from wxgate.backends.webhook_outbox import HookOutcome
from wxgate.config import WebhookSettings


def retry_delay(attempts: int, settings: WebhookSettings) -> float:
    """The wait after the `attempts`-th failed attempt (1 for the first)."""
    exponent = min(max(attempts - 1, 0), 32)  # 2**32 * any base is past any cap
    return float(min(settings.backoff_cap_s, settings.backoff_base_s * 2**exponent))


@dataclass(frozen=True, slots=True)
class HookDecision:
    outcome: HookOutcome
    next_attempt_at: float | None = None


def after_failure(
    attempts: int, written_at: float, now: float, settings: WebhookSettings
) -> HookDecision:
    """After the `attempts`-th failed attempt at `now` of an event written at `written_at`."""
    retry_at = now + retry_delay(attempts, settings)
    if retry_at > written_at + settings.retry_for_s:
        return HookDecision(HookOutcome.DEAD)
    return HookDecision(HookOutcome.RETRY, retry_at)


def answer_label(status: int) -> str:
    """A receiver's HTTP status as the attempts metric's bounded `outcome` label."""
    if 200 <= status < 300:
        return "delivered"
    if 300 <= status < 400:
        return "redirect"  # not followed: a receiver must answer at the URL it gave
    return "http_4xx" if status < 500 else "http_5xx"


def delivered(status: int) -> bool:
    return 200 <= status < 300
