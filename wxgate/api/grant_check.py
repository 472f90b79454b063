"""The intake check of subscribe messages against the grant ledger (`[apps.NAME]
grant_check`, docs/subscribe.md).

`off`: not checked. `warn` (the default): a message whose recipient holds no grant the
ledger knows of is stored all the same, and a warning is logged; the ledger only knows
the grants whose events reached this gateway, so it may miss some. `enforce`: such a
message is stored `failed` with reason `no_grant`, and never reaches WeChat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from wxgate.backends.base import Backend, NewMessage, Status, Verdict
from wxgate.config import Settings
from wxgate.observability import get_logger
from wxgate.wechat.subscribe import SUBSCRIBE_KINDS

NO_GRANT = "no_grant"
NO_GRANT_NOTE = "no_grant: the grant ledger knows no grant of this user for this template"

_log = get_logger(__name__)


class GrantCheck:
    """Refuses (enforce) or flags (warn) subscribe messages without a known grant."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self._settings = settings
        self._backend = backend

    async def check(self, app: str, messages: Sequence[NewMessage]) -> Sequence[NewMessage]:
        mode = self._settings.apps[app].grant_check
        if mode == "off" or not any(m.kind in SUBSCRIBE_KINDS for m in messages):
            return messages
        checked, ungranted = [], 0
        for message in messages:
            if not await self._granted(app, message):
                ungranted += 1
                if mode == "enforce":
                    verdict = Verdict(Status.FAILED, NO_GRANT_NOTE, errmsg=NO_GRANT)
                    message = replace(message, verdict=verdict)
            checked.append(message)
        if ungranted and mode == "warn":  # one line per request, not per recipient
            _log.warning(
                "subscribe messages accepted without a known grant",
                app=app,
                count=ungranted,
                template_id=messages[0].template_id,
            )
        return checked

    async def _granted(self, app: str, message: NewMessage) -> bool:
        """False for a subscribe message still to be sent whose grant the ledger lacks."""
        if message.kind not in SUBSCRIBE_KINDS or message.verdict is not None:
            return True
        grants = self._backend.grant_store()
        grant = await grants.get(app, message.touser, message.template_id)
        return grant is not None and grant.allows_a_send
