"""The sandbox's own loop stalls, reported beside the send arrivals they may bunch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from wxgate.sandbox.clock import OffsetClock
from wxgate.sandbox.control import SandboxControl
from wxgate.sandbox.stalls import KEPT, STALL_S, LoopStalls


def test_only_stalls_of_the_threshold_or_more_are_kept():
    stalls = LoopStalls(OffsetClock())
    stalls.observe(STALL_S / 2)
    stalls.observe(0.0)
    assert stalls.to_json()["count"] == 0
    stalls.observe(0.25)
    stalls.observe(STALL_S)
    report = stalls.to_json()
    assert report["count"] == 2
    assert report["longest_ms"] == 250.0
    assert [stall["ms"] for stall in report["stalls"]] == [250.0, STALL_S * 1000]


def test_many_stalls_keep_the_longest_in_time_order_and_count_all():
    clock = OffsetClock()
    stalls = LoopStalls(clock)
    observed = [STALL_S + (n % 97) / 1000 for n in range(5 * KEPT)]
    for late_s in observed:
        clock.advance(1.0)
        stalls.observe(late_s)
    report = stalls.to_json()
    assert report["count"] == 5 * KEPT
    kept = report["stalls"]
    assert len(kept) == KEPT
    assert [s["ended_at"] for s in kept] == sorted(s["ended_at"] for s in kept)
    longest = sorted(observed)[-KEPT:]
    assert sorted(s["ms"] for s in kept) == [round(late_s * 1000, 1) for late_s in longest]
    stalls.clear()
    assert stalls.to_json() == {
        "threshold_ms": STALL_S * 1000,
        "count": 0,
        "longest_ms": 0.0,
        "stalls": [],
    }


async def test_a_blocked_sandbox_loop_shows_in_send_rate_until_reset(
    sandbox: Any, sandbox_control: SandboxControl
):
    # The sandbox serves on this test's event loop, so blocking it stalls the sandbox.
    await asyncio.sleep(0.05)
    blocked_at = await sandbox_control.now()
    time.sleep(0.15)
    await asyncio.sleep(0.05)
    report = (await sandbox_control.send_rate())["loop_stalls"]
    assert report["count"] >= 1
    assert report["longest_ms"] >= 100
    [longest] = [s for s in report["stalls"] if s["ms"] == report["longest_ms"]]
    assert longest["ended_at"] >= blocked_at + 0.1
    await sandbox_control.reset()
    assert (await sandbox_control.send_rate())["loop_stalls"]["count"] == 0
