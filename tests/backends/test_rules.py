"""The storage rules of backends/base.py, which both engines only serialise: what each
outcome writes, what a settlement changes, how a stored record reads back."""

from __future__ import annotations

import pytest

from wxgate.backends.base import (
    RECORD_FIELDS,
    EventKind,
    Lease,
    MessageRecord,
    Outcome,
    Report,
    Settlement,
    Status,
    decode_record,
    settle_change,
)
from wxgate.wechat.errors import Category
from wxgate.wechat.kinds import MessageKind

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("outcome", "status", "kind", "counts", "waits", "keeps_msgid"),
    [
        (Outcome.SENT, Status.SENT, EventKind.SENT, True, False, True),
        (Outcome.RETRY, Status.QUEUED, EventKind.RETRY, True, True, False),
        (Outcome.FAILED, Status.FAILED, EventKind.FAILED, True, False, False),
        (Outcome.DEAD, Status.DEAD, EventKind.DEAD, True, False, False),
        (Outcome.RELEASE, Status.QUEUED, EventKind.RELEASED, False, True, False),
    ],
)
def test_each_outcome_says_what_it_writes(
    outcome: Outcome, status: Status, kind: EventKind, counts: bool, waits: bool, keeps_msgid: bool
) -> None:
    assert (
        outcome.status,
        outcome.event_kind,
        outcome.counts_attempt,
        outcome.waits,
        outcome.keeps_msgid,
    ) == (status, kind, counts, waits, keeps_msgid)


def _lease() -> Lease:
    record = MessageRecord("m1", "shop", "o1", "t1", {}, Status.SENDING)
    return Lease(record, "lease-token", T0 + 60)


def test_a_retry_waits_counts_an_attempt_and_replaces_the_last_error() -> None:
    retry = Settlement(
        _lease(), Outcome.RETRY, next_attempt_at=T0 + 5, errcode=-1, category=Category.TRANSIENT
    )
    change = settle_change(retry, T0)
    assert (change.status, change.counted, change.next_attempt_at) == (Status.QUEUED, 1, T0 + 5)
    assert change.answered and change.category is Category.TRANSIENT
    assert (change.msgid, change.sent_at) == (None, None)
    assert (change.event.kind, change.event.errcode) == (EventKind.RETRY, -1)


def test_a_release_without_an_answer_keeps_the_last_error_and_no_attempt() -> None:
    change = settle_change(Settlement(_lease(), Outcome.RELEASE, note="paused"), T0)
    assert (change.counted, change.answered) == (0, False)
    assert change.next_attempt_at == T0  # due again at once unless a time is given
    assert change.event.note == "paused"


def test_only_a_sent_outcome_keeps_its_msgid_and_sent_time() -> None:
    sent = settle_change(Settlement(_lease(), Outcome.SENT, msgid=2**60), T0)
    assert (sent.msgid, sent.sent_at, sent.next_attempt_at) == (2**60, T0, None)
    failed = settle_change(Settlement(_lease(), Outcome.FAILED, msgid=2**60, errcode=40003), T0)
    assert (failed.msgid, failed.sent_at) == (None, None)


def test_a_stored_record_reads_the_same_from_text_and_from_typed_columns() -> None:
    typed = ["m1", "shop", "o1", "t1", '{"touser": "o1"}', "sent", 2, 5.0, "k", 2**60, -1]
    typed += ["busy", "TRANSIENT", None, "trace", "batch-1", 4, 1, 2.5, 3, None]
    typed += ["subscribe", 1, 9.5, 1, "https://hooks.example.com/x"]
    as_text = [None if value is None else str(value) for value in typed]
    assert len(typed) == len(RECORD_FIELDS)
    for values in (typed, as_text):
        record = decode_record(values)
        assert record.payload == {"touser": "o1"} and record.status is Status.SENT
        assert (record.attempts, record.msgid, record.last_errcode) == (2, 2**60, -1)
        assert record.last_category is Category.TRANSIENT
        assert (record.batch_id, record.batch_position) == ("batch-1", 4)
        assert (record.kind, record.urgent, record.send_at) == (MessageKind.SUBSCRIBE, True, 9.5)
        assert (record.notify, record.callback_url) == (True, "https://hooks.example.com/x")
        assert (record.created_at, record.sent_at, record.delivered_at) == (1.0, 3.0, None)
        assert isinstance(record.created_at, float)


def test_a_field_added_later_reads_as_its_default_when_absent() -> None:
    values: list[object] = ["m1", "shop", "o1", "t1", "{}", "queued", "0", "1.0"]
    values += [None] * (len(RECORD_FIELDS) - len(values))
    values[RECORD_FIELDS.index("created_at")] = values[RECORD_FIELDS.index("updated_at")] = "1"
    record = decode_record(values)
    assert (record.kind, record.urgent, record.send_at) == (MessageKind.TEMPLATE, False, None)
    urgent = RECORD_FIELDS.index("urgent")
    assert decode_record([*values[:urgent], "0", *values[urgent + 1 :]]).urgent is False


def test_a_report_moves_a_message_to_delivered_or_rejected_only() -> None:
    Report("shop", 1, Status.DELIVERED, "success")
    Report("shop", 1, Status.REJECTED, "failed:user block")
    with pytest.raises(ValueError, match="delivered or rejected"):
        Report("shop", 1, Status.FAILED, "failed:user block")
