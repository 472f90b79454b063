"""Counters behind `GET /sandbox/stats`: token fetches by endpoint, sends by errcode,
duplicates absorbed, callback deliveries and the faults injected.

Callback counters are per report (one per accepted send): `sent` when its
delivery starts, then `acknowledged` or `failed` (after every retry);
`retries` counts the extra attempts.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

TOKEN = "token"
STABLE_TOKEN = "stable_token"
STABLE_TOKEN_FORCE = "stable_token_force"

CALLBACK_SENT = "sent"
CALLBACK_ACKNOWLEDGED = "acknowledged"
CALLBACK_FAILED = "failed"
CALLBACK_RETRIES = "retries"

# Always listed, even at zero; injected errcodes other than -1 appear once they happen.
_FAULT_NAMES = ("errcode_-1", "http_502", "hang", "reset", "latency")


class SandboxStats:
    """One set of counters per sandbox; `clear` starts them again (in place, so holders keep it)."""

    def __init__(self) -> None:
        self.token_fetches: dict[str, int] = {}
        self.sends: defaultdict[int, int] = defaultdict(int)
        self.duplicates_absorbed = 0
        self.callbacks: dict[str, int] = {}
        self.faults: defaultdict[str, int] = defaultdict(int)
        self.clear()

    def clear(self) -> None:
        self.token_fetches = {TOKEN: 0, STABLE_TOKEN: 0, STABLE_TOKEN_FORCE: 0}
        self.sends.clear()
        self.duplicates_absorbed = 0
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
            "sends": {str(code): n for code, n in sorted(self.sends.items())},
            "sends_total": sum(self.sends.values()),
            "duplicates_absorbed": self.duplicates_absorbed,
            "inbox": inbox,
            "callbacks": {**self.callbacks, "pending": callbacks_pending},
            "faults_injected": {**dict.fromkeys(_FAULT_NAMES, 0), **self.faults},
        }
