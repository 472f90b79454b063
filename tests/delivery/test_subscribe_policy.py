"""The policy for kinds without client_msg_id: an outcome nobody knows is never resent
blindly (UNKNOWN); what is known not to have reached WeChat, or what WeChat answered,
is decided as for template messages."""

from __future__ import annotations

import random

import pytest

from wxgate.config import DeliverySettings
from wxgate.delivery.policy import Action, decide
from wxgate.wechat.errors import TransportError, error_for

NOW = 1_800_000_000.0
SETTINGS = DeliverySettings()


def _decide(result: object, *, resend_safe: bool) -> Action:
    rng = random.Random(7)
    return decide(result, 0, SETTINGS, NOW, rng, resend_safe=resend_safe).action  # type: ignore[arg-type]


@pytest.mark.parametrize("request_sent", [True, None])
def test_a_transport_failure_that_may_have_reached_wechat_is_unknown(request_sent: bool | None):
    timeout = TransportError("POST /cgi-bin/message/subscribe/bizsend: read timed out")
    timeout.request_sent = request_sent
    assert _decide(timeout, resend_safe=False) is Action.UNKNOWN
    assert _decide(timeout, resend_safe=True) is Action.RETRY


def test_a_request_that_never_left_is_retried():
    refused = TransportError("cannot connect", request_sent=False)
    assert _decide(refused, resend_safe=False) is Action.RETRY


@pytest.mark.parametrize(
    ("errcode", "action"),
    [
        (-1, Action.RETRY),  # busy: WeChat answered, so it did not take the message
        (43108, Action.RETRY),  # concurrent sends to one openid
        (43101, Action.FAILED),  # no grant
        (47003, Action.FAILED),  # a value breaks its rule
        (45103, Action.CONFIG),  # a token of the other account kind
        (48001, Action.CONFIG),
    ],
)
def test_an_answer_from_wechat_is_decided_by_its_category(errcode: int, action: Action):
    assert _decide(error_for(errcode, ""), resend_safe=False) is action
