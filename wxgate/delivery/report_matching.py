"""Applying a delivery report whose MsgID finds no message, by its recipient instead.

One community report (2023, unverified, protocol review row 1) says that when
client_msg_id is set, which wxgate always does, TEMPLATESENDJOBFINISH may carry
MsgID 0. Such a report, or one whose msgid no stored message has, is matched by
(app, openid, status sent, sent within MATCH_WINDOW_S): when exactly one message
fits, the report is applied to it; otherwise it is left unmatched and counted (a
guess between two messages would settle the wrong one half of the time).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wxgate.backends.base import Backend, Report, ReportApplied, Status

MATCH_WINDOW_S = 600.0  # WeChat's report follows a send within seconds; 10 minutes is ample


class MatchedBy(StrEnum):
    MSGID = "msgid"  # the report's own msgid found its message
    RECIPIENT = "recipient"  # the one message sent to its openid lately
    UNMATCHED = "unmatched"  # no msgid match and not exactly one recent send


@dataclass(frozen=True, slots=True)
class ReportMatch:
    applied: ReportApplied | None
    matched_by: MatchedBy


async def apply_report(backend: Backend, report: Report, openid: str, now: float) -> ReportMatch:
    """Apply `report` by its msgid, or else by its recipient (see the module docstring)."""
    if report.msgid != 0:
        applied = await backend.apply_report(report, now)
        if applied.message_id is not None:
            return ReportMatch(applied, MatchedBy.MSGID)
    recent = await backend.recent_sends(report.app, openid, now - MATCH_WINDOW_S)
    fits = [
        record
        for record in recent
        if record.status is Status.SENT and record.msgid is not None and record.msgid != 0
    ]
    if len(fits) != 1 or fits[0].msgid is None:
        return ReportMatch(None, MatchedBy.UNMATCHED)
    matched = Report(report.app, fits[0].msgid, report.status, report.text)
    return ReportMatch(await backend.apply_report(matched, now), MatchedBy.RECIPIENT)
