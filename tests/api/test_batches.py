"""POST /v1/messages/batch and GET /v1/batches/{id}."""

from __future__ import annotations

from typing import Any

from wxgate.backends.base import Outcome, Status

from .conftest import Gateway

SHARED = {
    "template_id": "TPL_order_shipped",
    "url": "https://shop.example.com/orders",
    "data": {"thing1": {"value": "蓝色保温杯"}, "time3": {"value": "2024-06-01 15:01"}},
}


def batch(recipients: list[Any], **extra: Any) -> dict[str, Any]:
    return {**SHARED, "recipients": recipients, **extra}


async def test_batch_stores_one_message_per_recipient_under_one_batch_id(
    gateway: Gateway,
) -> None:
    status, body, _ = await gateway.post("/v1/messages/batch", batch(["oA", "oB", "oC"]))
    assert status == 202
    ids, batch_id = body["data"]["ids"], body["data"]["batch_id"]
    assert len(set(ids)) == 3
    records = [await gateway.backend.get(message_id) for message_id in ids]
    assert [r.touser for r in records if r] == ["oA", "oB", "oC"]
    assert {r.batch_id for r in records if r} == {batch_id}
    assert all(r and r.payload["data"] == SHARED["data"] for r in records)


async def test_recipient_data_is_merged_over_the_shared_data(gateway: Gateway) -> None:
    own = {"touser": "oB", "data": {"thing1": {"value": "红色保温杯"}}, "url": "https://x.cn/b"}
    _, body, _ = await gateway.post("/v1/messages/batch", batch(["oA", own]))
    first, second = [await gateway.backend.get(i) for i in body["data"]["ids"]]
    assert first and first.payload["data"]["thing1"]["value"] == "蓝色保温杯"
    assert second and second.payload["data"]["thing1"]["value"] == "红色保温杯"
    assert second.payload["data"]["time3"]["value"] == "2024-06-01 15:01"
    assert second.payload["url"] == "https://x.cn/b"


async def test_one_invalid_recipient_refuses_the_whole_batch(gateway: Gateway) -> None:
    bad = {"touser": "oB", "data": {"thing1": {"value": "x" * 21}}}
    status, body, _ = await gateway.post("/v1/messages/batch", batch(["oA", bad, "o C"]))
    assert status == 400
    locs = [error["loc"] for error in body["data"]["errors"]]
    assert ["body", "recipients", 1, "data", "thing1", "value"] in locs
    assert ["body", "recipients", 2, "touser"] in locs
    assert sum((await gateway.backend.counts()).values()) == 0


async def test_a_recipient_of_the_wrong_type_is_named_by_index(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages/batch", batch(["oA", 42]))
    assert status == 400
    assert body["data"]["errors"][0]["loc"][:3] == ["body", "recipients", 1]


async def test_empty_and_oversized_recipient_lists_are_refused(gateway: Gateway) -> None:
    empty_status, _, _ = await gateway.post("/v1/messages/batch", batch([]))
    big_status, big, _ = await gateway.post(
        "/v1/messages/batch", batch([f"o{n}" for n in range(10_001)])
    )
    assert (empty_status, big_status) == (400, 400)
    assert big["data"]["errors"][0]["loc"] == ["body", "recipients"]


async def test_retried_batch_with_a_key_answers_the_same_batch_id_and_ids(
    gateway: Gateway,
) -> None:
    request = batch(["oA", "oB"], idempotency_key="campaign-7")
    first_status, first, _ = await gateway.post("/v1/messages/batch", request)
    again_status, again, _ = await gateway.post("/v1/messages/batch", request)
    assert (first_status, again_status) == (202, 200)
    assert again["data"] == first["data"]
    assert sum((await gateway.backend.counts()).values()) == 2
    record = await gateway.backend.get(first["data"]["ids"][1])
    assert record is not None and (record.idempotency_key, record.batch_position) == (None, 1)


async def test_batches_without_a_key_are_stored_twice(gateway: Gateway) -> None:
    _, first, _ = await gateway.post("/v1/messages/batch", batch(["oA"]))
    _, again, _ = await gateway.post("/v1/messages/batch", batch(["oA"]))
    assert first["data"]["batch_id"] != again["data"]["batch_id"]
    assert sum((await gateway.backend.counts()).values()) == 2


async def test_batch_counts_per_status(gateway: Gateway) -> None:
    _, body, _ = await gateway.post("/v1/messages/batch", batch(["oA", "oB", "oC"]))
    await gateway.settle(body["data"]["ids"][0], Outcome.FAILED, errcode=43004)
    status, counts, _ = await gateway.get(f"/v1/batches/{body['data']['batch_id']}")
    assert status == 200
    assert counts["data"]["total"] == 3
    assert counts["data"]["counts"][Status.QUEUED] == 2
    assert counts["data"]["counts"][Status.FAILED] == 1


async def test_unknown_batch_is_404(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/v1/batches/no-such-batch")
    assert status == 404 and body["code"] == 40400
