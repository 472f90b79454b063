"""Which message a subscribe sent event is about, and settling it (docs/subscribe.md).

bizsend answers no msgid, and a send whose outcome is unknown stored none, so a
`subscribe_msg_sent_event` is matched by (app, openid, template_id) and time: the
oldest message of a subscribe kind that a worker settled sent or unknown within the
window (events arrive in the order of the sends). A msgid the event carries rules
out a message stored with another one (subscribe/send answers msgids).

An event can beat the worker's settle: WeChat pushes it once the user has the message,
while the worker may still wait for the answer (a hung send waits for its read
timeout). An event that matches nothing is kept a while (`keep_s`, about the send's
timeouts), and the worker takes it once its settle is written (`apply_kept_result`).
A message settled `unknown` that the event shows delivered used a grant after all:
the ledger is told so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wxgate.backends.base import RECENT_SENDS_S, Backend, MessageRecord, ReportApplied, Status
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

SENT_EVENT_WINDOW_S: Final = 600.0  # how long after a send its sent event is looked for
KEEP_MARGIN_S: Final = 10.0


def keep_seconds(connect_timeout_s: float, read_timeout_s: float) -> float:
    """How long an event that matched nothing is kept: it beats the worker's settle by
    at most the send's timeouts."""
    return connect_timeout_s + read_timeout_s + KEEP_MARGIN_S


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


async def _matching(backend: Backend, result: SentResult, since: float) -> list[MessageRecord]:
    """The messages `result` may be about, settled sent or unknown since `since`, oldest
    first."""
    recent = await backend.recent_sends(result.app, result.touser, since)
    return sorted((r for r in recent if _candidate(r, result)), key=lambda r: r.id)


async def apply_sent_event(
    backend: Backend,
    result: SentResult,
    now: float,
    window_s: float = SENT_EVENT_WINDOW_S,
    keep_s: float = 0.0,
    *,
    look_again: bool = True,
) -> ReportApplied:
    """Settle the message `result` is about; message_id None when none matches, and the
    result is then kept for `keep_s` (0: not kept).

    Keeping races the worker: a settle written, and its kept events looked for, between
    this call's look and its keep would leave the event kept with nobody to take it
    (one message stuck `sent`). So after keeping, it looks once more (`look_again`),
    and a message that matches now takes a kept event as the worker would have."""
    since = now - min(window_s, RECENT_SENDS_S)
    for record in await _matching(backend, result, since):
        applied = await backend.apply_sent_result(record.id, result.status, result.text, now)
        if applied.changed:  # else another event took it meanwhile: try the next one
            if record.status is Status.UNKNOWN and result.status is Status.DELIVERED:
                await _grant_used(backend, record, now)
            return applied
    if keep_s > 0:
        kept = (result.status, result.text)
        await backend.keep_sent_result(
            result.app, result.touser, result.template_id, kept, now, keep_s
        )
        matching = await _matching(backend, result, since) if look_again else []
        if matching:  # the oldest takes a kept event (none left: the worker took it)
            record = matching[0]
            again = await apply_kept_result(backend, record, now, keep_s, look_again=False)
            if again is not None and again.changed:
                # The worker that wrote this settle found nothing kept, so it counted no
                # grant for a message it had settled unknown; a grant was used after all.
                own = again.message_id == record.id
                if own and record.status is Status.UNKNOWN and again.status is Status.DELIVERED:
                    await _grant_used(backend, record, now)
                return again
    return ReportApplied(None, None, False)


async def apply_kept_result(
    backend: Backend,
    record: MessageRecord,
    now: float,
    keep_s: float = 0.0,
    *,
    look_again: bool = True,
) -> ReportApplied | None:
    """For a subscribe message whose settle as sent or unknown is written: the kept sent
    event of its (app, touser, template_id) applied to it; None when none was kept.

    An event for another message to the same user and template may have settled this
    one meanwhile (two sends, their events crossing the two settles): the kept event is
    then that other message's, and is matched as a new event would be (kept again for
    `keep_s` when that message's settle is not written yet), never dropped."""
    if record.kind not in SUBSCRIBE_KINDS:
        return None
    kept = await backend.take_sent_result(record.app, record.touser, record.template_id, now)
    if kept is None:
        return None
    status, text = kept
    applied = await backend.apply_sent_result(record.id, status, text, now)
    if applied.changed:
        return applied
    result = SentResult(record.app, record.touser, record.template_id, status, text)
    return await apply_sent_event(backend, result, now, keep_s=keep_s, look_again=look_again)


async def _grant_used(backend: Backend, record: MessageRecord, now: float) -> None:
    """A message settled unknown used no grant in the worker; its delivery shows it did."""
    await backend.grant_store().use(record.app, record.touser, record.template_id, now)
