"""A send check for subscribe messages whose previous lease expired: they are not sent
again (docs/subscribe.md, "No resend without client_msg_id").

A lease that expires means the worker holding it stopped (killed, stalled) at some
point of its delivery, possibly after its request reached WeChat. A template message
is sent again under the same client_msg_id, which WeChat de-duplicates; a subscribe
message has no such id, so a second send could notify the user twice. It is settled
`unknown` instead, for its sent event (or an operator) to settle.
"""

from __future__ import annotations

from wxgate.backends.base import Backend, EventKind, Lease, Outcome, Settlement
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

EXPIRED_NOTE = "the previous lease expired during delivery; not resent (no client_msg_id)"
# History lines that say where a message stands before a lease: the newest one decides.
_MARKERS = frozenset(
    {
        EventKind.ACCEPTED,
        EventKind.SCHEDULED,
        EventKind.RETRY,
        EventKind.RELEASED,
        EventKind.REPLAYED,
        EventKind.LEASE_EXPIRED,
    }
)


class ExpiredSubscribeLease:
    """Answers UNKNOWN for a subscribe message leased after an expired lease."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def before_send(self, lease: Lease) -> Settlement | None:
        record = lease.record
        # A lease expiry counts an attempt, so a message with none cannot have had one.
        if record.kind not in SUBSCRIBE_KINDS or record.attempts == 0:
            return None
        stored = await self._backend.get(record.id)
        if stored is None:
            return None
        markers = [event.kind for event in stored.events if event.kind in _MARKERS]
        if markers and markers[-1] is EventKind.LEASE_EXPIRED:
            return Settlement(lease, Outcome.UNKNOWN, note=EXPIRED_NOTE)
        return None
