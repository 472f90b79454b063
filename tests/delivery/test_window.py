"""The send window: fixed, or sized by Little's law from the apps' rate and the measured
round trip ("auto", the default), within its bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wxgate.config import DeliverySettings
from wxgate.delivery.window import AUTO_MIN, HEADROOM, Window


def settle_on(window: Window, round_trip_s: float, answers: int = 500) -> int:
    for _ in range(answers):
        window.observe(round_trip_s)
    return window.size


def test_a_fixed_concurrency_is_the_window_whatever_the_round_trip() -> None:
    window = Window(64, 512, [200.0])
    assert settle_on(window, 0.2) == 64
    assert settle_on(window, 0.001) == 64


@pytest.mark.parametrize("round_trip_s", [0.03, 0.1, 0.2])
def test_auto_keeps_the_rate_times_the_round_trip_in_flight(round_trip_s: float) -> None:
    rate = 1_000.0
    size = settle_on(Window("auto", 512, [rate]), round_trip_s)
    assert rate * round_trip_s <= size <= rate * round_trip_s * HEADROOM + 1


def test_auto_adds_up_the_rates_of_the_workers_apps() -> None:
    one = settle_on(Window("auto", 512, [100.0]), 0.2)
    two = settle_on(Window("auto", 512, [100.0, 100.0]), 0.2)
    assert two >= 2 * one - 1


def test_auto_follows_the_round_trip_down_and_up() -> None:
    window = Window("auto", 512, [1_000.0])
    assert settle_on(window, 0.001) == AUTO_MIN  # 1.5 in flight: the floor
    assert settle_on(window, 0.2) >= 200


def test_auto_stays_within_the_maximum() -> None:
    assert settle_on(Window("auto", 300, [1_000.0]), 2.0) == 300
    assert Window("auto", 512, [1e9]).size == 512  # an unlimited rate: the maximum at once


def test_concurrency_defaults_to_auto_and_takes_a_number_or_auto_only() -> None:
    assert DeliverySettings().concurrency == "auto"
    assert DeliverySettings().most_in_flight() == DeliverySettings().max_concurrency
    assert DeliverySettings(concurrency=64).most_in_flight() == 64
    assert DeliverySettings.model_validate({"concurrency": "64"}).concurrency == 64  # env text
    for bad in ("fast", 0, -1):
        with pytest.raises(ValidationError) as raised:
            DeliverySettings.model_validate({"concurrency": bad})
        assert "concurrency" in str(raised.value)
