"""Intake first: the worker's window under a cap that shrinks while the event loop runs
late and grows back while it is on time (wxgate/delivery/loop_lag.py)."""

from __future__ import annotations

import asyncio
import time

from wxgate.config import Settings
from wxgate.delivery.loop_lag import (
    FLOOR,
    INTAKE_RECENT_S,
    SHRINK,
    SHRINK_EVERY_S,
    IntakeActivity,
    LagLimit,
    LoopLag,
)
from wxgate.gateway import Gateway


class Ticking:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def busy_intake(clock: Ticking) -> IntakeActivity:
    intake = IntakeActivity(clock)
    intake.mark()
    return intake


def test_a_late_loop_shrinks_the_cap_once_per_interval_down_to_the_floor() -> None:
    clock = Ticking()
    intake = busy_intake(clock)
    limit = LagLimit(0.004, 512, intake, monotonic=clock)
    limit.observe(0.010)
    assert limit.cap == int(512 * SHRINK)
    limit.observe(0.010)  # too soon after the last cut for the next
    assert limit.cap == int(512 * SHRINK)
    for _ in range(100):
        clock.now += SHRINK_EVERY_S
        intake.mark()
        limit.observe(0.010)
    assert limit.cap == FLOOR
    assert limit.limit(512) == FLOOR


def test_an_on_time_loop_grows_the_cap_by_one_a_sample_up_to_the_most() -> None:
    clock = Ticking()
    intake = busy_intake(clock)
    limit = LagLimit(0.004, 20, intake, monotonic=clock)
    for _ in range(10):
        clock.now += SHRINK_EVERY_S
        intake.mark()
        limit.observe(0.05)
    assert limit.cap == FLOOR
    limit.observe(0.003)  # late, but under the target: neither cut nor grown
    assert limit.cap == FLOOR
    limit.observe(0.001)
    assert limit.cap == FLOOR + 1
    for _ in range(100):
        limit.observe(0.0)
    assert limit.cap == 20


def test_a_late_loop_without_intake_keeps_the_whole_window() -> None:
    clock = Ticking()
    intake = busy_intake(clock)
    limit = LagLimit(0.004, 512, intake, monotonic=clock)
    limit.observe(0.05)
    assert limit.cap < 512
    clock.now += INTAKE_RECENT_S + 0.01  # intake went quiet: the cap is lifted at once
    limit.observe(0.05)
    assert limit.cap == 512
    assert LagLimit(0.004, 512, IntakeActivity()).limit(512) == 512


def test_the_cap_never_widens_a_window_nor_narrows_it_below_the_floor() -> None:
    limit = LagLimit(0.004, 512, IntakeActivity())
    assert limit.limit(64) == 64  # an on-time loop leaves the window as it is
    assert limit.limit(4) == 4  # a window smaller than the floor stays so
    limit.cap = 2
    assert limit.limit(64) == FLOOR


async def test_loop_lag_measures_how_long_a_blocked_loop_kept_a_timer_waiting() -> None:
    samples: list[float] = []
    sampler = asyncio.create_task(LoopLag(samples.append).run())
    await asyncio.sleep(0.05)
    on_time = len(samples)
    time.sleep(0.05)  # blocks the loop on purpose
    await asyncio.sleep(0.03)
    sampler.cancel()
    assert on_time >= 1
    assert max(samples[on_time:]) >= 0.03


def _settings(role_lag_ms: float) -> Settings:
    return Settings.model_validate(
        {
            "apps": {"shop": {"appid": "wx0000000000000001", "secret": "s" * 32}},
            "delivery": {"yield_to_intake_ms": role_lag_ms},
        }
    )


def test_only_a_process_that_also_serves_the_api_yields_to_intake() -> None:
    gateway = Gateway(_settings(4.0), role="all")
    assert gateway._yield_to_intake() == (0.004, gateway.intake)
    assert Gateway(_settings(4.0), role="worker")._yield_to_intake() is None
    assert Gateway(_settings(0.0), role="all")._yield_to_intake() is None
