"""What a chaos run must show afterwards, computed from what the gateway and the sandbox say.

Every accepted id is stored and terminal (none lost, none stuck); each client_msg_id
is in the sandbox's inbox at most once, and every message the gateway calls sent has
its inbox entry with the same msgid; every dead or failed message says why; token
fetches stayed within one per lifetime plus one per storm; the sends WeChat saw never
exceeded the account's rate limit by more than 10% over any 1-second window; no known
secret or access token shows in any log line, answer or metric.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.intake import IntakeResult, Kind
from tests.chaos.stack import KNOWN_SECRETS

# What issue 4 allows over any 1-second window; the send bucket's burst takes half of
# it and scheduling between a permit and its request the rest (backends.base.send_burst).
RATE_TOLERANCE = 1.1
TERMINAL = frozenset({"sent", "delivered", "rejected", "failed", "dead"})
# The sandbox mints "90_" + 150 URL-safe characters, like WeChat's own tokens.
TOKEN_SHAPE = re.compile(r"90_[A-Za-z0-9_-]{100,}")
# What each kind of recipient may end as. "sent" is terminal: WeChat accepted the message
# and its report may still be on the way (or was one of the rare nonce collisions).
EXPECTED = {
    Kind.ORDINARY: frozenset({"delivered", "sent"}),
    Kind.BLOCKED: frozenset({"rejected", "sent"}),
    Kind.INVALID: frozenset({"failed"}),
}


class LeakScanner:
    """Counts appearances of the run's known secrets and of token-shaped strings."""

    def __init__(self, secrets: Iterable[str] = KNOWN_SECRETS) -> None:
        alternatives = [re.escape(s) for s in secrets] + [TOKEN_SHAPE.pattern]
        self._pattern = re.compile("|".join(alternatives).encode())
        self.scanned: Counter[str] = Counter()  # source -> bytes scanned
        self.hits: Counter[str] = Counter()  # source -> leaks found

    def scan(self, source: str, data: bytes) -> None:
        self.scanned[source] += len(data)
        found = len(self._pattern.findall(data))
        if found:
            self.hits[source] += found

    def scan_file(self, source: str, path: Path) -> None:
        if path.exists():
            self.scan(source, path.read_bytes())

    @property
    def leaks(self) -> int:
        return sum(self.hits.values())


@dataclass
class Figures:
    """What one run measured; `problems` is empty when every promise held."""

    engine: str
    messages: int
    accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    not_terminal: int = 0
    unexpected_outcome: int = 0
    stored_never_answered: int = 0
    inbox: int = 0
    inbox_duplicates: int = 0
    duplicates_absorbed: int = 0
    sent_missing_from_inbox: int = 0
    msgid_mismatches: int = 0
    dead_or_failed_without_reason: int = 0
    reports_lost: int = 0
    reports_acknowledged_not_applied: int = 0
    token_fetches: int = 0
    token_fetches_expected: int = 0
    rate_limit_per_s: float = 0.0
    busiest_second: int = 0  # the most template sends WeChat saw within any 1 s
    kills: int = 0
    api_kills: int = 0
    storms: int = 0
    redis_restarts: int = 0
    intake_requests: int = 0
    intake_retries: int = 0
    answers_5xx: dict[int, int] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)
    leaks: int = 0
    bytes_scanned: int = 0
    intake_s: float = 0.0
    elapsed_s: float = 0.0
    events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_records(
    figures: Figures, intake: IntakeResult, records: Mapping[str, Mapping[str, Any]]
) -> None:
    """Accepted = stored and terminal, each as its recipient kind says it must end."""
    figures.accepted = len(intake.accepted)
    figures.statuses = dict(Counter(str(r["status"]) for r in records.values()))
    lost = [mid for mid in intake.accepted if mid not in records]
    stuck = [
        mid for mid in intake.accepted if mid in records and _status(records, mid) not in TERMINAL
    ]
    odd = [
        f"{mid} ({kind}) ended {_status(records, mid)}"
        for mid, kind in intake.accepted.items()
        if mid in records and _status(records, mid) in TERMINAL
        and _status(records, mid) not in EXPECTED[kind]
    ]  # fmt: skip
    figures.lost, figures.not_terminal, figures.unexpected_outcome = len(lost), len(stuck), len(odd)
    figures.stored_never_answered = len(records.keys() - intake.accepted.keys())
    _problem(figures, lost, "accepted but not stored (LOST)")
    _problem(figures, stuck, "accepted but not terminal")
    _problem(figures, odd, "ended other than its recipient allows")
    _problem(figures, intake.refused, "intake refused")


def check_inbox(
    figures: Figures, records: Mapping[str, Mapping[str, Any]], inbox: list[Mapping[str, Any]]
) -> None:
    """At most once in WeChat's inbox; every sent message there, with the stored msgid."""
    figures.inbox = len(inbox)
    counts = Counter(item["client_msg_id"] for item in inbox)
    twice = [f"{cid} x{n}" for cid, n in counts.items() if n > 1]
    figures.inbox_duplicates = len(twice)
    _problem(figures, twice, "client_msg_id more than once in the inbox (DUPLICATE)")
    by_id = {item["client_msg_id"]: item for item in inbox}
    missing, mismatched = [], []
    for mid, record in records.items():
        if record["status"] not in ("sent", "delivered", "rejected"):
            continue
        item = by_id.get(mid)
        if item is None:
            missing.append(mid)
        elif record["msgid"] is not None and int(record["msgid"]) != int(item["msgid"]):
            mismatched.append(f"{mid}: stored {record['msgid']}, WeChat {item['msgid']}")
    figures.sent_missing_from_inbox, figures.msgid_mismatches = len(missing), len(mismatched)
    _problem(figures, missing, "sent according to the gateway, never received by WeChat")
    _problem(figures, mismatched, "msgid differs from WeChat's")


def check_reasons(figures: Figures, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Every dead or failed message carries an errcode, or an event saying why."""
    silent = [
        mid
        for mid, record in records.items()
        if record["status"] in ("dead", "failed") and not _has_reason(record)
    ]
    figures.dead_or_failed_without_reason = len(silent)
    _problem(figures, silent, "dead or failed without an errcode or a reason")


def _has_reason(record: Mapping[str, Any]) -> bool:
    if record.get("last_errcode") is not None:
        return True
    final = [e for e in record.get("events", ()) if e["kind"] in ("dead", "failed")]
    return bool(final and final[-1]["note"])


def check_reports(figures: Figures, callbacks: Mapping[str, int]) -> None:
    """Every report the gateway acknowledged was applied: WeChat sends one report per
    message it took, so the messages left `sent` are the reports it could not deliver
    (the API was down through its retries), no more. One spare for the rare nonce two
    reports happen to share (the sandbox draws them from 10^10)."""
    figures.reports_lost = callbacks["failed"]
    unapplied = figures.statuses.get("sent", 0) - callbacks["failed"]
    figures.reports_acknowledged_not_applied = unapplied
    if unapplied > 1:
        figures.problems.append(f"{unapplied} reports acknowledged but never applied")


def check_tokens(figures: Figures, fetches: int, expected: int) -> None:
    figures.token_fetches, figures.token_fetches_expected = fetches, expected
    if fetches > expected:
        figures.problems.append(f"{fetches} token fetches, at most {expected} expected")


def check_rate(figures: Figures, busiest_second: int, rate_limit_per_s: float) -> None:
    """WeChat never saw more than the rate limit plus 10% within any 1-second window
    (every send request counted, resends WeChat de-duplicated included)."""
    figures.busiest_second, figures.rate_limit_per_s = busiest_second, rate_limit_per_s
    if busiest_second > RATE_TOLERANCE * rate_limit_per_s:
        figures.problems.append(
            f"{busiest_second} sends within one second, over {RATE_TOLERANCE:g}x the "
            f"rate limit of {rate_limit_per_s:g}/s"
        )


def check_answers(figures: Figures, answers: Mapping[int, int]) -> None:
    figures.answers_5xx = {status: n for status, n in answers.items() if status >= 500}
    if answers.get(500):
        figures.problems.append(f"the API answered 500 {answers[500]} times")


def check_leaks(figures: Figures, scanner: LeakScanner) -> None:
    figures.leaks = scanner.leaks
    figures.bytes_scanned = sum(scanner.scanned.values())
    for source, hits in sorted(scanner.hits.items()):
        figures.problems.append(f"{hits} secret or token string(s) in {source}")


def _status(records: Mapping[str, Mapping[str, Any]], mid: str) -> str:
    return str(records[mid]["status"])


def _problem(figures: Figures, items: list[str], what: str, shown: int = 5) -> None:
    if items:
        more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
        figures.problems.append(f"{len(items)} {what}: {', '.join(items[:shown])}{more}")
