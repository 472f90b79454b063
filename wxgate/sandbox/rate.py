"""When each account's sends arrived, so a test can ask how fast a gateway really sent:
the busiest window of any length (`GET /sandbox/send-rate`).

WeChat enforces its limits per account, and a gateway's `rate_limit_per_s` is per
account too, so arrivals are kept per appid. Every send request (template/send,
subscribe/bizsend, subscribe/send) carrying a valid token of the right kind counts,
whatever it is answered (a duplicate absorbed by the
client_msg_id window or a refusal costs WeChat a request all the same). One float
per send (8 bytes, in an `array`), beside the inbox's tuple per accepted message.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Busiest:
    """The most sends that arrived within `window_s` of each other, and when."""

    sends: int
    started_at: float | None
    ended_at: float | None

    def to_json(self) -> dict[str, object]:
        return {"sends": self.sends, "from": self.started_at, "to": self.ended_at}


class SendArrivals:
    """Arrival times of sends, per appid."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: dict[str, array[float]] = {}

    def record(self, appid: str, now: float) -> None:
        times = self._times.get(appid)
        if times is None:
            times = self._times[appid] = array("d")
        times.append(now)

    def clear(self) -> None:
        self._times.clear()

    def appids(self) -> list[str]:
        return sorted(self._times)

    def count(self, appid: str) -> int:
        return len(self._times.get(appid, ()))

    def busiest(self, appid: str, window_s: float) -> Busiest:
        """The largest number of sends whose arrival times all lie within a half-open
        window [t, t + window_s) — the sliding window's maximum, exactly."""
        times = sorted(self._times.get(appid, ()))  # a stepped wall clock may disorder them
        best, best_first, first = 0, 0, 0
        for last, arrived in enumerate(times):
            while arrived - times[first] >= window_s:
                first += 1
            if last - first + 1 > best:
                best, best_first = last - first + 1, first
        if best == 0:
            return Busiest(0, None, None)
        return Busiest(best, times[best_first], times[best_first + best - 1])
