"""Checks intake runs on a request's messages once they are parsed, before they are stored.

Each check is a class of its own module (a template registry, a suppression list, a
grant ledger, a dedupe window, a schedule); `intake_checks` lists the ones a gateway
runs, in order. A check refuses the request (InvalidRequest naming the field, e.g.
`message_loc(message, "data", key)`), or answers the messages as they should be
stored, changed with `dataclasses.replace` (a `verdict` stores a message settled and
never sent; a `send_at` schedules it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from wxgate.api.grant_check import GrantCheck
from wxgate.api.scheduling import ScheduleHorizon
from wxgate.api.webhook_intake import WebhookNotify
from wxgate.backends.base import Backend, NewMessage
from wxgate.clock import Clock
from wxgate.config import Settings


class IntakeCheck(Protocol):
    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        """The messages to store (the same objects when nothing changes)."""
        ...


def message_loc(message: NewMessage, *fields: str | int) -> list[str | int]:
    """Where a field of `message` is in its request: under `body`, or under its recipient
    of a batch (`["body", "recipients", i, ...]`)."""
    if message.batch_position is not None:
        return ["body", "recipients", message.batch_position, *fields]
    return ["body", *fields]


def intake_checks(settings: Settings, backend: Backend, clock: Clock) -> list[IntakeCheck]:
    """The checks this gateway runs, in order."""
    from wxgate.api.suppression_check import SuppressionCheck
    from wxgate.api.template_check import TemplateCheck

    return [
        ScheduleHorizon(clock),
        WebhookNotify(settings),
        TemplateCheck(settings, backend, clock),
        SuppressionCheck(backend),
        GrantCheck(settings, backend),
    ]
