"""Which message a subscribe sent event is about, and settling it (docs/subscribe.md).

bizsend answers no msgid, and a send whose outcome is unknown stored none, so a
`subscribe_msg_sent_event` is matched by (app, openid, template_id) and time: the
oldest message of a subscribe kind that a worker settled sent or unknown within the
window (events arrive in the order of the sends). A msgid the event carries rules
out a message stored with another one (subscribe/send answers msgids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wxgate.backends.base import RECENT_SENDS_S, Backend, MessageRecord, ReportApplied, Status
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

SENT_EVENT_WINDOW_S: Final = 600.0  # how long after a send its sent event is looked for


@dataclass(frozen=True, slots=True)
class SentResult:
    """One item of a sent event, already decided: `status` DELIVERED or FAILED."""

    app: str
    touser: str
    template_id: str
    status: Status
    text: str  # WeChat's ErrorStatus, kept as said
    msgid: int | None = None


def _candidate(record: MessageRecord, result: SentResult) -> bool:
    if record.kind not in SUBSCRIBE_KINDS or record.template_id != result.template_id:
        return False
    return result.msgid is None or record.msgid is None or record.msgid == result.msgid


async def apply_sent_event(
    backend: Backend, result: SentResult, now: float, window_s: float = SENT_EVENT_WINDOW_S
) -> ReportApplied:
    """Settle the message `result` is about; message_id None when none matches."""
    since = now - min(window_s, RECENT_SENDS_S)
    recent = await backend.recent_sends(result.app, result.touser, since)
    for record in sorted((r for r in recent if _candidate(r, result)), key=lambda r: r.id):
        applied = await backend.apply_sent_result(record.id, result.status, result.text, now)
        if applied.changed:  # else another event took it meanwhile: try the next one
            return applied
    return ReportApplied(None, None, False)
