"""Bad requests through the full stack: each is refused with the envelope and the right
4xx, never a 500, and nothing is stored or sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from tests.e2e.conftest import TEMPLATE, MakeStack, Stack, order_data

MAX_BODY = 64 * 1024

GOOD = {"touser": "oEdge_e2e", "template_id": TEMPLATE, "data": order_data()}

BAD_BODIES: dict[str, bytes] = {
    "truncated-json": b'{"touser": "oEdge_e2e", "template_id": ',
    "not-json": b"touser=oEdge_e2e&template_id=x",
    "json-array": b"[1, 2, 3]",
    "not-utf8": b'{"touser": "\xff\xfe", "template_id": "x", "data": {}}',
    "touser-number": orjson.dumps({**GOOD, "touser": 123}),
    "data-string": orjson.dumps({**GOOD, "data": "thing2=Shipped"}),
    "value-number": orjson.dumps({**GOOD, "data": {"thing2": {"value": 42}}}),
    "unknown-field": orjson.dumps({**GOOD, "priority": "high"}),
    "missing-touser": orjson.dumps({"template_id": TEMPLATE, "data": order_data()}),
    "deep-nesting": b'{"touser": "o", "template_id": "t", "data": ' + b"[" * 5000 + b"]" * 5000,
    "empty": b"",
}


@pytest.fixture
async def stack(make_stack: MakeStack) -> AsyncIterator[Stack]:
    stack = await make_stack(server={"max_body_bytes": MAX_BODY})
    yield stack
    status, listing = await stack.call("GET", "/v1/messages")
    assert status == 200 and listing["data"]["items"] == []  # nothing was stored
    assert (await stack.stats())["sends_total"] == 0


async def post(stack: Stack, path: str, body: bytes | object) -> tuple[int, dict[str, object]]:
    status, answer = await stack.call(
        "POST", path, data=body, headers={"Content-Type": "application/json"}
    )
    assert isinstance(answer, dict), answer  # always the JSON envelope
    assert answer["code"] == status * 100
    return status, answer


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
async def test_invalid_message_body_is_a_400_envelope(stack: Stack, name: str) -> None:
    status, answer = await post(stack, "/v1/messages", BAD_BODIES[name])

    assert status == 400
    errors = answer["data"]["errors"]  # type: ignore[index]
    assert errors and all(error["loc"] and error["msg"] for error in errors)


async def test_wrong_types_are_named_by_field(stack: Stack) -> None:
    body = orjson.dumps({**GOOD, "touser": 123, "data": {"thing2": {"value": 42}}})

    status, answer = await post(stack, "/v1/messages", body)

    assert status == 400
    locs = {tuple(error["loc"]) for error in answer["data"]["errors"]}  # type: ignore[index]
    assert ("body", "touser") in locs
    assert ("body", "data", "thing2", "value") in locs


async def test_body_over_the_limit_is_a_413(stack: Stack) -> None:
    huge = orjson.dumps({**GOOD, "url": "https://shop.example.com/" + "x" * MAX_BODY})

    status, answer = await post(stack, "/v1/messages", huge)

    assert status == 413
    assert answer["data"] == {"max_bytes": MAX_BODY}


async def test_streamed_body_over_the_limit_is_a_413(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):  # no Content-Length: the limit is counted as it arrives
            yield b" " * (MAX_BODY // 4)

    status, answer = await post(stack, "/v1/messages", chunks())

    assert status == 413
    assert answer["data"] == {"max_bytes": MAX_BODY}


async def test_batch_over_ten_thousand_recipients_is_refused_whole(make_stack: MakeStack) -> None:
    stack = await make_stack()
    recipients = [f"o{n}" for n in range(10_001)]
    body = orjson.dumps({"template_id": TEMPLATE, "data": order_data(), "recipients": recipients})

    status, answer = await post(stack, "/v1/messages/batch", body)

    assert status == 400
    assert answer["data"]["errors"][0]["loc"] == ["body", "recipients"]  # type: ignore[index]
    status, listing = await stack.call("GET", "/v1/messages")
    assert listing["data"]["items"] == []
