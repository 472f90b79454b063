"""What every API handler shares, hung on `app.state.wxgate` (no module-level state).

Handlers reach it with `api_state(request)`; tests build one app per gateway,
so two apps in one process never share a key bucket or a cached count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from starlette.requests import Request

from wxgate.api.backpressure import Backpressure
from wxgate.api.dedupe import Dedupe
from wxgate.api.intake_checks import IntakeCheck
from wxgate.backends.base import Backend
from wxgate.clock import Clock
from wxgate.config import Settings
from wxgate.delivery.loop_lag import IntakeActivity
from wxgate.observability import Metrics
from wxgate.wechat.callback import CallbackCodec

Readiness = Callable[[], Awaitable[dict[str, bool]]]


@dataclass(frozen=True, slots=True)
class ApiState:
    settings: Settings
    backend: Backend
    metrics: Metrics
    clock: Clock
    backpressure: Backpressure
    codecs: Mapping[str, CallbackCodec]  # apps with a callback token only
    readiness: Readiness | None
    dedupe: Dedupe  # the apps' dedupe windows (dedupe.py)
    intake_checks: Sequence[IntakeCheck] = ()
    # marked by every intake request, so a worker in this process yields to it
    intake: IntakeActivity = field(default_factory=IntakeActivity)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.wxgate
    return state
