"""What a template message's delivery report says (TEMPLATESENDJOBFINISH's Status).

WeChat reports each template message's fate as a Status text (docs/wechat-protocol.md
§5.5): `success`, `failed:user block`, `failed: system failed` and, since 2024,
`failed:freq limit`, with the spacing varying between reports. This module turns the
text into a `ReportOutcome`, so that no other layer compares against "success".
"""

from __future__ import annotations

from enum import StrEnum

_SUCCESS = "success"
_FAILED = "failed"
# The reason after "failed", with spaces and case dropped -> its outcome.
_REASONS = {"userblock": "user_block", "freqlimit": "freq_limit", "systemfailed": "system_failed"}


class ReportOutcome(StrEnum):
    """A delivery report's verdict on one template message."""

    DELIVERED = "delivered"  # success
    # failed:user block: the user refused this account's messages; the suppression list
    # is what stops us sending to them again.
    USER_BLOCK = "user_block"
    # failed:freq limit: too many messages to this one user (observed 2024); about the
    # recipient, not the account (like 43117).
    FREQ_LIMIT = "freq_limit"
    # failed: system failed, and any failure WeChat names in words we do not know.
    SYSTEM_FAILED = "system_failed"

    @property
    def delivered(self) -> bool:
        return self is ReportOutcome.DELIVERED

    @property
    def blocks_recipient(self) -> bool:
        """The recipient refused the account: a reason to suppress them."""
        return self is ReportOutcome.USER_BLOCK

    @property
    def per_recipient(self) -> bool:
        """A failure about one recipient's traffic, saying nothing of WeChat's health."""
        return self is ReportOutcome.FREQ_LIMIT


def report_outcome(status: str) -> ReportOutcome:
    """The outcome of a TEMPLATESENDJOBFINISH Status, whatever its spacing or case; any
    status other than success is a failure."""
    text = status.strip().lower()
    if text == _SUCCESS:
        return ReportOutcome.DELIVERED
    reason = text.removeprefix(_FAILED).lstrip(":").replace(" ", "")
    if text.startswith(_FAILED) and reason in _REASONS:
        return ReportOutcome(_REASONS[reason])
    return ReportOutcome.SYSTEM_FAILED
