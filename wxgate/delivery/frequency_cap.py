"""Frequency caps: how often one recipient may be sent to, per app and per template.

An app's `per_user_limit = "5/1h"` (and `per_template_limit = {tpl = "1/1d"}`) is
checked right before each send: the message takes a slot of each limit in the shared
cap store (backends/caps.py), or, past a limit, ends `throttled` with the reason
(`per_user_overflow = "drop"`) or waits, uncounted, until a slot frees ("delay"). A
slot is taken when the send is decided, so caps count what the gateway sent or tried
to send; a retry of the same message holds its slot and takes no other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wxgate.backends.base import Backend, Lease, Outcome, Settlement
from wxgate.backends.caps import CapLimit, CapStore
from wxgate.clock import Clock, rfc3339
from wxgate.config import AppSettings

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_limit(spec: str, scope: str = "") -> CapLimit:
    """ "5/1h" -> 5 sends per 3600 s (already checked by config's pattern)."""
    count, period = spec.split("/")
    return CapLimit(scope, int(count), int(period[:-1]) * _UNIT_S[period[-1]])


@dataclass(frozen=True, slots=True)
class AppCaps:
    per_user: CapLimit | None
    per_template: Mapping[str, CapLimit]
    drop: bool  # per_user_overflow == "drop"
    specs: Mapping[str, str]  # scope -> the limit as configured, for the reason

    @classmethod
    def of(cls, app: AppSettings) -> AppCaps | None:
        if app.per_user_limit is None and not app.per_template_limit:
            return None
        per_user = None if app.per_user_limit is None else parse_limit(app.per_user_limit)
        per_template = {tpl: parse_limit(spec, tpl) for tpl, spec in app.per_template_limit.items()}
        specs = {
            tpl: f"per_template_limit {tpl} {spec}" for tpl, spec in app.per_template_limit.items()
        }
        if app.per_user_limit is not None:
            specs[""] = f"per_user_limit {app.per_user_limit}"
        return cls(per_user, per_template, app.per_user_overflow == "drop", specs)

    def limits(self, template_id: str) -> list[CapLimit]:
        limits = [] if self.per_user is None else [self.per_user]
        own = self.per_template.get(template_id)
        return limits if own is None else [own, *limits]

    def reason(self, limits: list[CapLimit]) -> str:
        return " and ".join(self.specs[limit.scope] for limit in limits)


class FrequencyCap:
    """The send check: one slot of each of the recipient's limits, or throttled/delayed."""

    def __init__(self, caps: Mapping[str, AppCaps], store: CapStore, clock: Clock) -> None:
        self._caps = dict(caps)
        self._store = store
        self._clock = clock

    @classmethod
    def for_apps(
        cls, apps: Mapping[str, AppSettings], backend: Backend, clock: Clock
    ) -> FrequencyCap | None:
        """The check for the apps that have caps, or None when none has."""
        caps = {name: c for name, app in apps.items() if (c := AppCaps.of(app)) is not None}
        return cls(caps, backend.cap_store(), clock) if caps else None

    async def before_send(self, lease: Lease) -> Settlement | None:
        record = lease.record
        caps = self._caps.get(record.app)
        if caps is None:
            return None
        limits = caps.limits(record.template_id)
        if not limits:
            return None
        frees = await self._store.take(
            record.app, record.touser, record.id, limits, self._clock.now()
        )
        if frees is None:
            return None
        reason = f"{caps.reason(limits)} reached for this recipient"
        if caps.drop:
            return Settlement(lease, Outcome.THROTTLED, errmsg=reason, note=reason)
        note = f"{reason}; waits until {rfc3339(frees)}"
        return Settlement(lease, Outcome.RELEASE, next_attempt_at=frees, note=note)
