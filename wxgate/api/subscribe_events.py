"""What the subscribe events pushed to an app's server URL change (docs/subscribe.md):
the grant ledger, from popup and change events, and the message each item of a sent
event is about (backends/sent_events.py).

WeChat's popup event does not say whether a template is one-time or long-term, so
`[apps.NAME] long_term_templates` names the long-term ones.
"""

from __future__ import annotations

from wxgate.api.state import ApiState
from wxgate.backends.base import Status
from wxgate.backends.sent_events import SentResult, apply_sent_event, keep_seconds
from wxgate.wechat.callback import (
    SubscribeChangeEvent,
    SubscribePopupEvent,
    SubscribeSentEvent,
)
from wxgate.wechat.errors import revokes_grant

SubscribeEvent = SubscribePopupEvent | SubscribeChangeEvent | SubscribeSentEvent
SUBSCRIBE_EVENTS = (SubscribePopupEvent, SubscribeChangeEvent, SubscribeSentEvent)


async def apply_subscribe_event(
    state: ApiState, app: str, event: SubscribeEvent, now: float
) -> str:
    """Apply one event; the callback metric's result: `applied`, or `unknown_msgid` for
    a sent event none of whose items matched a message."""
    if isinstance(event, SubscribeSentEvent):
        return await _sent(state, app, event, now)
    grants = state.backend.grant_store()
    long_term = frozenset(state.settings.apps[app].long_term_templates)
    for item in event.items:
        if item.accepted:
            lasting = item.template_id in long_term
            await grants.accept(app, event.from_user, item.template_id, long_term=lasting, now=now)
        else:
            await grants.clear(app, event.from_user, item.template_id)
    return "applied"


async def _sent(state: ApiState, app: str, event: SubscribeSentEvent, now: float) -> str:
    window_s = state.settings.apps[app].sent_event_window_s
    delivery = state.settings.delivery
    keep_s = keep_seconds(delivery.connect_timeout_s, delivery.read_timeout_s)
    matched = False
    for item in event.items:
        status = Status.DELIVERED if item.delivered else Status.FAILED
        result = SentResult(
            app, event.from_user, item.template_id, status, item.error_status, item.msgid or None
        )
        applied = await apply_sent_event(state.backend, result, now, window_s, keep_s)
        matched = matched or applied.message_id is not None
        if revokes_grant(item.error_code):
            await state.backend.grant_store().clear(app, event.from_user, item.template_id)
    return "applied" if matched else "unknown_msgid"
