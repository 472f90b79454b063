"""POST/GET /v1/messages and replay, against a real SQLite file over real HTTP."""

from __future__ import annotations

import random

from wxgate.backends.base import Outcome, Status
from wxgate.clock import FakeClock

from .conftest import Gateway, GatewayFactory, app_config, make_settings, message_body

BIG_MSGID = 3487542469355618313  # seen from WeChat; above 2**53


async def test_accepted_message_is_stored_and_answered_202(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages", message_body())
    assert status == 202
    assert body["code"] == 0 and body["msg"] == "ok"
    assert body["data"]["status"] == "queued"
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None
    assert record.app == "default"
    assert record.payload == message_body()  # the template/send body, no client_msg_id
    assert "client_msg_id" not in record.payload


async def test_accepted_message_counts_in_the_accepted_metric(gateway: Gateway) -> None:
    await gateway.post("/v1/messages", message_body())
    accepted = gateway.metrics.registry.get_sample_value(
        "wxgate_messages_total", {"app": "default", "outcome": "accepted"}
    )
    assert accepted == 1.0


async def test_an_accepted_message_marks_intake_busy_for_a_worker_beside_it(
    gateway: Gateway,
) -> None:
    intake = gateway.app.state.wxgate.intake  # what a --role all worker yields to
    assert not intake.recent()
    await gateway.post("/v1/messages", message_body())
    assert intake.recent()


async def test_same_idempotency_key_in_body_answers_first_id_with_200(gateway: Gateway) -> None:
    first_status, first, _ = await gateway.post(
        "/v1/messages", message_body(idempotency_key="order-1")
    )
    again_status, again, _ = await gateway.post(
        "/v1/messages", message_body(idempotency_key="order-1")
    )
    assert (first_status, again_status) == (202, 200)
    assert again["data"]["id"] == first["data"]["id"]
    assert (await gateway.backend.counts())[Status.QUEUED] == 1


async def test_idempotency_key_header_deduplicates_like_the_body_field(gateway: Gateway) -> None:
    headers = {"Idempotency-Key": "order-2"}
    _, first, _ = await gateway.post("/v1/messages", message_body(), headers=headers)
    status, again, _ = await gateway.post("/v1/messages", message_body(), headers=headers)
    _, via_body, _ = await gateway.post("/v1/messages", message_body(idempotency_key="order-2"))
    assert status == 200
    assert first["data"]["id"] == again["data"]["id"] == via_body["data"]["id"]


async def test_different_keys_in_header_and_body_are_refused(gateway: Gateway) -> None:
    status, body, _ = await gateway.post(
        "/v1/messages",
        message_body(idempotency_key="a"),
        headers={"Idempotency-Key": "b"},
    )
    assert status == 400 and body["code"] == 40000
    assert body["data"]["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert (await gateway.backend.counts())[Status.QUEUED] == 0


async def test_template_rule_violation_is_400_with_field_path(gateway: Gateway) -> None:
    body = message_body(data={"thing1": {"value": "一二三四五六七八九十一二三四五六七八九十超"}})
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    [error] = answer["data"]["errors"]
    assert error["loc"] == ["body", "data", "thing1", "value"]
    assert "20" in error["msg"]
    assert (await gateway.backend.counts())[Status.QUEUED] == 0


async def test_first_and_remark_are_accepted_with_warnings(gateway: Gateway) -> None:
    data = {"first": {"value": "您好"}, "keyword1": {"value": "已发货", "color": "#FF0000"}}
    status, body, _ = await gateway.post("/v1/messages", message_body(data=data))
    assert status == 202
    locs = [warning["loc"] for warning in body["data"]["warnings"]]
    assert ["body", "data", "first"] in locs
    assert ["body", "data", "keyword1", "color"] in locs


async def test_app_may_be_left_out_when_one_app_is_configured(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages", message_body())
    assert status == 202
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None and record.app == "default"


async def test_unknown_app_is_400_naming_body_app(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages", message_body(app="nope"))
    assert status == 400
    assert body["data"]["errors"][0]["loc"] == ["body", "app"]


async def test_app_is_required_when_several_are_configured(
    gateway_factory: GatewayFactory,
) -> None:
    settings = make_settings(apps={"shop": app_config(), "crm": app_config("wx00000000000000c3")})
    gateway = await gateway_factory(settings)
    status, body, _ = await gateway.post("/v1/messages", message_body())
    assert status == 400
    assert body["data"]["errors"][0]["loc"] == ["body", "app"]
    status, body, _ = await gateway.post("/v1/messages", message_body(app="crm"))
    assert status == 202
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None and record.app == "crm"


async def test_get_message_returns_record_with_events(gateway: Gateway) -> None:
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    message_id = accepted["data"]["id"]
    status, body, _ = await gateway.get(f"/v1/messages/{message_id}")
    assert status == 200
    data = body["data"]
    assert data["id"] == message_id and data["status"] == "queued"
    assert data["touser"] == "oUSER_0000000000000000001"
    assert [event["kind"] for event in data["events"]] == ["accepted"]


async def test_times_are_rfc3339_utc_strings_and_next_attempt_only_while_pending(
    gateway_factory: GatewayFactory,
) -> None:
    clock = FakeClock(start=1_796_615_074.5678)  # 2026-12-07T03:44:34.567Z
    gateway = await gateway_factory(make_settings(), clock=clock)
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    message_id = accepted["data"]["id"]
    _, queued, _ = await gateway.get(f"/v1/messages/{message_id}")
    record = queued["data"]
    assert record["created_at"] == record["updated_at"] == "2026-12-07T03:44:34.567Z"
    assert record["next_attempt_at"] == "2026-12-07T03:44:34.567Z"  # due now
    assert record["sent_at"] is None and record["delivered_at"] is None
    assert [event["at"] for event in record["events"]] == ["2026-12-07T03:44:34.567Z"]

    clock.advance(2)
    await gateway.settle(message_id, Outcome.SENT, msgid=BIG_MSGID)
    _, sent, _ = await gateway.get(f"/v1/messages/{message_id}")
    assert sent["data"]["sent_at"] == "2026-12-07T03:44:36.567Z"
    assert sent["data"]["next_attempt_at"] is None  # nothing pending once sent
    _, page, _ = await gateway.get("/v1/messages")
    assert page["data"]["items"][0]["sent_at"] == "2026-12-07T03:44:36.567Z"


async def test_msgid_above_2_pow_53_is_a_string_and_exact(gateway: Gateway) -> None:
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    message_id = accepted["data"]["id"]
    await gateway.settle(message_id, Outcome.SENT, msgid=BIG_MSGID)
    _, body, reply = await gateway.get(f"/v1/messages/{message_id}")
    assert body["data"]["msgid"] == str(BIG_MSGID)
    assert b'"msgid":"3487542469355618313"' in reply.raw


async def test_unknown_message_is_404_envelope(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/v1/messages/01NOTAMESSAGE0000000000000")
    assert status == 404 and body["code"] == 40400


async def test_list_pages_newest_first_with_a_cursor(gateway: Gateway) -> None:
    ids = []
    for n in range(5):
        _, body, _ = await gateway.post(
            "/v1/messages", message_body(touser=f"oUSER_{n:020d}", idempotency_key=f"k{n}")
        )
        ids.append(body["data"]["id"])
    _, first, _ = await gateway.get("/v1/messages?limit=2")
    cursor = first["data"]["next_cursor"]
    _, second, _ = await gateway.get(f"/v1/messages?limit=2&cursor={cursor}")
    _, third, _ = await gateway.get(f"/v1/messages?limit=2&cursor={second['data']['next_cursor']}")
    seen = [item["id"] for page in (first, second, third) for item in page["data"]["items"]]
    assert seen == list(reversed(ids))
    assert third["data"]["next_cursor"] is None


async def test_list_filters_by_status_and_touser(gateway: Gateway) -> None:
    _, kept, _ = await gateway.post("/v1/messages", message_body(touser="oUSER_keep"))
    _, dead, _ = await gateway.post("/v1/messages", message_body(touser="oUSER_dead"))
    await gateway.settle(dead["data"]["id"], Outcome.DEAD, errcode=48001)
    _, by_status, _ = await gateway.get("/v1/messages?status=dead")
    _, by_user, _ = await gateway.get("/v1/messages?touser=oUSER_keep")
    assert [item["id"] for item in by_status["data"]["items"]] == [dead["data"]["id"]]
    assert [item["id"] for item in by_user["data"]["items"]] == [kept["data"]["id"]]


async def test_list_with_a_bad_status_is_400_naming_the_query_field(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/v1/messages?status=lost&limit=0")
    assert status == 400
    locs = [error["loc"] for error in body["data"]["errors"]]
    assert ["query", "status"] in locs and ["query", "limit"] in locs


async def test_replay_of_unknown_message_is_404(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages/01NOTAMESSAGE0000000000000/replay")
    assert status == 404 and body["code"] == 40400


async def test_replay_of_a_queued_message_is_409(gateway: Gateway) -> None:
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    status, body, _ = await gateway.post(f"/v1/messages/{accepted['data']['id']}/replay")
    assert status == 409 and body["code"] == 40900


async def test_replay_of_a_dead_message_queues_it_again(gateway: Gateway) -> None:
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    message_id = accepted["data"]["id"]
    await gateway.settle(message_id, Outcome.DEAD, errcode=-1, errmsg="system error")
    status, body, _ = await gateway.post(f"/v1/messages/{message_id}/replay")
    assert status == 200 and body["data"]["status"] == "queued"
    record = await gateway.backend.get(message_id)
    assert record is not None and record.status is Status.QUEUED


async def test_replay_of_a_failed_message_queues_it_again(gateway: Gateway) -> None:
    _, accepted, _ = await gateway.post("/v1/messages", message_body())
    message_id = accepted["data"]["id"]
    await gateway.settle(message_id, Outcome.FAILED, errcode=43004)
    status, _, _ = await gateway.post(f"/v1/messages/{message_id}/replay")
    assert status == 200
    record = await gateway.backend.get(message_id)
    assert record is not None and record.status is Status.QUEUED


async def test_request_id_is_echoed_and_stored_on_the_message(gateway: Gateway) -> None:
    headers = {"X-Request-ID": "order-svc:7f3a.42"}
    status, body, reply = await gateway.post("/v1/messages", message_body(), headers=headers)
    assert status == 202
    assert reply.headers["X-Request-ID"] == "order-svc:7f3a.42"
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None and record.trace_id == "order-svc:7f3a.42"


async def test_unsafe_request_id_is_replaced_by_a_fresh_one(gateway: Gateway) -> None:
    headers = {"X-Request-ID": "bad id\twith spaces" + "x" * 80}
    _, body, reply = await gateway.post("/v1/messages", message_body(), headers=headers)
    trace_id = reply.headers["X-Request-ID"]
    assert len(trace_id) == 32 and trace_id.isalnum()
    record = await gateway.backend.get(body["data"]["id"])
    assert record is not None and record.trace_id == trace_id


async def test_intake_is_refused_with_503_when_the_queue_is_too_deep(
    gateway_factory: GatewayFactory,
) -> None:
    clock = FakeClock()
    gateway = await gateway_factory(make_settings(max_queued=2), clock=clock)
    for n in range(3):  # the depth is counted at most once a second: these see an empty queue
        status, _, _ = await gateway.post("/v1/messages", message_body(touser=f"oU{n}"))
        assert status == 202
    clock.advance(1.5)
    status, body, _ = await gateway.post("/v1/messages", message_body(touser="oU4"))
    assert status == 503 and body["code"] == 50300
    assert body["data"] == {"queued": 3, "max_queued": 2}
    assert (await gateway.backend.counts())[Status.QUEUED] == 3


async def test_generated_trace_ids_differ_even_when_random_is_seeded(gateway: Gateway) -> None:
    ids = set()
    for _ in range(2):
        random.seed(0)  # as test tools and some libraries do
        _, _, reply = await gateway.get("/healthz", key=None)
        ids.add(reply.headers["X-Request-ID"])
    assert len(ids) == 2


async def test_an_overlong_idempotency_key_header_is_400(gateway: Gateway) -> None:
    headers = {"Idempotency-Key": "k" * 129}
    status, body, _ = await gateway.post("/v1/messages", message_body(), headers=headers)
    assert status == 400
    assert body["data"]["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_the_idempotency_key_header_is_documented(gateway: Gateway) -> None:
    _, spec, _ = await gateway.get("/openapi.json", key=None)
    parameters = spec["paths"]["/v1/messages"]["post"]["parameters"]
    assert {"Idempotency-Key"} == {p["name"] for p in parameters if p["in"] == "header"}
