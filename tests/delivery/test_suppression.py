"""What suppresses a recipient after a send, and the worker listener that records it."""

from __future__ import annotations

from wxgate.backends.suppressions import SuppressionReason
from wxgate.delivery.suppression import SuppressionRecorder, reason_for_errcode, reason_for_report
from wxgate.wechat.kinds import MessageKind
from wxgate.wechat.report import ReportOutcome

from .conftest import APP, MakeRig


def test_43004_40003_and_a_template_43101_suppress() -> None:
    assert reason_for_errcode(43004, MessageKind.TEMPLATE) is SuppressionReason.NOT_FOLLOWING
    assert reason_for_errcode(40003, MessageKind.TEMPLATE) is SuppressionReason.INVALID_OPENID
    assert reason_for_errcode(43101, MessageKind.TEMPLATE) is SuppressionReason.REFUSED_TEMPLATES


def test_a_subscribe_43101_is_a_spent_grant_not_a_suppression() -> None:
    assert reason_for_errcode(43101, MessageKind.SUBSCRIBE) is None
    assert reason_for_errcode(43101, MessageKind.MINIPROGRAM) is None


def test_other_answers_and_reports_do_not_suppress() -> None:
    assert reason_for_errcode(None, MessageKind.TEMPLATE) is None
    assert reason_for_errcode(43117, MessageKind.TEMPLATE) is None
    assert reason_for_report(ReportOutcome.FREQ_LIMIT) is None
    assert reason_for_report(ReportOutcome.USER_BLOCK) is SuppressionReason.USER_BLOCK


async def test_the_worker_s_refused_sends_are_recorded(make_rig: MakeRig) -> None:
    rig = await make_rig()
    recorder = SuppressionRecorder(rig.backend.suppression_store())
    worker = rig.new_worker(listeners=[recorder])
    await rig.enqueue("unfollowed_a", "invalid_b", "refused_c", "oFINE")
    await worker.drain()
    await recorder.flush()
    found = await rig.backend.suppression_store().find(
        APP, ["unfollowed_a", "invalid_b", "refused_c", "oFINE"]
    )
    assert {openid: entry.reason for openid, entry in found.items()} == {
        "unfollowed_a": SuppressionReason.NOT_FOLLOWING,
        "invalid_b": SuppressionReason.INVALID_OPENID,
        "refused_c": SuppressionReason.REFUSED_TEMPLATES,
    }
    assert found["unfollowed_a"].errcode == 43004
