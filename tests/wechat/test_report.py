"""A delivery report's Status decided in the WeChat layer (docs/wechat-protocol.md §5.5)."""

from __future__ import annotations

import pytest

from wxgate.wechat.report import ReportOutcome, report_outcome


@pytest.mark.parametrize("status", ["success", " success ", "SUCCESS"])
def test_success_is_delivered(status: str) -> None:
    outcome = report_outcome(status)
    assert outcome is ReportOutcome.DELIVERED
    assert outcome.delivered and not outcome.blocks_recipient and not outcome.per_recipient


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("failed:user block", ReportOutcome.USER_BLOCK),
        ("failed: user block", ReportOutcome.USER_BLOCK),  # one C# SDK's spelling
        ("failed: system failed", ReportOutcome.SYSTEM_FAILED),
        ("failed:system failed", ReportOutcome.SYSTEM_FAILED),
        ("failed:freq limit", ReportOutcome.FREQ_LIMIT),  # observed in 2024
        ("Failed: Freq Limit", ReportOutcome.FREQ_LIMIT),
    ],
)
def test_each_failure_wechat_names_has_its_outcome_whatever_the_spacing(
    status: str, outcome: ReportOutcome
) -> None:
    assert report_outcome(status) is outcome
    assert not outcome.delivered


@pytest.mark.parametrize("status", ["failed:quota exceeded", "failed", "", "pending"])
def test_any_other_status_is_a_system_failure_not_a_delivery(status: str) -> None:
    assert report_outcome(status) is ReportOutcome.SYSTEM_FAILED


def test_only_a_user_block_is_a_reason_to_suppress_the_recipient() -> None:
    assert [o for o in ReportOutcome if o.blocks_recipient] == [ReportOutcome.USER_BLOCK]


def test_only_a_freq_limit_is_about_one_recipient_s_traffic() -> None:
    assert [o for o in ReportOutcome if o.per_recipient] == [ReportOutcome.FREQ_LIMIT]
