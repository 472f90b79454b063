"""Delivery reports an attacker (or a confused network) sends to a running gateway's
callback URL: a wrong signature or msg_signature, a stale or future timestamp, a nonce
used before, a ciphertext sealed for another appid, a report for a msgid the app does
not have (or another app has), plaintext fields that contradict the encrypted copy,
and random mutations of a genuine push. Each is refused or ignored as documented, and
no other message ever changes.

Forged signatures, stale reports and a captured query with another body are also in
tests/e2e/test_callbacks.py; here every case is checked against a snapshot of every
stored message, and the mutations are generated.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxgate.wechat.callback import CallbackCodec, template_finish_xml

from .conftest import (
    AES_KEY,
    FOREIGN_APPID,
    PLAIN_APPID,
    PLAIN_TOKEN,
    SAFE_APPID,
    SAFE_TOKEN,
    Client,
    Deployment,
)

PLAIN = CallbackCodec(PLAIN_TOKEN, PLAIN_APPID)
SAFE = CallbackCodec(SAFE_TOKEN, SAFE_APPID, AES_KEY)


@dataclass(frozen=True)
class Sent:
    """Messages the gateway has sent and whose reports have not come: two on `plain`,
    one on `safe`, each with WeChat's msgid."""

    plain: tuple[tuple[str, int], ...]
    safe: tuple[str, int]


async def sent_message(client: Client, app: str) -> tuple[str, int]:
    message_id = await client.send(app, f"oSEC{secrets.token_hex(6)}")
    record = await client.until_status(message_id, "sent")
    assert record["status"] == "sent", record
    return message_id, int(record["msgid"])


@pytest.fixture
async def sent(client: Client) -> Sent:
    plain = (await sent_message(client, "plain"), await sent_message(client, "plain"))
    return Sent(plain, await sent_message(client, "safe"))


def report(msgid: int, status: str = "success", touser: str = "oSEC") -> str:
    return template_finish_xml("gh_0123456789ab", touser, int(time.time()), msgid, status)


def never_issued(msgid: int) -> int:
    """A msgid no message has or will have. A report for an unknown msgid is kept for an
    hour, in case it beat the settle of its own message, and the sandbox counts msgids
    up from a random start: a million below one it issued lies below that start (a
    session sends far fewer), where one above would belong to a later message."""
    return msgid - 10**6


def fresh() -> tuple[str, str]:
    """A current timestamp and a nonce never used."""
    return str(int(time.time())), str(secrets.randbelow(10**12))


async def push(client: Client, app: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
    status, answer, _ = await client.call(
        "POST", f"/wechat/callback/{app}", key=None, params=query, data=body
    )
    return status, answer


async def assert_refused_and_nothing_changed(
    client: Client, app: str, query: dict[str, str], body: bytes, status: int = 403
) -> None:
    before = await client.snapshot()
    answered, answer = await push(client, app, query, body)
    assert answered == status, answer
    assert await client.snapshot() == before


async def test_a_wrong_signature_is_refused(client: Client, sent: Sent) -> None:
    query, body = CallbackCodec("not-the-token", PLAIN_APPID).seal(
        report(sent.plain[0][1]), *fresh()
    )
    await assert_refused_and_nothing_changed(client, "plain", query, body)


async def test_a_wrong_msg_signature_is_refused(client: Client, sent: Sent) -> None:
    query, body = SAFE.seal(report(sent.safe[1]), *fresh())
    query["msg_signature"] = "0" * 40
    await assert_refused_and_nothing_changed(client, "safe", query, body)


async def test_a_body_sealed_with_another_apps_token_is_refused(client: Client, sent: Sent) -> None:
    # The plain app's token signs this; the safe app must not believe it.
    query, body = CallbackCodec(PLAIN_TOKEN, SAFE_APPID, AES_KEY).seal(
        report(sent.safe[1]), *fresh()
    )
    await assert_refused_and_nothing_changed(client, "safe", query, body)


@pytest.mark.parametrize("offset_s", [-301, 301, -86_400, 10**9])
async def test_a_timestamp_outside_the_window_is_refused(
    client: Client, sent: Sent, offset_s: int
) -> None:
    _, nonce = fresh()
    query, body = PLAIN.seal(report(sent.plain[0][1]), str(int(time.time()) + offset_s), nonce)
    await assert_refused_and_nothing_changed(client, "plain", query, body)


async def test_ciphertext_sealed_for_another_appid_is_refused(client: Client, sent: Sent) -> None:
    # Same token and key, sealed for another account: the appid at the tail gives it away.
    foreign = CallbackCodec(SAFE_TOKEN, FOREIGN_APPID, AES_KEY)
    query, body = foreign.seal(report(sent.safe[1]), *fresh())
    await assert_refused_and_nothing_changed(client, "safe", query, body)


async def test_a_reused_nonce_inside_the_window_changes_nothing(client: Client, sent: Sent) -> None:
    (first_id, first_msgid), (second_id, second_msgid) = sent.plain
    timestamp, nonce = fresh()
    query, body = PLAIN.seal(report(first_msgid), timestamp, nonce)
    assert await push(client, "plain", query, body) == (200, b"success")
    assert (await client.record(first_id))["status"] == "delivered"
    # The same signed query (WeChat's retry, or a replay) with another message's report.
    before = await client.snapshot()
    replay, _ = PLAIN.seal(report(second_msgid, "failed:user block"), timestamp, nonce)
    assert replay == query
    other_body = report(second_msgid, "failed:user block").encode()
    assert await push(client, "plain", query, other_body) == (200, b"success")
    assert await client.snapshot() == before
    assert (await client.record(second_id))["status"] == "sent"


async def test_a_report_for_an_unknown_msgid_is_acknowledged_and_changes_nothing(
    client: Client, sent: Sent
) -> None:
    unknown = never_issued(min(msgid for _, msgid in sent.plain))
    query, body = PLAIN.seal(report(unknown, "failed:user block"), *fresh())
    await assert_refused_and_nothing_changed(client, "plain", query, body, status=200)


@pytest.mark.parametrize("msgid", [2**63, 2**64 - 1, 10**20 - 1, -(2**63) - 1])
async def test_a_report_for_a_msgid_beyond_64_bits_is_acknowledged_and_changes_nothing(
    client: Client, sent: Sent, msgid: int
) -> None:
    # Found by fuzzing the storage: SQLite cannot hold such a number, and the report
    # answered 500 (which WeChat's retry would then find "duplicate").
    query, body = PLAIN.seal(report(msgid), *fresh())
    await assert_refused_and_nothing_changed(client, "plain", query, body, status=200)


async def test_a_report_naming_another_apps_msgid_changes_nothing(
    client: Client, sent: Sent
) -> None:
    safe_id, safe_msgid = sent.safe
    query, body = PLAIN.seal(report(safe_msgid, "failed:user block"), *fresh())
    await assert_refused_and_nothing_changed(client, "plain", query, body, status=200)
    assert (await client.record(safe_id))["status"] == "sent"


async def test_plaintext_fields_beside_the_ciphertext_are_not_believed(
    client: Client, sent: Sent
) -> None:
    (plain_id, plain_msgid), _ = sent.plain
    safe_id, safe_msgid = sent.safe
    query, body = SAFE.seal(report(safe_msgid, "success"), *fresh(), compatible=True)
    # Rewrite the plaintext copy to speak of another message, with another status.
    tampered = body.replace(str(safe_msgid).encode(), str(plain_msgid).encode(), 1)
    tampered = tampered.replace(b"<![CDATA[success]]>", b"<![CDATA[failed:user block]]>", 1)
    assert tampered != body
    assert await push(client, "safe", query, tampered) == (200, b"success")
    assert (await client.record(safe_id))["status"] == "delivered"
    assert (await client.record(plain_id))["status"] == "sent"


_FIELDS = ("signature", "timestamp", "nonce", "msg_signature", "encrypt_type", "openid")


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """A change to one part of a genuine push: a query value, or bytes of the body."""
    where = draw(st.sampled_from([*_FIELDS, "body"]))
    if where == "body":
        return where, draw(st.integers(0, 10_000)), draw(st.binary(min_size=0, max_size=64))
    return where, None, draw(st.one_of(st.none(), st.text(max_size=80)))


@pytest.fixture
def blocking(deployment: Deployment) -> Iterator[tuple[asyncio.AbstractEventLoop, Client]]:
    """A client on an event loop of the test's own, for hypothesis (which drives plain
    functions) to run one request per example."""
    loop = asyncio.new_event_loop()

    async def session() -> aiohttp.ClientSession:
        # A connection per request: a pooled one the server has just closed (keep-alive
        # ending while a busy machine runs hypothesis between examples) would fail the
        # write before any answer, and hypothesis would call the example flaky.
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    http = loop.run_until_complete(session())
    try:
        yield loop, Client(deployment.url, http)
    finally:
        loop.run_until_complete(http.close())
        loop.close()


@pytest.mark.parametrize("app", ["plain", "safe"])
def test_mutated_genuine_pushes_never_fail_the_server_or_touch_a_message(
    blocking: tuple[asyncio.AbstractEventLoop, Client], app: str
) -> None:
    loop, client = blocking
    _, msgid = loop.run_until_complete(sent_message(client, app))
    codec = PLAIN if app == "plain" else SAFE
    before = loop.run_until_complete(client.snapshot())
    answers: set[int] = set()

    @given(mutation=mutations())
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def mutated(mutation: tuple[str, Any, Any]) -> None:
        # The report names a msgid nobody has: even a mutation that still passes every
        # check may change nothing.
        query, body = codec.seal(report(never_issued(msgid)), *fresh(), openid="oSEC")
        query, body = _mutate(query, body, mutation)
        status, _ = loop.run_until_complete(push(client, app, query, body))
        assert status in (200, 400, 403), (mutation, status)
        answers.add(status)

    mutated()
    assert loop.run_until_complete(client.snapshot()) == before
    assert {200, 403} <= answers  # both untouched and broken pushes were tried


def _mutate(
    query: dict[str, str], body: bytes, mutation: tuple[str, Any, Any]
) -> tuple[dict[str, str], bytes]:
    where, at, value = mutation
    if where == "body":
        position = at % (len(body) + 1)
        return query, body[:position] + value + body[position + len(value) :]
    changed = dict(query)
    if value is None:
        changed.pop(where, None)
    else:
        changed[where] = value
    return changed, body
