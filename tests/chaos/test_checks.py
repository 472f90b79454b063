"""The campaign's checks catch what they are for: a chaos run that passes only because
its checks cannot fail would prove nothing. Each test feeds one kind of breakage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chaos import checks
from tests.chaos.checks import Figures, LeakScanner
from tests.chaos.intake import IntakeResult, Kind
from tests.chaos.stack import APP_SECRET


def record(status: str, msgid: int | None = 7, **extra: Any) -> dict[str, Any]:
    return {"status": status, "msgid": None if msgid is None else str(msgid), **extra}


def figures() -> Figures:
    return Figures(engine="sqlite", messages=2)


def test_an_accepted_id_missing_from_storage_is_reported_lost() -> None:
    result = figures()
    intake = IntakeResult(accepted={"A": Kind.ORDINARY, "B": Kind.ORDINARY})
    checks.check_records(result, intake, {"A": record("delivered")})
    assert result.lost == 1
    assert any("LOST" in problem for problem in result.problems)


def test_a_message_still_queued_or_sending_is_reported() -> None:
    result = figures()
    intake = IntakeResult(accepted={"A": Kind.ORDINARY, "B": Kind.ORDINARY})
    checks.check_records(result, intake, {"A": record("queued"), "B": record("sending")})
    assert result.not_terminal == 2 and result.problems


def test_an_ordinary_recipient_that_ended_dead_is_an_unexpected_outcome() -> None:
    result = figures()
    intake = IntakeResult(accepted={"A": Kind.ORDINARY, "B": Kind.INVALID})
    checks.check_records(result, intake, {"A": record("dead"), "B": record("failed")})
    assert result.unexpected_outcome == 1 and result.problems


def test_a_client_msg_id_twice_in_the_inbox_is_a_duplicate() -> None:
    result = figures()
    inbox = [{"client_msg_id": "A", "msgid": 7}, {"client_msg_id": "A", "msgid": 8}]
    checks.check_inbox(result, {"A": record("delivered")}, inbox)
    assert result.inbox_duplicates == 1
    assert any("DUPLICATE" in problem for problem in result.problems)


def test_a_sent_message_wechat_never_received_is_reported() -> None:
    result = figures()
    checks.check_inbox(result, {"A": record("sent")}, [])
    assert result.sent_missing_from_inbox == 1 and result.problems


def test_a_stored_msgid_other_than_wechats_is_reported() -> None:
    result = figures()
    checks.check_inbox(result, {"A": record("sent", msgid=7)}, [{"client_msg_id": "A", "msgid": 8}])
    assert result.msgid_mismatches == 1 and result.problems


def test_a_dead_message_without_errcode_or_note_is_reported() -> None:
    result = figures()
    silent = record("dead", last_errcode=None, events=[{"kind": "dead", "note": ""}])
    explained = record("dead", last_errcode=None, events=[{"kind": "dead", "note": "expired"}])
    coded = record("failed", last_errcode=40003, events=[])
    checks.check_reasons(result, {"A": silent, "B": explained, "C": coded})
    assert result.dead_or_failed_without_reason == 1 and result.problems


def test_more_token_fetches_than_expected_are_reported() -> None:
    result = figures()
    checks.check_tokens(result, fetches=3, expected=2)
    assert result.problems


def test_a_500_answer_is_reported_and_a_503_is_not() -> None:
    result = figures()
    checks.check_answers(result, {202: 10, 503: 2})
    assert result.problems == [] and result.answers_5xx == {503: 2}
    checks.check_answers(result, {202: 10, 500: 1})
    assert result.problems


def test_the_scanner_finds_a_secret_and_a_token_in_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    token = "90_" + "x" * 150
    log.write_text(f'{{"event": "oops", "secret": "{APP_SECRET}"}}\n{{"token": "{token}"}}\n')
    scanner = LeakScanner()
    scanner.scan_file("worker log", log)
    scanner.scan("answer", b'{"code": 0, "data": "90_***"}')
    result = figures()
    checks.check_leaks(result, scanner)
    assert result.leaks == 2
    assert result.problems == ["2 secret or token string(s) in worker log"]
