"""Counters behind `GET /sandbox/stats`: token fetches by endpoint, sends by errcode,
duplicates absorbed, callback deliveries and the faults injected.

`sends` and `sends_total` count template/send; `sends_by_kind` counts every send
path by errcode, under `template`, `subscribe` (bizsend) and `miniprogram`
(subscribe/send), so a test can show that nothing reached the sandbox. Foreign token
refreshes (played by `POST /sandbox/tokens/foreign-refresh`) are not token fetches.
Callback counters are per push (one per accepted send or played user action):
`sent` when its delivery starts, then `acknowledged` or `failed` (after every
retry); `retries` counts the extra attempts.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from wxgate.wechat.kinds import MessageKind

TOKEN = "token"
STABLE_TOKEN = "stable_token"
STABLE_TOKEN_FORCE = "stable_token_force"

CALLBACK_SENT = "sent"
CALLBACK_ACKNOWLEDGED = "acknowledged"
CALLBACK_FAILED = "failed"
CALLBACK_RETRIES = "retries"

# Always listed, even at zero; injected errcodes other than -1 appear once they happen.
_FAULT_NAMES = ("errcode_-1", "http_502", "hang", "hang_after_send", "reset", "latency")


class SandboxStats:
    """One set of counters per sandbox; `clear` starts them again (in place, so holders keep it)."""

    def __init__(self) -> None:
        self.token_fetches: dict[str, int] = {}
        self.sends_by_kind: dict[MessageKind, defaultdict[int, int]] = {
            kind: defaultdict(int) for kind in MessageKind
        }
        self.sends = self.sends_by_kind[MessageKind.TEMPLATE]
        self.duplicates_absorbed = 0
        self.foreign_token_refreshes = 0
        self.callbacks: dict[str, int] = {}
        self.faults: defaultdict[str, int] = defaultdict(int)
        self.clear()

    def clear(self) -> None:
        self.token_fetches = {TOKEN: 0, STABLE_TOKEN: 0, STABLE_TOKEN_FORCE: 0}
        for sends in self.sends_by_kind.values():
            sends.clear()
        self.duplicates_absorbed = 0
        self.foreign_token_refreshes = 0
        self.callbacks = {
            CALLBACK_SENT: 0,
            CALLBACK_ACKNOWLEDGED: 0,
            CALLBACK_FAILED: 0,
            CALLBACK_RETRIES: 0,
        }
        self.faults.clear()

    def to_json(self, *, inbox: int, callbacks_pending: int) -> dict[str, Any]:
        return {
            "token_fetches": dict(self.token_fetches),
            "token_fetches_total": sum(self.token_fetches.values()),
            "sends": _by_errcode(self.sends),
            "sends_total": sum(self.sends.values()),
            "sends_by_kind": {
                kind.value: _by_errcode(sends) for kind, sends in self.sends_by_kind.items()
            },
            "duplicates_absorbed": self.duplicates_absorbed,
            "foreign_token_refreshes": self.foreign_token_refreshes,
            "inbox": inbox,
            "callbacks": {**self.callbacks, "pending": callbacks_pending},
            "faults_injected": {**dict.fromkeys(_FAULT_NAMES, 0), **self.faults},
        }


def _by_errcode(sends: dict[int, int]) -> dict[str, int]:
    return {str(code): n for code, n in sorted(sends.items())}
