"""Fault injection: what may go wrong on purpose, and the dice that decide each request.

`FaultSettings` is the validated configuration behind `/sandbox/faults` (a POST
merges into it); `FaultDice` draws, per request, whether a transport fault
(HTTP 502, a hang, a hang after the send was carried out, a reset), an injected
errcode or a token-endpoint -1 applies. Transport faults and errcodes apply to the
three send paths alike (template/send, subscribe/bizsend, subscribe/send).

Two settings play WeChat behaviours that are reported but unverified
(docs/wechat-protocol.md §2.2): `report_zero_msgid`, a TEMPLATESENDJOBFINISH for a
send that carried a client_msg_id has MsgID 0 (one 2023 community report); and
`duplicate_answer`, what a repeated client_msg_id within 10 minutes is answered:
`original` (errcode 0 with the first msgid, the default) or `40241`.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from wxgate.sandbox.errors import FaultConfigError
from wxgate.wechat.errors import CATALOGUE, OK, SYSTEM_BUSY

MAX_LATENCY_MS = 120_000.0

T = TypeVar("T")


class FaultKind(enum.StrEnum):
    """Transport faults, named as they are counted in `/sandbox/stats`."""

    HTTP_502 = "http_502"
    HANG = "hang"
    HANG_AFTER_SEND = "hang_after_send"  # carried out, then never answered
    RESET = "reset"
    LATENCY = "latency"


DUPLICATE_ORIGINAL = "original"
DUPLICATE_40241 = "40241"
DUPLICATE_ANSWERS = (DUPLICATE_ORIGINAL, DUPLICATE_40241)


def errcode_fault_name(errcode: int) -> str:
    return f"errcode_{errcode}"


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultConfigError(f"{name} must be a number from 0 to 1")
    return float(value)


def _latency(name: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= MAX_LATENCY_MS:
        raise FaultConfigError(f"{name} must be from 0 to {MAX_LATENCY_MS:g} milliseconds")
    return float(value)


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultConfigError(f"{name} must be a whole number >= 0, or null for no limit")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FaultConfigError(f"{name} must be true or false")
    return value


def _duplicate_answer(name: str, value: Any) -> str:
    if value not in DUPLICATE_ANSWERS:
        raise FaultConfigError(f"{name} must be one of {', '.join(DUPLICATE_ANSWERS)}")
    return str(value)


def _errcode_rates(name: str, value: Any) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, Mapping):
        raise FaultConfigError(f'{name} must be an object like {{"45011": 0.1}}')
    rates: list[tuple[int, float]] = []
    for key, rate in value.items():
        try:
            code = int(key)
        except (TypeError, ValueError):
            raise FaultConfigError(f"{name}: {key!r} is not an errcode") from None
        if code == OK or code not in CATALOGUE:
            raise FaultConfigError(f"{name}: {code} is not an error code of the catalogue")
        if (r := _rate(f"{name}.{key}", rate)) > 0:
            rates.append((code, r))
    return tuple(rates)


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "error_rate": _rate,
    "http_502_rate": _rate,
    "hang_rate": _rate,
    "hang_after_send_rate": _rate,
    "reset_rate": _rate,
    "latency_ms": _latency,
    "daily_quota": _limit,
    "minute_limit": _limit,
    "errcode_rates": _errcode_rates,
    "token_error_rate": _rate,
    "report_zero_msgid": _flag,
    "duplicate_answer": _duplicate_answer,
}
EXPIRE_TOKENS = "expire_tokens"


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """What `/sandbox/faults` holds; all zero/None means a well-behaved WeChat."""

    error_rate: float = 0.0
    http_502_rate: float = 0.0
    hang_rate: float = 0.0
    hang_after_send_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    daily_quota: int | None = None
    minute_limit: int | None = None
    errcode_rates: tuple[tuple[int, float], ...] = ()
    token_error_rate: float = 0.0
    report_zero_msgid: bool = False
    duplicate_answer: str = DUPLICATE_ORIGINAL
    # Cumulative thresholds for one draw each, precomputed so a request does no arithmetic.
    transport_table: tuple[tuple[float, FaultKind], ...] = field(init=False, repr=False)
    errcode_table: tuple[tuple[float, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        transport = _cumulative(
            [
                (self.http_502_rate, FaultKind.HTTP_502),
                (self.hang_rate, FaultKind.HANG),
                (self.hang_after_send_rate, FaultKind.HANG_AFTER_SEND),
                (self.reset_rate, FaultKind.RESET),
            ],
            "http_502_rate + hang_rate + hang_after_send_rate + reset_rate",
        )
        errcodes = _cumulative(
            [(self.error_rate, SYSTEM_BUSY), *((r, c) for c, r in self.errcode_rates)],
            "error_rate + errcode_rates",
        )
        object.__setattr__(self, "transport_table", transport)
        object.__setattr__(self, "errcode_table", errcodes)

    @property
    def disturbs_transport(self) -> bool:
        return bool(self.transport_table) or self.latency_ms > 0

    def merge(self, changes: Mapping[str, Any]) -> tuple[FaultSettings, bool]:
        """These settings with `changes` applied, and whether every token must expire now."""
        unknown = sorted(set(changes) - set(_VALIDATORS) - {EXPIRE_TOKENS})
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {', '.join(unknown)}")
        expire = changes.get(EXPIRE_TOKENS, False)
        if not isinstance(expire, bool):
            raise FaultConfigError(f"{EXPIRE_TOKENS} must be true or false")
        values = {k: _VALIDATORS[k](k, v) for k, v in changes.items() if k != EXPIRE_TOKENS}
        return replace(self, **values), expire

    def to_json(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "http_502_rate": self.http_502_rate,
            "hang_rate": self.hang_rate,
            "hang_after_send_rate": self.hang_after_send_rate,
            "reset_rate": self.reset_rate,
            "latency_ms": self.latency_ms,
            "daily_quota": self.daily_quota,
            "minute_limit": self.minute_limit,
            "errcode_rates": {str(code): rate for code, rate in self.errcode_rates},
            "token_error_rate": self.token_error_rate,
            "report_zero_msgid": self.report_zero_msgid,
            "duplicate_answer": self.duplicate_answer,
        }


def _cumulative(pairs: list[tuple[float, T]], what: str) -> tuple[tuple[float, T], ...]:
    table: list[tuple[float, T]] = []
    total = 0.0
    for rate, outcome in pairs:
        if rate > 0:
            total += rate
            table.append((total, outcome))
    if total > 1.0 + 1e-9:
        raise FaultConfigError(f"{what} must not exceed 1 (got {total:g})")
    return tuple(table)


class FaultDice:
    """Draws the faults of one request from the settings (seedable for tests)."""

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = (rng if rng is not None else random.Random()).random

    def transport(self, settings: FaultSettings) -> FaultKind | None:
        return _pick(settings.transport_table, self._random())

    def errcode(self, settings: FaultSettings) -> int | None:
        return _pick(settings.errcode_table, self._random())

    def token_error(self, settings: FaultSettings) -> bool:
        return self._random() < settings.token_error_rate


def _pick(table: tuple[tuple[float, T], ...], draw: float) -> T | None:
    for threshold, outcome in table:
        if draw < threshold:
            return outcome
    return None
