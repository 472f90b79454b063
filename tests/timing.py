"""Timing checks that hold on a busy machine.

A test that bounds how long something takes ("refused within 2 s") measures the code
and whatever else the machine runs. Other work on the same cores only ever adds time,
and it comes and goes; a slow code path is slow every time. So a bound is checked on
the fastest of a few attempts: one quick attempt shows the code is quick, and a bug
that makes it slow makes every attempt slow, so the bound still catches it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TRIES = 3


async def fastest(
    attempt: Callable[[], Awaitable[T]], under_s: float, tries: int = TRIES
) -> tuple[T, float]:
    """(result, seconds) of the first of up to `tries` runs of `attempt` that took less
    than `under_s`, or of the fastest run when none did (for the caller to assert on)."""
    best: tuple[T, float] | None = None
    for _ in range(tries):
        started = time.monotonic()
        result = await attempt()
        took = time.monotonic() - started
        if best is None or took < best[1]:
            best = (result, took)
        if took < under_s:
            break
    assert best is not None
    return best
