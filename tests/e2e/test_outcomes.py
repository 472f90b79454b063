"""One message per outcome, end to end: intake over HTTP, the worker, the sandbox, its
delivery report on the signed callback, and the record the API shows afterwards."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import APP, TEMPLATE, MakeStack, eventually, order_data


def kinds(record: dict[str, object]) -> list[str]:
    return [event["kind"] for event in record["events"]]  # type: ignore[attr-defined, index]


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_message_is_sent_then_delivered_by_the_callback(
    make_stack: MakeStack, mode: str
) -> None:
    stack = await make_stack(mode)
    message_id = await stack.send("oAlice_e2e", url="https://shop.example.com/o/1")

    [record] = await stack.settled([message_id], {"delivered"})

    [received] = await stack.inbox(client_msg_id=message_id)
    assert isinstance(record["msgid"], str)
    assert record["msgid"] == str(received["msgid"])  # exact: the msgid is above 2^53
    assert int(record["msgid"]) > 2**53
    assert record["report_status"] == "success"
    assert record["attempts"] == 1
    assert kinds(record)[:1] == ["accepted"]
    assert "sent" in kinds(record) and kinds(record)[-1] == "report"
    callbacks = (await stack.stats())["callbacks"]
    assert callbacks["acknowledged"] == 1 and callbacks["failed"] == 0


async def test_busy_recipient_is_retried_then_delivered(make_stack: MakeStack) -> None:
    stack = await make_stack()
    message_id = await stack.send("busy_dave")

    [record] = await stack.settled([message_id], {"delivered"})

    retries = [event for event in record["events"] if event["kind"] == "retry"]
    assert [event["errcode"] for event in retries] == [-1, -1]
    assert record["attempts"] == 3  # two answered -1, the third accepted
    assert (await stack.stats())["sends"] == {"-1": 2, "0": 1}


@pytest.mark.parametrize(
    ("touser", "template_id", "errcode", "category"),
    [
        ("invalid_grace", TEMPLATE, 40003, "RECIPIENT"),
        ("unfollowed_heidi", TEMPLATE, 43004, "RECIPIENT"),
        ("refused_ivan", TEMPLATE, 43101, "RECIPIENT"),
        ("oJudy_e2e", "bad_retired_template", 40037, "REQUEST"),
    ],
)
async def test_permanent_errors_fail_at_once(
    make_stack: MakeStack, touser: str, template_id: str, errcode: int, category: str
) -> None:
    stack = await make_stack()
    message_id = await stack.send(touser, template_id)

    [record] = await stack.settled([message_id])

    assert record["status"] == "failed"
    assert record["last_errcode"] == errcode
    assert record["last_category"].upper() == category
    assert record["attempts"] == 1
    assert record["msgid"] is None
    assert (await stack.stats())["sends_total"] == 1  # never retried


@pytest.mark.parametrize(
    ("touser", "report_status"),
    [("blocked_erin", "failed:user block"), ("sysfail_frank", "failed: system failed")],
)
async def test_report_of_failure_rejects_a_sent_message(
    make_stack: MakeStack, touser: str, report_status: str
) -> None:
    stack = await make_stack("safe")
    message_id = await stack.send(touser)

    [record] = await stack.settled([message_id])

    assert record["status"] == "rejected"
    assert record["report_status"] == report_status
    assert record["msgid"] is not None


async def test_reused_idempotency_key_sends_one_message(make_stack: MakeStack) -> None:
    stack = await make_stack()
    body = {"touser": "oKate_e2e", "template_id": TEMPLATE, "data": order_data(7)}

    first_status, first = await stack.call(
        "POST", "/v1/messages", json={**body, "idempotency_key": "order-7-shipped"}
    )
    again_status, again = await stack.call(
        "POST", "/v1/messages", json={**body, "idempotency_key": "order-7-shipped"}
    )
    header_status, by_header = await stack.call(
        "POST", "/v1/messages", json=body, headers={"Idempotency-Key": "order-7-shipped"}
    )

    assert (first_status, again_status, header_status) == (202, 200, 200)
    message_id = first["data"]["id"]
    assert again["data"]["id"] == by_header["data"]["id"] == message_id
    await stack.settled([message_id], {"delivered"})
    assert len(await stack.inbox(touser="oKate_e2e")) == 1
    assert (await stack.stats())["sends_total"] == 1
    status, listing = await stack.call("GET", "/v1/messages?touser=oKate_e2e")
    assert status == 200 and len(listing["data"]["items"]) == 1


async def test_batch_of_two_thousand_is_delivered_and_counted(make_stack: MakeStack) -> None:
    stack = await make_stack()
    recipients = [f"oBatch_{n:05d}" for n in range(2000)]
    body = {"app": APP, "template_id": TEMPLATE, "data": order_data(), "recipients": recipients}

    status, answer = await stack.call("POST", "/v1/messages/batch", json=body)

    assert status == 202, answer
    batch_id, ids = answer["data"]["batch_id"], answer["data"]["ids"]
    assert len(set(ids)) == 2000
    counts: dict[str, int] = {}

    async def all_delivered() -> bool:
        nonlocal counts
        _, progress = await stack.call("GET", f"/v1/batches/{batch_id}")
        counts = progress["data"]["counts"]
        assert sum(counts.values()) == progress["data"]["total"] == 2000
        return counts.get("delivered", 0) == 2000

    await eventually(all_delivered, 120.0, "2,000 delivered")  # 10 s idle, more if busy
    assert {status: n for status, n in counts.items() if n} == {"delivered": 2000}
    inbox = await stack.control.inbox(limit=1)
    assert inbox["total"] == 2000
    assert (await stack.stats())["sends_total"] == 2000
