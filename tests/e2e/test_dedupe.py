"""The dedupe window over real HTTP, against the sandbox, on both engines: the same
message again inside `dedupe_window_s` is answered with the first id and the status
`deduplicated`, is not sent a second time, and is counted in the metrics."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import TEMPLATE, Stack, order_data
from tests.e2e.engines import engine_stack  # noqa: F401  # `stack`, on both engines

SENT = frozenset({"sent", "delivered"})


async def windowed(stack: Stack) -> None:
    await stack.stop_gateway()
    await stack.start_gateway(app={"dedupe_window_s": 600.0})


def body(touser: str, n: int = 1) -> dict[str, Any]:
    return {"touser": touser, "template_id": TEMPLATE, "data": order_data(n)}


async def test_the_same_message_again_in_the_window_answers_the_first_id(stack: Stack) -> None:
    await windowed(stack)
    status, first = await stack.call("POST", "/v1/messages", json=body("oTwice_e2e"))
    assert status == 202, first
    first_id = first["data"]["id"]

    status, again = await stack.call("POST", "/v1/messages", json=body("oTwice_e2e"))

    assert status == 200, again
    assert (again["data"]["id"], again["data"]["status"]) == (first_id, "deduplicated")
    await stack.settled([first_id], SENT)
    assert len(await stack.inbox(touser="oTwice_e2e")) == 1
    _, metrics = await stack.call("GET", "/metrics")
    assert 'wxgate_messages_total{app="shop",outcome="deduplicated"} 1.0' in metrics


async def test_other_data_or_another_recipient_is_not_a_repeat(stack: Stack) -> None:
    await windowed(stack)
    ids = []
    for request in (body("oA_e2e"), body("oA_e2e", n=2), body("oB_e2e")):
        status, answer = await stack.call("POST", "/v1/messages", json=request)
        assert status == 202, answer
        ids.append(answer["data"]["id"])
    assert len(set(ids)) == 3
    await stack.settled(ids, SENT)


async def test_after_the_window_the_same_message_is_sent_again(stack: Stack) -> None:
    await windowed(stack)
    _, first = await stack.call("POST", "/v1/messages", json=body("oLater_e2e"))
    stack.clock.shift(601)

    status, again = await stack.call("POST", "/v1/messages", json=body("oLater_e2e"))

    assert status == 202, again
    assert again["data"]["id"] != first["data"]["id"]
    await stack.settled([first["data"]["id"], again["data"]["id"]], SENT)
    assert len(await stack.inbox(touser="oLater_e2e")) == 2


async def test_a_batch_repeating_a_recent_message_names_the_first_id(stack: Stack) -> None:
    await windowed(stack)
    _, first = await stack.call("POST", "/v1/messages", json=body("oInBatch_e2e"))
    batch = {
        "template_id": TEMPLATE,
        "data": order_data(1),
        "recipients": ["oInBatch_e2e", "oFresh_e2e", "oFresh_e2e"],
    }

    status, answer = await stack.call("POST", "/v1/messages/batch", json=batch)

    assert status == 202, answer
    repeated, fresh, fresh_again = answer["data"]["ids"]
    assert repeated == first["data"]["id"]
    assert fresh_again == fresh  # the same recipient twice in one batch: sent once
    await stack.settled([repeated, fresh], SENT)
    assert len(await stack.inbox(touser="oFresh_e2e")) == 1


async def test_without_a_window_repeats_are_sent(stack: Stack) -> None:
    ids = [await stack.send("oNoWindow_e2e") for _ in range(2)]
    assert ids[0] != ids[1]
    await stack.settled(ids, SENT)
