"""Checks a worker runs on a leased message right before it would send it.

Each check is a class of its own module (quiet hours, a frequency cap, ...);
`send_checks` lists the ones a gateway's workers run, in order. A check answers a
Settlement to write instead of sending (a release until a quiet window ends, a
THROTTLED outcome), or None to let the send go out. A check runs after the gate's
pause and breaker checks and before the send budget is taken.
"""

from __future__ import annotations

from typing import Protocol

from wxgate.backends.base import Backend, Lease, Settlement
from wxgate.clock import Clock
from wxgate.config import Settings
from wxgate.delivery.expired_subscribe_lease import ExpiredSubscribeLease
from wxgate.delivery.frequency_cap import FrequencyCap
from wxgate.delivery.quiet_hours import QuietHours


class SendCheck(Protocol):
    async def before_send(self, lease: Lease) -> Settlement | None: ...


def send_checks(settings: Settings, backend: Backend, clock: Clock) -> list[SendCheck]:
    """The checks this gateway's workers run, in order."""
    checks: list[SendCheck] = [ExpiredSubscribeLease(backend)]
    quiet = QuietHours.for_apps(settings.apps, clock)
    if quiet is not None:
        checks.append(quiet)
    capped = FrequencyCap.for_apps(settings.apps, backend, clock)
    if capped is not None:
        checks.append(capped)
    return checks
