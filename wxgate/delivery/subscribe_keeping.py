"""What the worker keeps in step for subscribe messages, beside the message itself.

The grant ledger (backends/grants.py): a send WeChat accepted uses one one-time grant
(a long-term grant stays); a 43101 answer means the user holds none, so the ledger's
entry is cleared; the `sent` or `failed` event of the message says which grant it
used. The sent event that beat the settle (backends/sent_events.py): applied once
the settle is written. Both are advisory: when storage cannot do them, the
settlement stands (WeChat has already answered), and the log says so.
"""

from __future__ import annotations

from dataclasses import replace

from wxgate.backends.base import (
    RECENTLY_SENT,
    Backend,
    MessageRecord,
    Outcome,
    Settlement,
    Status,
    StorageUnavailable,
)
from wxgate.backends.sent_events import apply_kept_result
from wxgate.clock import Clock
from wxgate.delivery.messagelog import MessageLog
from wxgate.wechat.errors import revokes_grant
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

GRANT_CLEARED = "grant cleared: WeChat says the user holds none"


def _who(record: MessageRecord) -> tuple[str, str, str]:
    return record.app, record.touser, record.template_id


def _noted(settlement: Settlement, note: str) -> Settlement:
    joined = f"{settlement.note}; {note}" if settlement.note else note
    return replace(settlement, note=joined)


class SubscribeKeeper:
    """Keeps the ledger and the sent events in step with subscribe sends."""

    def __init__(self, backend: Backend, clock: Clock, keep_s: float) -> None:
        """`keep_s`: how long a kept sent event that turns out to be another message's
        is kept again for it (sent_events.keep_seconds)."""
        self._backend = backend
        self._grants = backend.grant_store()
        self._clock = clock
        self._keep_s = keep_s

    async def after_send(
        self, record: MessageRecord, settlement: Settlement, log: MessageLog
    ) -> Settlement:
        """`settlement`, its note naming the grant the send used (or cleared)."""
        if record.kind not in SUBSCRIBE_KINDS:
            return settlement
        who = _who(record)
        try:
            if settlement.outcome is Outcome.SENT:
                used = await self._grants.use(*who, self._clock.now())
                return _noted(settlement, f"grant: {used.value}")
            if revokes_grant(settlement.errcode):
                await self._grants.clear(*who)
                return _noted(settlement, GRANT_CLEARED)
        except StorageUnavailable as exc:
            log.warning("grant ledger not updated: storage unavailable", error=str(exc))
        return settlement

    async def after_settle(
        self, record: MessageRecord, settlement: Settlement, log: MessageLog
    ) -> None:
        """Once a settle as sent or unknown is written: the sent event that beat it."""
        if record.kind not in SUBSCRIBE_KINDS or settlement.outcome.status not in RECENTLY_SENT:
            return
        try:
            now = self._clock.now()
            applied = await apply_kept_result(self._backend, record, now, self._keep_s)
            if applied is not None and applied.message_id != record.id:
                applied = None  # another message's event, settled there (grant included)
            delivered = (
                applied is not None and applied.changed and applied.status is Status.DELIVERED
            )
            if delivered and settlement.outcome is Outcome.UNKNOWN:  # SENT used it already
                await self._grants.use(*_who(record), now)
        except StorageUnavailable as exc:
            log.warning("kept sent event not applied: storage unavailable", error=str(exc))
            return
        if applied is not None and applied.changed:
            log.info("settled by a sent event that came before the answer", status=applied.status)
