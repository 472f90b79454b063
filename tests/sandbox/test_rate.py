"""The sliding-window maximum behind GET /sandbox/send-rate, on arrival times given."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from wxgate.sandbox.rate import SendArrivals


def _arrivals(times: list[float], appid: str = "wxa") -> SendArrivals:
    arrivals = SendArrivals()
    for t in times:
        arrivals.record(appid, t)
    return arrivals


def test_the_window_is_half_open_so_sends_a_full_window_apart_are_not_together():
    busiest = _arrivals([10.0, 11.0, 12.0]).busiest("wxa", 1.0)
    assert busiest.sends == 1
    busiest = _arrivals([10.0, 10.5, 10.999, 11.0, 11.9]).busiest("wxa", 1.0)
    assert (busiest.sends, busiest.started_at, busiest.ended_at) == (3, 10.0, 10.999)


def test_accounts_are_counted_apart():
    arrivals = _arrivals([1.0, 1.1, 1.2])
    arrivals.record("wxb", 1.05)
    assert arrivals.busiest("wxa", 1.0).sends == 3
    assert arrivals.busiest("wxb", 1.0).sends == 1
    assert arrivals.appids() == ["wxa", "wxb"]


def test_arrivals_recorded_out_of_order_are_sorted_first():
    times = [5.0, 1.0, 5.5, 1.2, 5.9]
    assert _arrivals(times).busiest("wxa", 1.0).sends == 3


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=60), st.floats(0.01, 50))
def test_it_matches_counting_every_window_that_starts_at_a_send(times: list[float], window: float):
    expected = max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)
    assert _arrivals(times).busiest("wxa", window).sends == expected


def test_a_steady_rate_gives_that_many_per_second():
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 10) for _ in range(2_000))
    busiest = _arrivals(times).busiest("wxa", 1.0).sends
    assert 200 <= busiest < 260
