"""What puts a recipient on its app's suppression list, and what takes it off.

Three sources feed the list (docs/templates.md): a send answered 43004 (the user does
not follow the account), 43101 on a template message (the user refused the account's
template messages) or 40003 (an openid that is not this account's, permanent); a
delivery report `failed:user block`; and the follow events, where `unsubscribe`
adds and `subscribe` lifts every entry the user can undo. The decisions are pure
functions; `SuppressionRecorder` hears the worker's settlements and writes what they
decide on a task of its own, so the worker never waits for it.
"""

from __future__ import annotations

import asyncio

from wxgate.backends.base import StorageUnavailable
from wxgate.backends.suppressions import (
    LIFTED_BY_FOLLOW,
    Suppression,
    SuppressionReason,
    SuppressionStore,
)
from wxgate.delivery.events import MessageSettled, WorkerEvent
from wxgate.observability import get_logger
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.report import ReportOutcome

# Catalogue codes (wechat/errors.py, RECIPIENT) that say this recipient cannot receive.
_NOT_FOLLOWING = 43004  # require subscribe
_REFUSED = 43101  # user refuse to accept the msg
_INVALID_OPENID = 40003  # invalid openid

_log = get_logger(__name__)


def reason_for_errcode(errcode: int | None, kind: MessageKind) -> SuppressionReason | None:
    """Why a send answered `errcode` suppresses its recipient, or None.

    43101 suppresses only for template messages: on a subscribe kind it means the
    one-time grant is spent, which the grant ledger tracks, not this list."""
    if errcode == _NOT_FOLLOWING:
        return SuppressionReason.NOT_FOLLOWING
    if errcode == _INVALID_OPENID:
        return SuppressionReason.INVALID_OPENID
    if errcode == _REFUSED and kind is MessageKind.TEMPLATE:
        return SuppressionReason.REFUSED_TEMPLATES
    return None


def reason_for_report(outcome: ReportOutcome) -> SuppressionReason | None:
    """A delivery report that suppresses its recipient (`failed:user block`)."""
    return SuppressionReason.USER_BLOCK if outcome.blocks_recipient else None


async def follow_changed(
    store: SuppressionStore, app: str, openid: str, followed: bool, now: float
) -> bool:
    """A `subscribe` event lifts what the user could undo; `unsubscribe` adds. True if
    the list changed."""
    if followed:
        return await store.lift(app, openid, LIFTED_BY_FOLLOW)
    return await store.add(app, [Suppression(openid, SuppressionReason.UNFOLLOWED, now)]) > 0


class SuppressionRecorder:
    """A worker listener: a settlement whose errcode suppresses its recipient is added
    to the list (on a task; a storage failure is logged, the next such answer adds it)."""

    def __init__(self, store: SuppressionStore) -> None:
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: WorkerEvent) -> None:
        if not isinstance(event, MessageSettled) or event.settlement is None:
            return
        record = event.settlement.lease.record
        reason = reason_for_errcode(event.errcode, record.kind)
        if reason is None or not record.touser:
            return
        entry = Suppression(record.touser, reason, record.updated_at, event.errcode)
        task = asyncio.get_running_loop().create_task(self._add(record.app, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add(self, app: str, entry: Suppression) -> None:
        try:
            await self._store.add(app, [entry])
        except StorageUnavailable as exc:
            _log.warning("suppression not recorded: storage unavailable", app=app, error=str(exc))
            return
        _log.info("recipient suppressed", app=app, reason=entry.reason.value, errcode=entry.errcode)

    async def flush(self) -> None:
        """Wait for the additions under way (tests, and shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
