"""Bad requests get a 400 (or 413) envelope with field paths, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from wxgate.backends.base import Status

from .conftest import Gateway, GatewayFactory, make_settings, message_body

JSON = {"Content-Type": "application/json"}


async def post_raw(gateway: Gateway, raw: bytes, path: str = "/v1/messages") -> tuple[int, Any]:
    status, body, _ = await gateway.request("POST", path, data=raw, headers=JSON)
    return status, body


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in body["data"]["errors"]]


async def assert_nothing_stored(gateway: Gateway) -> None:
    assert sum((await gateway.backend.counts()).values()) == 0


async def test_malformed_json_is_400_with_the_position(gateway: Gateway) -> None:
    status, body = await post_raw(gateway, b'{"touser": "oA", ')
    assert status == 400 and body["code"] == 40000
    [error] = body["data"]["errors"]
    assert error["loc"][0] == "body" and isinstance(error["loc"][1], int)
    assert "JSON" in error["msg"]
    await assert_nothing_stored(gateway)


async def test_wrong_types_are_named_by_field(gateway: Gateway) -> None:
    body = message_body(touser=123, data={"thing1": {"value": 5}})
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    assert ["body", "touser"] in locs(answer)
    assert ["body", "data", "thing1", "value"] in locs(answer)


async def test_missing_fields_are_all_reported(gateway: Gateway) -> None:
    status, body, _ = await gateway.post("/v1/messages", {})
    assert status == 400
    assert {"touser", "template_id", "data"} <= {loc[1] for loc in locs(body)}


async def test_an_unknown_field_is_refused(gateway: Gateway) -> None:
    body = message_body()
    body["tousr"] = body.pop("touser")
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    assert ["body", "tousr"] in locs(answer)


async def test_a_body_that_is_not_utf8_is_400(gateway: Gateway) -> None:
    status, body = await post_raw(gateway, b'{"touser": "o\xff\xfeA", "template_id": "t"}')
    assert status == 400 and body["data"]["errors"][0]["loc"][0] == "body"


async def test_a_lone_surrogate_escape_is_400_not_a_storage_error(gateway: Gateway) -> None:
    raw = b'{"touser": "oA", "template_id": "t", "data": {"thing1": {"value": "\\ud800"}}}'
    status, body = await post_raw(gateway, raw)
    assert status == 400 and body["code"] == 40000
    await assert_nothing_stored(gateway)


async def test_deeply_nested_json_is_400(gateway: Gateway) -> None:
    depth = 100_000
    raw = b'{"touser": "oA", "template_id": "t", "data": ' + b"[" * depth + b"]" * depth + b"}"
    status, body = await post_raw(gateway, raw)
    assert status == 400 and body["code"] == 40000


async def test_moderately_nested_data_is_400_naming_the_field(gateway: Gateway) -> None:
    nested: Any = "x"
    for _ in range(200):
        nested = {"value": nested}
    status, body, _ = await gateway.post("/v1/messages", message_body(data={"thing1": nested}))
    assert status == 400
    assert locs(body)[0][:4] == ["body", "data", "thing1", "value"]


async def test_a_huge_data_map_is_400_naming_data(gateway: Gateway) -> None:
    data = {f"keyword{n}": {"value": "v"} for n in range(20_000)}
    status, body, _ = await gateway.post("/v1/messages", message_body(data=data))
    assert status == 400
    assert locs(body) == [["body", "data"]]
    await assert_nothing_stored(gateway)


async def test_more_data_keys_than_wechat_allows_is_400(gateway: Gateway) -> None:
    data = {f"keyword{n}": {"value": "v"} for n in range(40)}
    status, body, _ = await gateway.post("/v1/messages", message_body(data=data))
    assert status == 400
    assert ["body", "data"] in locs(body)


async def test_a_body_that_is_not_an_object_is_400(gateway: Gateway) -> None:
    status, body = await post_raw(gateway, b'["a list"]')
    assert status == 400 and locs(body) == [["body"]]


async def test_a_body_without_json_content_type_is_400(gateway: Gateway) -> None:
    status, body, _ = await gateway.request(
        "POST", "/v1/messages", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 400 and body["code"] == 40000


async def test_a_declared_length_over_the_limit_is_413_at_once(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(make_settings(max_body_bytes=4096))
    status, body = await post_raw(gateway, b" " * 5000)
    assert status == 413 and body["code"] == 41300
    assert body["data"] == {"max_bytes": 4096}


async def test_a_streamed_body_crossing_the_limit_is_413(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(make_settings(max_body_bytes=4096))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for _ in range(10):
            yield b" " * 1000

    status, body, _ = await gateway.request("POST", "/v1/messages", data=chunks(), headers=JSON)
    assert status == 413 and body["code"] == 41300
    await assert_nothing_stored(gateway)


async def test_a_streamed_body_under_the_limit_is_accepted(gateway: Gateway) -> None:
    raw = gateway_json(message_body())

    async def chunks() -> AsyncIterator[bytes]:
        yield raw[:10]
        yield raw[10:]

    status, _, _ = await gateway.request("POST", "/v1/messages", data=chunks(), headers=JSON)
    assert status == 202


def gateway_json(body: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(body)


async def test_unknown_path_is_a_404_envelope(gateway: Gateway) -> None:
    status, body, _ = await gateway.get("/v1/nothing-here")
    assert status == 404 and body["code"] == 40400


async def test_wrong_method_is_a_405_envelope(gateway: Gateway) -> None:
    status, body, reply = await gateway.request("DELETE", "/v1/messages")
    assert status == 405 and body["code"] == 40500
    assert reply.headers["Allow"]


async def test_an_unhandled_error_is_a_500_envelope_with_the_trace_id(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("a bug, not a storage outage")

    monkeypatch.setattr(gateway.backend, "enqueue", broken)
    with structlog.testing.capture_logs() as logs:
        status, body, reply = await gateway.post("/v1/messages", message_body())
    assert status == 500 and body["code"] == 50000
    assert body["data"]["trace_id"] == reply.headers["X-Request-ID"]
    assert any(log["event"] == "unhandled_error" for log in logs)


async def test_storage_that_is_away_answers_503_not_500(gateway: Gateway) -> None:
    await gateway.backend.close()  # every backend call now raises StorageUnavailable
    status, body, reply = await gateway.post("/v1/messages", message_body())
    assert status == 503 and body["code"] == 50300
    assert reply.headers["Retry-After"] == "1"


async def test_a_failed_request_is_logged_once_without_headers_or_body(gateway: Gateway) -> None:
    captured: list[dict[str, Any]] = []

    def keep(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        captured.append(dict(event))
        raise structlog.DropEvent

    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, keep])
    try:
        status, _, reply = await gateway.post(
            "/v1/messages", {"touser": "oSECRET_OPENID"}, key="wrong-key-s3cr3t"
        )
    finally:
        structlog.configure(**old)
    assert status == 401
    [line] = [event for event in captured if event["event"] == "request_failed"]
    assert line["status"] == 401 and line["method"] == "POST" and line["path"] == "/v1/messages"
    assert line["trace_id"] == reply.headers["X-Request-ID"]
    assert line["client"] == "127.0.0.1"
    text = repr(captured)
    assert "wrong-key-s3cr3t" not in text and "oSECRET_OPENID" not in text


async def test_queued_count_is_unchanged_by_every_refusal(gateway: Gateway) -> None:
    await post_raw(gateway, b"not json")
    await gateway.post("/v1/messages", message_body(touser=""))
    assert (await gateway.backend.counts())[Status.QUEUED] == 0


@pytest.mark.parametrize("char", ["\u0085", "\u009b"], ids=["NEL", "CSI"])
async def test_c1_control_characters_are_refused_in_values_and_keys(
    gateway: Gateway, char: str
) -> None:
    body = message_body(data={"thing1": {"value": f"a{char}b"}})
    status, answer, _ = await gateway.post("/v1/messages", body)
    assert status == 400
    assert answer["data"]["errors"][0]["loc"] == ["body", "data", "thing1", "value"]

    keyed = message_body(idempotency_key=f"order{char}1")
    status, answer, _ = await gateway.post("/v1/messages", keyed)
    assert status == 400
    assert answer["data"]["errors"][0]["loc"] == ["body", "idempotency_key"]
