"""The suppression list's intake check: a message to a suppressed recipient is stored
settled `suppressed`, with the reason, and never sent (202 all the same: the request
was fine, the recipient cannot receive). One lookup per request, every recipient of
a batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from wxgate.backends.base import Backend, NewMessage, Status, Verdict
from wxgate.backends.suppressions import Suppression
from wxgate.clock import rfc3339


def suppressed_verdict(entry: Suppression) -> Verdict:
    note = f"recipient suppressed: {entry.reason.value} since {rfc3339(entry.since)}"
    return Verdict(Status.SUPPRESSED, note, entry.errcode)


class SuppressionCheck:
    """The IntakeCheck of the suppression list."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend  # its store is taken when first used: building an app touches none

    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        pending = [message for message in messages if message.verdict is None]
        if not pending:
            return messages
        store = self._backend.suppression_store()
        found = await store.find(app, [message.touser for message in pending])
        if not found:
            return messages
        return [
            replace(message, verdict=suppressed_verdict(found[message.touser]))
            if message.verdict is None and message.touser in found
            else message
            for message in messages
        ]
